"""The pure analytics model: ledger movements folded into hourly facts and in-stock periods,
velocity without the time out of stock (a hand-computed case with gaps), cover, sell-through."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import pytest

from instock.analytics import model
from instock.analytics.model import (
    ALL_LOCATIONS,
    NO_CHANNEL,
    FactKey,
    Level,
    Move,
    Period,
    fold,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
H, D = timedelta(hours=1), timedelta(days=1)


class Ledger:
    """Movements of one SKU as inventory would write them, with versions per level."""

    def __init__(self, sku: str = "tee-m") -> None:
        self.sku = sku
        self.versions: dict[str, int] = {}
        self.moves: list[Move] = []

    def move(self, kind: str, at: datetime, location: str = "wh", channel: str = NO_CHANNEL,
             **delta: int) -> Move:
        self.versions[location] = self.versions.get(location, 0) + 1
        found = Move(self.sku, location, self.versions[location], kind, at, channel, **delta)
        self.moves.append(found)
        return found

    def receive(self, n: int, at: datetime, location: str = "wh") -> None:
        self.move("receive", at, location, on_hand=n)

    def sell(self, n: int, at: datetime, location: str = "wh", channel: str = "web") -> None:
        """A reservation and its commit a minute later."""
        self.move("reserve", at, location, channel, reserved=n)
        self.move("commit", at + timedelta(minutes=1), location, channel, reserved=-n,
                  committed=n)


def spans(periods: Iterable[Period]) -> list[tuple[str, datetime, datetime | None]]:
    return [(p.sku, p.start, p.end) for p in periods]


def test_a_sale_counts_as_reserved_then_sold_in_its_channel_and_hour() -> None:
    ledger = Ledger()
    ledger.receive(10, T0)
    ledger.sell(3, T0 + 2 * H + timedelta(minutes=59), channel="app")  # commit in the next hour
    ledger.move("reserve", T0 + 4 * H, channel="web", reserved=2)
    ledger.move("expire", T0 + 5 * H, channel="web", reserved=-2)
    ledger.move("return", T0 + 6 * H, on_hand=1)
    out = fold(ledger.moves, {}, {})
    assert out.facts[FactKey("tee-m", NO_CHANNEL, "wh", T0)] == {"restocked": 10}
    assert out.facts[FactKey("tee-m", "app", "wh", T0 + 2 * H)] == {"reserved": 3}
    assert out.facts[FactKey("tee-m", "app", "wh", T0 + 3 * H)] == {"sold": 3}
    assert out.facts[FactKey("tee-m", "web", "wh", T0 + 5 * H)] == {"expired": 2}
    assert out.facts[FactKey("tee-m", NO_CHANNEL, "wh", T0 + 6 * H)] == {"returned": 1}
    level = out.levels[("tee-m", "wh")]
    assert (level.version, level.on_hand, level.committed, level.available) == (6, 11, 3, 8)
    assert spans(out.periods.values()) == [("tee-m", T0, None)]  # in stock since the receipt


def test_folding_twice_counts_once_and_a_later_fold_goes_on_from_the_levels() -> None:
    ledger = Ledger()
    ledger.receive(5, T0)
    ledger.sell(2, T0 + H)
    first = fold(ledger.moves, {}, {})
    again = fold(ledger.moves, first.levels, {"tee-m": first.periods[("tee-m", T0)]})
    assert again.facts == {} and again.periods == {}
    ledger.sell(3, T0 + 2 * H)  # sells out
    later = fold(ledger.moves, first.levels, {"tee-m": first.periods[("tee-m", T0)]})
    assert later.facts[FactKey("tee-m", "web", "wh", T0 + 2 * H)] == {"reserved": 3, "sold": 3}
    # Out of stock at the reservation: the period closes and its minutes are counted per hour.
    assert spans(later.periods.values()) == [("tee-m", T0, T0 + 2 * H)]
    assert later.facts[FactKey("tee-m", NO_CHANNEL, ALL_LOCATIONS, T0)] == {
        "minutes_in_stock": 60}
    assert later.facts[FactKey("tee-m", NO_CHANNEL, ALL_LOCATIONS, T0 + H)] == {
        "minutes_in_stock": 60}


def test_a_sku_is_in_stock_while_any_location_can_sell_it() -> None:
    ledger = Ledger()
    ledger.receive(1, T0, "wh")
    ledger.receive(1, T0 + H, "store")
    ledger.sell(1, T0 + 2 * H, "wh")  # the store still has one
    ledger.sell(1, T0 + 3 * H, "store")
    out = fold(ledger.moves, {}, {})
    assert spans(out.periods.values()) == [("tee-m", T0, T0 + 3 * H)]


def test_a_level_s_versions_decide_its_order_when_clocks_disagree() -> None:
    ledger = Ledger()
    ledger.receive(2, T0)
    ledger.move("reserve", T0 + H, channel="web", reserved=2)
    # Another process, its clock a second behind, commits the hold.
    ledger.move("commit", T0 + H - timedelta(seconds=1), channel="web", reserved=-2,
                committed=2)
    out = fold(ledger.moves, {}, {})
    assert out.levels[("tee-m", "wh")].version == 3
    assert sum(f.get("sold", 0) for f in out.facts.values()) == 2


def test_facts_before_a_rebuild_s_start_are_left_alone() -> None:
    ledger = Ledger()
    ledger.receive(4, T0)
    ledger.sell(4, T0 + 3 * H)
    out = fold(ledger.moves, {}, {}, facts_from=T0 + 2 * H)
    assert FactKey("tee-m", NO_CHANNEL, "wh", T0) not in out.facts
    assert out.facts[FactKey("tee-m", "web", "wh", T0 + 3 * H)] == {"reserved": 4, "sold": 4}
    assert out.facts[FactKey("tee-m", NO_CHANNEL, ALL_LOCATIONS, T0 + 2 * H)] == {
        "minutes_in_stock": 60}
    assert out.levels[("tee-m", "wh")].on_hand == 4  # the levels know the whole ledger


def test_a_simulated_drop_s_sell_out_curve() -> None:
    """100 units go live at T0; buyers take 30 in the first 2 minutes, 25 by minute 5, 20 by
    minute 9, a hold of 10 expires at minute 12 and the last 35 go by minute 20: 25 % sold at
    minute 2, 50 % at 5, 75 % at 9, 100 % at 20, whatever came back in between."""
    ledger = Ledger("kick-42")
    ledger.receive(100, T0)
    minute = timedelta(minutes=1)
    ledger.move("reserve", T0 + 2 * minute, channel="web", reserved=30)
    ledger.move("reserve", T0 + 5 * minute, channel="web", reserved=25)
    ledger.move("reserve", T0 + 9 * minute, channel="web", reserved=20)
    ledger.move("expire", T0 + 12 * minute, channel="web", reserved=-10)
    ledger.move("reserve", T0 + 20 * minute, channel="web", reserved=35)
    (drop,) = fold(ledger.moves, {}, {}).periods.values()
    assert drop.units == 100
    assert drop.minutes_to() == {"25": 2.0, "50": 5.0, "75": 9.0, "100": 20.0}


def test_a_restock_during_a_drop_adds_to_what_there_was_to_sell() -> None:
    ledger = Ledger("kick-42")
    ledger.receive(10, T0)
    ledger.move("reserve", T0 + H, channel="web", reserved=4)  # 40 % of 10
    ledger.receive(10, T0 + 2 * H)  # now 16 of 20 left: 20 % sold
    ledger.move("reserve", T0 + 3 * H, channel="web", reserved=6)  # 10 of 20: 50 %
    (drop,) = fold(ledger.moves, {}, {}).periods.values()
    assert drop.units == 20
    assert drop.minutes_to() == {"25": 60.0, "50": 180.0, "75": None, "100": None}


def test_minutes_by_hour_splits_an_interval_at_hour_boundaries() -> None:
    start = T0 + timedelta(minutes=45)
    assert model.minutes_by_hour(start, start + 2 * H) == {
        T0: 15, T0 + H: 60, T0 + 2 * H: 45}


def test_velocity_leaves_out_the_days_out_of_stock_hand_computed() -> None:
    """28 days to `now`: in stock for days 0-10 and 14-28 (a four-day gap), 48 units sold.
    In stock 24 days, so 2 units a day; counting the gap would say 48/28 = 1.71."""
    now = T0 + 28 * D
    periods = [Period("s", T0 - 5 * D, T0 + 10 * D), Period("s", T0 + 14 * D)]
    in_stock = model.in_stock_time(periods, now - 28 * D, now)
    assert in_stock == 24 * D
    rate = model.velocity(48, in_stock)
    assert rate.per_day == pytest.approx(2.0)
    assert rate.low < 2.0 < rate.high
    # The 90 % interval of a Poisson count of 48 (exact, chi-square), over 24 days.
    assert rate.low == pytest.approx(37.20 / 24, abs=0.001)
    assert rate.high == pytest.approx(61.05 / 24, abs=0.001)
    week = model.in_stock_time(periods, now - 7 * D, now)
    assert week == 7 * D


def test_less_than_a_day_in_stock_counts_as_a_day() -> None:
    """A drop that sells 500 units in 20 minutes sold 500 in its one day, not 36,000."""
    assert model.velocity(500, timedelta(minutes=20)).per_day == 500
    assert model.velocity(0, timedelta(0)).per_day == 0


def test_cover_and_stockout_date() -> None:
    rate = model.velocity(48, 24 * D)  # 2 a day
    found = model.cover(9, rate, date(2026, 12, 1))
    assert found.days == pytest.approx(4.5)
    assert found.stockout_on == date(2026, 12, 5)
    assert found.low is not None and found.high is not None
    assert found.low < 4.5 < found.high  # the faster rate, the sooner out
    nothing_sells = model.cover(9, model.velocity(0, 24 * D), date(2026, 12, 1))
    assert nothing_sells.days is None and nothing_sells.stockout_on is None
    gone = model.cover(0, rate, date(2026, 12, 1), out_since=T0 + 20 * D)
    assert gone.days == 0 and gone.stockout_on == (T0 + 20 * D).date()
    # Two billion units at one a month (what a fuzzer stocks): past the calendar, no date.
    endless = model.cover(2_000_000_000, model.velocity(1, 28 * D), date(2026, 12, 1))
    assert endless.days is not None and endless.days > 700_000_000
    assert endless.stockout_on is None


def test_sell_through_and_conversion() -> None:
    assert model.sell_through(30, 10) == 0.75
    assert model.sell_through(0, 0) is None
    assert model.conversion(200, 20, 5) == {"views": 200, "carts": 20, "orders": 5,
                                            "view_to_cart": 0.1, "cart_to_order": 0.25}
    assert model.conversion(0, 0, 0)["view_to_cart"] is None


def test_a_level_s_available_follows_inventory_s_rule() -> None:
    level = Level(on_hand=10, reserved=2, committed=3, safety_stock=1, unsellable=1)
    assert level.available == 3
    assert Level(on_hand=1, reserved=2).available == 0


def _row(available: int, per_day: float) -> model.Replenishment:
    rate = model.velocity(round(per_day * 28), 28 * D)
    return model.replenishment("s", available, 0, rate, date(2026, 12, 1), lead_time_days=7,
                               review_days=7, service_level=0.95)


def test_a_stockout_before_the_next_receipt_is_a_risk() -> None:
    today = date(2026, 12, 1)
    five_days = _row(10, 2)  # out on 12-06
    assert five_days.cover.stockout_on == date(2026, 12, 6)
    assert model.at_risk(five_days, date(2026, 12, 9), today, 14) == (
        date(2026, 12, 6), date(2026, 12, 9))
    assert model.at_risk(five_days, date(2026, 12, 4), today, 14) is None  # arrives in time
    assert model.at_risk(five_days, None, today, 14) == (date(2026, 12, 6), None)
    assert model.at_risk(five_days, None, today, 3) is None  # beyond the horizon
    assert model.at_risk(_row(0, 2), None, today, 14) is None  # nothing left to run out of
    assert model.at_risk(_row(10, 0), None, today, 14) is None  # nothing sells


def test_an_alert_is_told_again_only_when_it_gets_worse_or_the_receipt_moves() -> None:
    out, receipt = date(2026, 12, 6), date(2026, 12, 9)
    assert model.worth_telling(None, (out, receipt))
    assert not model.worth_telling((out, receipt), (out, receipt))
    assert not model.worth_telling((out, receipt), (date(2026, 12, 7), receipt))  # better
    assert model.worth_telling((out, receipt), (date(2026, 12, 5), receipt))
    assert model.worth_telling((out, receipt), (out, date(2026, 12, 10)))


def test_a_size_curve_blends_past_drops_and_poll_answers_into_whole_units() -> None:
    # Past drops: M wanted 300 (sold out in minutes, then refused), L 150, S 50; a poll of 100
    # said S 20, M 50, L 30. 600 units for the next drop.
    curve = model.size_curve({"S": 50, "M": 300, "L": 150}, {"S": 20, "M": 50, "L": 30}, 600)
    assert [(s.size, s.share, s.units) for s in curve] == [
        ("L", 0.3, 180), ("M", 0.5833, 350), ("S", 0.1167, 70)]
    assert sum(s.units for s in curve) == 600
    # A new product: its poll alone; remainders go to the largest fractions.
    fresh = model.size_curve({}, {"S": 1, "M": 1, "L": 1}, 100)
    assert sorted(s.units for s in fresh) == [33, 33, 34] and sum(s.units for s in fresh) == 100
    assert [s.units for s in model.size_curve({"S": 0, "M": 0}, {}, 10)] == [5, 5]
    assert model.size_curve({}, {}, 10) == []  # no sizes (a product of bundles only)
