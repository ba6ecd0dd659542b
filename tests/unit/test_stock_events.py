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
