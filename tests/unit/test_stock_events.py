"""What a stock transaction tells the world, decided by the pure model: totals and SKU alerts."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from instock.inventory import model
from instock.inventory.events import BackInStock, LowStock, SoldOut
from instock.inventory.model import StockLevel, delta
from instock.platform.bus.envelope import envelope

TODAY = date(2026, 11, 21)


def level(location: str, on_hand: int = 0, reserved: int = 0,
          expired_lot: int = 0) -> StockLevel:
    lvl = StockLevel("A", location)
    lvl.apply(model.Movement("A", location, delta(on_hand=on_hand), "receive"))
    if reserved:
        lvl.apply(model.Movement("A", location, delta(reserved=reserved), "reserve"))
    if expired_lot:
        lvl.apply(model.Movement("A", location, delta(on_hand=expired_lot), "receive", "OLD",
                                 TODAY - timedelta(days=1)))
    return lvl


def test_totals_sum_every_location_and_available_ignores_expired_lots() -> None:
    totals = model.stock_totals([level("a", on_hand=5, reserved=2),
                                 level("b", on_hand=3, expired_lot=4)], TODAY)
    assert (totals.on_hand, totals.reserved) == (12, 2)
    assert totals.available == 3 + 3  # the expired lot's 4 free units are not sellable


def test_stock_changed_carries_the_level_the_sku_version_and_the_totals() -> None:
    a, b = level("a", on_hand=5), level("b", on_hand=1)
    totals = model.stock_totals([a, b], TODAY)
    event = model.stock_changed(a, "receive", 7, totals)
    assert (event.location, event.version, event.on_hand, event.available) == ("a", 1, 5, 5)
    assert (event.sku_version, event.totals.on_hand, event.totals.available) == (7, 6, 6)
    doc = envelope(event, "corr-1")
    assert (doc["subject"], doc["sequence"], doc["correlationid"]) == ("A", 7, "corr-1")
    assert doc["data"]["totals"]["available"] == 6


@pytest.mark.parametrize(("before", "after", "threshold", "expected"), [
    (5, 0, None, [SoldOut]),
    (5, 0, 3, [SoldOut]),  # straight through the threshold to zero: sold out says it all
    (0, 4, None, [BackInStock]),
    (0, 2, 3, [BackInStock]),  # from zero is not "falling to" the threshold
    (5, 3, 3, [LowStock]),  # at the threshold counts
    (5, 1, 3, [LowStock]),
    (3, 2, 3, []),  # already low: no repeat
    (5, 4, 3, []),  # still above
    (2, 5, 3, []),  # rising is not an alert (unless from zero)
    (0, 0, 3, []),
    (5, 3, None, []),  # no threshold set
    (5, 1, 0, []),  # threshold 0: sold out is the only alert
])
def test_alerts_fire_only_when_availability_crosses_a_line(
        before: int, after: int, threshold: int | None, expected: list[type]) -> None:
    alerts = model.sku_alerts("A", 9, before, after, threshold)
    assert [type(a) for a in alerts] == expected
    for alert in alerts:
        assert (alert.sku, alert.sku_version, alert.available) == ("A", 9, after)
        assert (alert.subject, alert.sequence) == ("A", 9)


def test_low_stock_names_the_threshold() -> None:
    [alert] = model.sku_alerts("A", 2, 10, 2, 5)
    assert isinstance(alert, LowStock)
    assert alert.model_dump(mode="json") == {"sku": "A", "sku_version": 2, "available": 2,
                                             "threshold": 5}


# -- kits: their count moves with their components ------------------------------------------------

KITS = {"KIT": {"A": 1, "B": 2}, "PAIR": {"B": 2}}


def test_a_kit_moves_only_when_a_changed_component_moves_its_count() -> None:
    before = {"A": 5, "B": 6}  # KIT: min(5, 3) = 3, PAIR: 3
    # A is the spare component of KIT (B decides): A from 5 to 4 leaves KIT at 3.
    assert model.bundles_moved(KITS, before, {"A": 4, "B": 6}, {"A"}) == {}
    # B from 6 to 5 takes one kit of each; A from 5 to 2 as well takes KIT lower still.
    assert model.bundles_moved(KITS, before, {"A": 2, "B": 5}, {"A", "B"}) == {
        "KIT": (3, 2), "PAIR": (3, 2)}
    # Only kits made of a changed SKU are counted at all.
    assert model.bundles_moved(KITS, before, {"A": 0, "B": 6}, {"C"}) == {}


def test_a_kit_sold_out_by_a_component_reports_zero_from_its_count() -> None:
    moved = model.bundles_moved(KITS, {"A": 1, "B": 2}, {"A": 0, "B": 2}, {"A"})
    assert moved == {"KIT": (1, 0)}
    assert model.sku_alerts("KIT", 4, *moved["KIT"], None) == [
        SoldOut(sku="KIT", sku_version=4, available=0)]


def test_a_kits_stock_changed_has_no_location_of_its_own_and_its_count_as_available() -> None:
    event = model.bundle_changed("KIT", 9, 2, "reserve")
    assert (event.sku, event.sku_version, event.version, event.location) == ("KIT", 9, 9, "*")
    assert (event.available, event.totals.available, event.reason) == (2, 2, "reserve")
    assert event.on_hand == event.totals.on_hand == 0
    assert envelope(event, None)["sequence"] == 9


# -- lot expiry: what the SKU offered while its lots were in date ---------------------------------

def lotted(*lots: tuple[str, int, int], on_hand: int = 0) -> StockLevel:
    """A level with unlotted units and lots (code, quantity, days from TODAY to expiry)."""
    lvl = level("wh", on_hand=on_hand)
    for code, quantity, days in lots:
        lvl.apply(model.Movement("A", "wh", delta(on_hand=quantity), "receive", code,
                                 TODAY + timedelta(days=days)))
    return lvl


def test_before_expiry_counts_the_lots_that_expired_and_still_hold_free_units() -> None:
    lvl = lotted(("OLD", 4, 0), ("OLDER", 2, -3), ("NEW", 3, 10), on_hand=1)
    assert model.sku_sellable([lvl], TODAY) == 1 + 3
    # OLD expires today and OLDER three days ago: the day before the earliest, both were in date.
    assert model.sellable_before_expiry([lvl], TODAY) == 1 + 3 + 4 + 2


def test_before_expiry_leaves_out_expired_lots_with_nothing_free_left() -> None:
    lvl = lotted(("OLD", 4, 0), ("SWEPT", 2, -3), on_hand=1)
    lvl.apply(model.Movement("A", "wh", delta(unsellable=2), "lot_expired", "SWEPT"))
    assert model.sellable_before_expiry([lvl], TODAY) == 1 + 4
    # With nothing expiring it is today's count.
    assert model.sellable_before_expiry([lotted(("NEW", 3, 5))], TODAY) == 3


# -- a channel's minimum remaining shelf life -----------------------------------------------------

PHARMACY = model.Channel("pharmacy", "Pharmacy", 7, ["wh"])


def test_a_lot_too_short_dated_for_a_channel_is_noticed_for_that_channel_only() -> None:
    lvl = lotted(("SOON", 3, 5), ("LATER", 3, 30), ("GONE", 2, 0), on_hand=4)
    lax = model.Channel("web", "Web", 3, ["wh"])
    elsewhere = model.Channel("store", "Store", 30, ["shop"])
    notices = model.shelf_life_notices(model.lots_of([lvl]), [PHARMACY, lax, elsewhere], TODAY)
    # SOON has 5 days left (< 7, >= 3); LATER qualifies; GONE has expired (the sweeper's
    # expiry reports it); the store does not sell from `wh`.
    assert notices == [model.ShelfLifeNotice("A", "wh", "SOON", "pharmacy", 7)]
    [notice] = notices
    assert notice.movement() == model.Movement("A", "wh", model.ZERO, "shelf_life", "SOON")
    assert len(notice.reference) <= 64 and notice.reference.startswith("shelf-life:")
    # The same crossing is the same reference; another threshold is another crossing.
    assert notice.reference == model.ShelfLifeNotice("A", "wh", "SOON", "pharmacy", 7).reference
    assert notice.reference != model.ShelfLifeNotice("A", "wh", "SOON", "pharmacy", 8).reference


def test_a_short_dated_lot_with_nothing_free_changes_no_channel_and_is_not_noticed() -> None:
    lvl = lotted(("SOON", 3, 5))
    lvl.apply(model.Movement("A", "wh", delta(reserved=3), "reserve", "SOON"))
    assert model.shelf_life_notices(model.lots_of([lvl]), [PHARMACY], TODAY) == []
