"""The RabbitMQ Streams bus's slot leases: what every member folds from the control stream."""

from __future__ import annotations

from instock.platform.bus.rabbitmq_leases import SLOTS, Leases, Record, slot_of

ALL = frozenset(range(SLOTS))


def record(member: str, own: frozenset[int] | set[int], ttl: int = 1000, *, nonce: int = 1,
           bye: bool = False) -> Record:
    return Record("g", member, nonce, ttl, frozenset(own), bye)


def test_a_slot_goes_to_the_first_claim_and_stays_until_its_lease_runs_out() -> None:
    leases = Leases()
    assert leases.fold(1000, record("a", ALL)) == dict.fromkeys(ALL, False)
    assert leases.fold(1500, record("b", {0, 1})) == {}  # held by a, whose lease runs to 2000
    assert leases.fold(2001, record("b", {0, 1})) == {0: False, 1: False}  # a's ran out
    assert leases.fold(2100, record("a", ALL)) == {s: True for s in ALL - {0, 1}}


def test_renewing_says_whether_nobody_else_held_the_slot_in_between() -> None:
    leases = Leases()
    leases.fold(0, record("a", {3}))
    assert leases.fold(5000, record("a", {3})) == {3: True}  # expired, but nobody took it
    leases.fold(5100, record("a", set()))  # released
    assert leases.fold(5200, record("a", {3})) == {3: False}  # free, then taken: start afresh


def test_live_members_split_the_slots_and_one_that_says_bye_leaves_the_split() -> None:
    leases = Leases()
    leases.fold(0, record("a", ALL))
    leases.fold(10, record("b", set()))
    assert leases.share("a") | leases.share("b") == ALL
    assert not leases.share("a") & leases.share("b") and leases.share("a")
    leases.fold(20, record("b", set(), bye=True))
    assert leases.share("a") == ALL


def test_a_member_that_stops_renewing_drops_out_of_the_split_when_its_ttl_ends() -> None:
    leases = Leases()
    leases.fold(0, record("a", ALL, ttl=100))
    leases.fold(50, record("b", set(), ttl=1000))
    assert leases.share("b") != ALL
    leases.fold(200, record("b", set(), ttl=1000))
    assert leases.share("b") == ALL and leases.claimable(0)


def test_a_bye_keeps_what_is_still_in_hand_until_its_ttl() -> None:
    leases = Leases()
    leases.fold(0, record("a", ALL))
    leases.fold(100, record("a", {5}, ttl=500, bye=True))
    assert leases.fold(200, record("b", ALL)) == {s: False for s in ALL - {5}}
    assert leases.fold(601, record("b", ALL))[5] is False


def test_records_round_trip_and_anything_else_is_ignored() -> None:
    one = record("a", {1, 2}, nonce=7, bye=True)
    assert Record.decode(one.encode()) == one
    assert Record.decode(b"not json") is None
    assert Record.decode(b'{"g": "g"}') is None


def test_an_event_s_slot_is_stable_and_follows_its_ordering_key() -> None:
    event = {"id": "1", "type": "inventory.stock_changed.v1", "subject": "HOOD-M"}
    again = {"id": "2", "type": "inventory.stock_changed.v1", "subject": "HOOD-M"}
    assert slot_of(event) == slot_of(again) == 6  # crc32 of "inventory:HOOD-M", anywhere
    assert 0 <= slot_of({"id": "x"}) < SLOTS
