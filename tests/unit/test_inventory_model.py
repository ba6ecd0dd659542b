"""The pure inventory model: buckets, lots and FEFO, allocation, bundles, reservations, ledger."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from instock.inventory import model
from instock.inventory.model import (
    Adjustment,
    AdjustmentKind,
    Buckets,
    LedgerEntry,
    Line,
    Reservation,
    ReservationStatus,
    StockLevel,
    delta,
)
from instock.platform.entry_context import EntryContext

TODAY = date(2026, 11, 21)
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CTX = EntryContext(actor="test")


def level_with(sku: str = "A", location: str = "wh", on_hand: int = 0,
               lots: dict[str, tuple[int, int]] | None = None) -> StockLevel:
    """A level holding `on_hand` unlotted units plus lots {code: (quantity, days to expiry)}."""
    level = StockLevel(sku, location)
    if on_hand:
        level.apply(model.Movement(sku, location, delta(on_hand=on_hand), "receive"))
    for code, (quantity, days) in (lots or {}).items():
        level.apply(model.Movement(sku, location, delta(on_hand=quantity), "receive", code,
                                   TODAY + timedelta(days=days)))
    return level


def test_available_subtracts_every_held_bucket_and_is_never_negative() -> None:
    b = Buckets(on_hand=10, reserved=2, committed=3, safety_stock=1, unsellable=1)
    assert b.available == 3
    assert Buckets(on_hand=2, safety_stock=5).available == 0


def test_a_change_that_would_make_a_bucket_negative_is_rejected_and_changes_nothing() -> None:
    level = level_with(on_hand=5)
    before = (level.buckets, level.version)
    with pytest.raises(model.NegativeBucket, match="exceed on_hand"):
        level.apply(model.Movement("A", "wh", delta(reserved=6), "reserve"))
    with pytest.raises(model.NegativeBucket, match="on_hand would be -1"):
        level.apply(model.Movement("A", "wh", delta(on_hand=-6), "count"))
    assert (level.buckets, level.version) == before


def test_each_applied_movement_bumps_the_version_by_one() -> None:
    level = level_with(on_hand=5)
    level.apply(model.Movement("A", "wh", delta(reserved=1), "reserve"))
    assert level.version == 2


def test_release_of_quarantine_cannot_release_damaged_units() -> None:
    level = level_with(on_hand=10)
    for m in model.plan_adjustment(Adjustment("A", "wh", AdjustmentKind.DAMAGE, 3), level, TODAY):
        level.apply(m)
    release = Adjustment("A", "wh", AdjustmentKind.RELEASE_QUARANTINE, 1)
    with pytest.raises(model.NegativeBucket, match="quarantined would be -1"):
        for m in model.plan_adjustment(release, level, TODAY):
            level.apply(m)


def test_count_sets_on_hand_to_what_was_counted() -> None:
    level = level_with(on_hand=10)
    [m] = model.plan_adjustment(Adjustment("A", "wh", AdjustmentKind.COUNT, 7), level, TODAY)
    assert m.delta == delta(on_hand=-3)


def test_sources_are_first_expiry_first_out_and_skip_expired_and_short_shelf_life() -> None:
    level = level_with(on_hand=4, lots={"LATE": (5, 200), "SOON": (5, 10), "OLD": (5, 0)})
    assert [s.lot for s in level.sources(TODAY)] == ["SOON", "LATE", None]
    assert [s.lot for s in level.sources(TODAY, min_shelf_life_days=30)] == ["LATE", None]


def test_expired_lots_leave_sellable_stock_on_their_own() -> None:
    level = level_with(lots={"A1": (5, 1)})
    assert level.sellable(TODAY) == 5
    assert level.sellable(TODAY + timedelta(days=1)) == 0
    [m] = model.expire_lots(level, TODAY + timedelta(days=1))
    assert m.delta == delta(unsellable=5) and m.lot == "A1"


def test_safety_stock_is_never_sold() -> None:
    level = level_with(on_hand=10)
    level.apply(model.Movement("A", "wh", delta(safety_stock=4), "safety_stock"))
    assert level.sellable(TODAY) == 6
    with pytest.raises(model.StockShortfall):
        model.allocate([Line("A", 7)], {}, {"A": [level]}, TODAY)


def test_allocation_follows_channel_priority_then_fefo() -> None:
    first = level_with(location="wh1", lots={"L2": (2, 50), "L1": (1, 20)})
    second = level_with(location="wh2", on_hand=10)
    got = model.allocate([Line("A", 5)], {}, {"A": [first, second]}, TODAY)
    assert got == [model.Allocation("A", "wh1", "L1", 1), model.Allocation("A", "wh1", "L2", 2),
                   model.Allocation("A", "wh2", None, 2)]


def test_allocation_is_all_or_nothing_and_names_short_lines() -> None:
    levels = {"A": [level_with("A", on_hand=3)], "B": [level_with("B", on_hand=1)]}
    with pytest.raises(model.StockShortfall) as info:
        model.allocate([Line("A", 2), Line("B", 2)], {}, levels, TODAY)
    assert info.value.shortages == [model.Shortage("B", 2, 1)]


def test_bundle_availability_is_the_scarcest_component() -> None:
    assert model.bundle_available({"S": 1, "B": 2}, {"S": 10, "B": 7}) == 3


def test_two_lines_sharing_a_component_both_count_against_it() -> None:
    recipes = {"KIT1": {"C": 2}, "KIT2": {"C": 3}}
    levels = {"C": [level_with("C", on_hand=4)]}
    assert model.explode([Line("KIT1", 1), Line("KIT2", 1)], recipes) == {"C": 5}
    with pytest.raises(model.StockShortfall) as info:
        model.allocate([Line("KIT1", 1), Line("KIT2", 1)], recipes, levels, TODAY)
    assert {s.sku for s in info.value.shortages} == {"KIT1", "KIT2"}


def test_available_to_sell_counts_whole_kits_within_the_given_levels() -> None:
    levels = {"S": [level_with("S", on_hand=5)], "B": [level_with("B", lots={"L": (9, 10)})]}
    recipes = {"KIT": {"S": 1, "B": 2}}
    assert model.available_to_sell("KIT", recipes, levels, TODAY) == 4
    assert model.available_to_sell("KIT", recipes, levels, TODAY, min_shelf_life_days=30) == 0
    assert model.available_to_sell("S", recipes, levels, TODAY) == 5


def test_customer_limit() -> None:
    model.check_customer_limit("A", 1, 0, 1)
    model.check_customer_limit("A", None, 10, 10)
    with pytest.raises(model.LimitExceeded):
        model.check_customer_limit("A", 1, 1, 1)


def open_reservation(ttl: int = 60) -> Reservation:
    return Reservation.open("r1", "web", "c1", [Line("A", 2)],
                            [model.Allocation("A", "wh", None, 2)], NOW, timedelta(seconds=ttl))


def test_reservation_state_machine_and_its_movements() -> None:
    r = open_reservation()
    [commit] = r.commit(NOW)
    assert commit.delta == delta(reserved=-2, committed=2)
    assert r.status is ReservationStatus.COMMITTED
    with pytest.raises(model.IllegalTransition):
        r.release()
    assert [type(e).__name__ for e in r.events] == ["ReservationCreated", "ReservationCommitted"]


def test_an_expired_hold_cannot_be_committed_only_expired() -> None:
    r = open_reservation(ttl=10)
    later = NOW + timedelta(seconds=11)
    with pytest.raises(model.IllegalTransition, match="expired"):
        r.commit(later)
    [m] = r.expire(later)
    assert m.delta == delta(reserved=-2) and r.status is ReservationStatus.EXPIRED
    with pytest.raises(model.IllegalTransition):
        r.expire(later)


def test_ledger_folds_back_to_the_levels_and_detects_tampering() -> None:
    level = StockLevel("A", "wh")
    entries = []
    for m in [model.Movement("A", "wh", delta(on_hand=5), "receive", "L1", TODAY),
              model.Movement("A", "wh", delta(reserved=2), "reserve", "L1")]:
        level.apply(m)
        entries.append(LedgerEntry.record(level, m, CTX, NOW))
    folded, problems = model.fold(entries)
    assert problems == []
    assert model.compare_levels(folded, {("A", "wh"): level}) == []

    forged = [entries[0], replace(entries[1], delta=delta(reserved=1))]
    _, problems = model.fold(forged)
    assert any("altered" in p for p in problems)
    _, problems = model.fold([entries[1]])
    assert any("chain broken" in p for p in problems)


def test_an_entry_is_hashed_in_the_form_stored_chains_were_written_in() -> None:
    # The context is one value on the entry but flat in the hashed body: this hash was printed
    # by the code before the context became one value, so chains written then still verify.
    level = StockLevel("SKU-1", "wh")
    level.lots["L1"] = model.Lot("L1", date(2027, 1, 31))
    receive = model.Movement("SKU-1", "wh", delta(on_hand=5), "receive", "L1", None)
    level.apply(receive)
    level.version = 1
    entry = LedgerEntry.record(level, receive, EntryContext("staff:ana", "delivery", "corr-1",
                                                            "key-1", "PO-7"),
                               datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
    assert entry.hash == "d2fe3d3aa96c34155452ee5e7f2e0af147ca711f33c90bfb75a29a4ea3794ea4"
    assert entry.body()["actor"] == "staff:ana" and "context" not in entry.body()
    forged = replace(entry, context=replace(entry.context, actor="staff:eve"))
    _, problems = model.fold([forged])
    assert any("altered" in p for p in problems)


def test_bucket_arithmetic_spelled_out_covers_every_field() -> None:
    # Buckets' methods name each field for speed: this fails if a field is added and one of
    # them is not updated.
    from dataclasses import fields

    from instock.inventory.model import Buckets

    b = Buckets(*range(1, len(fields(Buckets)) + 1))
    assert b.as_dict() == {f.name: getattr(b, f.name) for f in fields(Buckets)}
    assert b.values() == tuple(b.as_dict().values())
    assert (b + b).values() == tuple(2 * v for v in b.values()) == b.scaled(2).values()
    assert (b - b).is_zero
