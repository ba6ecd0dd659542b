"""Drop rules without a database: validation, the waiting room's order, admission arithmetic,
what a pass admits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from instock.drops import model
from instock.drops.model import Mode

START = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def drop(**changes: object) -> model.Drop:
    base = model.Drop(id="d1", skus=("s1", "s2"), starts_at=START, mode=Mode.QUEUE,
                      admit_per_second=2.0, per_customer_limit=None, channels=(),
                      ends_at=None, seed="seed-1", created_at=START - timedelta(days=1),
                      created_by="merchandiser:m")
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_valid_drop_passes() -> None:
    model.check_drop(drop())
    model.check_drop(drop(mode=Mode.FIRST_COME, admit_per_second=0.0))


@pytest.mark.parametrize(("changes", "field"), [
    ({"skus": ()}, "skus"),
    ({"skus": ("a", "a")}, "skus"),
    ({"skus": tuple(f"s{i}" for i in range(model.MAX_SKUS + 1))}, "skus"),
    ({"starts_at": datetime(2026, 12, 7, 12, 0)}, "starts_at"),
    ({"admit_per_second": -1.0}, "admit_per_second"),
    ({"admit_per_second": float("nan")}, "admit_per_second"),
    ({"admit_per_second": 0.0}, "admit_per_second"),  # a queue that admits no one
    ({"per_customer_limit": 0}, "per_customer_limit"),
    ({"ends_at": START}, "ends_at"),
])
def test_an_invalid_drop_names_its_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(model.InvalidDrop) as refused:
        model.check_drop(drop(**changes))
    assert refused.value.field == field and refused.value.reason


def test_early_arrivals_are_shuffled_and_all_come_before_later_ones() -> None:
    d = drop()
    early = [f"0190-early-{i:03d}" for i in range(50)]  # ids in arrival order
    late = [f"0190-late-{i:03d}" for i in range(20)]
    places = {t: model.place(d, t, START - timedelta(minutes=5)) for t in early}
    places |= {t: model.place(d, t, START + timedelta(seconds=i)) for i, t in enumerate(late)}
    order = sorted(places, key=places.__getitem__)
    assert set(order[:50]) == set(early) and order[50:] == late  # later ones by arrival
    assert order[:50] != early  # shuffled, not by arrival (50! orders: this one is not it)
    # The same seed gives the same order (every process, every restart); another seed not.
    again = sorted(early, key=lambda t: model.place(d, t, START - timedelta(seconds=1)))
    assert again == order[:50]
    other = drop(seed="seed-2")
    assert sorted(early, key=lambda t: model.place(other, t, START - timedelta(1))) != again


def test_arriving_at_the_start_exactly_is_arriving_after_it() -> None:
    assert model.place(drop(), "t", START).lane == model.AFTER_START
    assert model.place(drop(), "t", START - timedelta(microseconds=1)).lane == model.PRE_START


def test_admission_is_the_rate_times_the_time_since_the_start() -> None:
    d = drop(admit_per_second=2.5)
    assert model.admitted_through(d, START - timedelta(seconds=10)) == 0
    assert model.admitted_through(d, START) == 0
    assert model.admitted_through(d, START + timedelta(seconds=1)) == 2
    assert model.admitted_through(d, START + timedelta(seconds=4)) == 10
    assert model.admitted_through(d, START + timedelta(seconds=4.39)) == 10


def test_standing_admits_reached_positions_while_stock_lasts() -> None:
    d = drop(admit_per_second=1.0)
    at = START + timedelta(seconds=3)
    assert model.standing(d, 3, at, sold_out=False).admitted
    waiting = model.standing(d, 10, at, sold_out=False)
    assert not waiting.admitted and waiting.wait_seconds == pytest.approx(7.0)
    gone = model.standing(d, 1, at, sold_out=True)
    assert not gone.admitted and gone.sold_out and gone.wait_seconds == 0
    early = model.standing(d, 1, START - timedelta(seconds=30), sold_out=False)
    assert not early.admitted and early.wait_seconds == pytest.approx(31.0)
    # A first-come drop has no room to admit from.
    assert not model.standing(drop(mode=Mode.FIRST_COME), 1, at, sold_out=False).admitted


def test_a_pass_admits_its_customer_to_its_drop_until_it_expires() -> None:
    now = START + timedelta(seconds=5)
    claims = model.PassClaims("d1", "c1", now + timedelta(seconds=120))
    assert model.pass_problem(claims, "d1", "c1", now) is None
    assert "another drop" in str(model.pass_problem(claims, "d2", "c1", now))
    assert "another customer" in str(model.pass_problem(claims, "d1", "c2", now))
    assert "names none" in str(model.pass_problem(claims, "d1", None, now))
    assert "expired" in str(model.pass_problem(claims, "d1", "c1", now + timedelta(seconds=120)))


def test_a_sku_is_in_one_live_drop_at_a_time() -> None:
    assert model.overlapping(drop(skus=("s2", "s3")), [drop()]) == {"s2"}
    assert model.overlapping(drop(skus=("s3",)), [drop()]) == set()


def test_a_gate_gates_until_the_drop_ends() -> None:
    gate = model.gate_of(drop(ends_at=START + timedelta(hours=1), per_customer_limit=2))
    assert gate.gates(START + timedelta(minutes=59))
    assert gate.limit(START + timedelta(minutes=59)) == 2
    assert not gate.gates(START + timedelta(hours=1))
    assert gate.entry(START + timedelta(hours=1)) is model.Entry.ANYONE
    assert gate.limit(START + timedelta(hours=1)) is None
    assert model.gate_of(drop()).gates(START + timedelta(days=365))


@pytest.mark.parametrize(("mode", "before", "after"), [
    (Mode.FIRST_COME, model.Entry.NO_ONE, model.Entry.ANYONE),
    (Mode.QUEUE, model.Entry.NO_ONE, model.Entry.ADMITTED),
    (Mode.DRAW, model.Entry.NO_ONE, model.Entry.ADMITTED),
])
def test_who_may_reserve_before_and_from_the_start(mode: Mode, before: model.Entry,
                                                   after: model.Entry) -> None:
    gate = model.gate_of(drop(mode=mode))
    assert gate.entry(START - timedelta(microseconds=1)) is before
    assert gate.entry(START) is after


# -- the live room ---------------------------------------------------------------------------


def test_the_live_position_counts_those_still_waiting_until_the_room_reaches_it() -> None:
    d, now = drop(), START + timedelta(seconds=3)  # 2/s: six admitted
    through = model.admitted_through(d, now)
    assert through == 6
    waiting = model.live_standing(d, 10, False, through, False, now)
    assert (waiting.position, waiting.admitted, waiting.wait_seconds) == (4, False, 2.0)
    reached = model.live_standing(d, 6, False, through, False, now)
    assert (reached.position, reached.admitted, reached.wait_seconds) == (0, True, 0.0)
    held = model.live_standing(d, 6, True, through, False, now)
    assert (held.position, held.admitted, held.held_for_review) == (0, False, True)
    gone = model.live_standing(d, 6, False, through, True, now)
    assert (gone.admitted, gone.sold_out, gone.wait_seconds) == (False, True, 0.0)


def test_a_move_in_line_waits_its_turn_but_admission_and_sell_out_do_not() -> None:
    sent = model.Live(5, False, False, 2.5, False)
    moved = model.Live(4, False, False, 2.0, False)
    assert model.push_due(None, moved, 0.0, 2.0)
    assert not model.push_due(sent, moved, 1.0, 2.0)
    assert model.push_due(sent, moved, 2.0, 2.0)
    assert not model.push_due(sent, sent, 10.0, 2.0)  # nothing new: no push
    assert model.push_due(sent, model.Live(0, True, False, 0.0, False), 0.1, 2.0)
    assert model.push_due(sent, model.Live(5, False, True, 0.0, False), 0.1, 2.0)
    # Far back, a small move waits until it is a few percent, or old.
    deep, nearer = model.Live(1000, False, False, 500.0, False), model.Live(990, False, False,
                                                                            495.0, False)
    assert not model.push_due(deep, nearer, 2.0, 2.0)
    assert model.push_due(deep, nearer, 12.0, 2.0)
    assert model.push_due(deep, model.Live(950, False, False, 475.0, False), 2.0, 2.0)


def test_an_admitted_ticket_waited_from_its_arrival_or_the_start() -> None:
    d = drop()  # 2/s: position 10 is admitted 5 s after the start
    assert model.admitted_at(d, 10) == START + timedelta(seconds=5)
    assert model.waited(d, 10, START - timedelta(hours=1)) == 5.0
    assert model.waited(d, 10, START + timedelta(seconds=4)) == 1.0
