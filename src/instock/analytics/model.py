"""Inventory analytics, pure: ledger movements folded into hourly facts and in-stock periods,
and the measures read from them.

A fact is a count per SKU, channel, location and hour. Movements of reservations carry their
channel; staff movements (receipts, returns) have none (`NO_CHANNEL`); behaviour (views,
add-to-carts) has neither a channel nor a location (`NO_LOCATION`). Whether a SKU can be bought
is a property of the SKU, not of one location: its in-stock periods are kept whole (start, end)
and its minutes in stock per hour are facts at location `ALL_LOCATIONS`, written when a period
closes (the open one is counted when it is read).

Velocity is units sold per day **in stock**: the units sold in the window over the time the SKU
was in stock in it (Inventory Planner's rule: days out of stock say nothing about demand). A
SKU in stock for less than a day of the window is measured over one day, or a drop that sells
out in minutes would read as a million a day.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from statistics import NormalDist

NO_CHANNEL = ""  # a movement no channel made: a receipt, a count, a return
NO_LOCATION = ""  # behaviour: a view is of a SKU, not of a warehouse
ALL_LOCATIONS = "*"  # the SKU as a whole (its minutes in stock)
HOUR = timedelta(hours=1)
SHARES = (0.25, 0.50, 0.75)  # the points of a drop's sell-out curve before 100 %
DAY = timedelta(days=1)

COUNTERS = ("sold", "reserved", "released", "expired", "cancelled", "returned", "restocked",
            "views", "carts", "minutes_in_stock", "refused", "waitlist_joins")


@dataclass(frozen=True)
class Move:
    """One ledger entry as analytics reads it: the change of each bucket, by kind."""

    sku: str
    location: str
    version: int
    kind: str
    at: datetime
    channel: str
    on_hand: int = 0
    reserved: int = 0
    committed: int = 0
    safety_stock: int = 0
    unsellable: int = 0
    incoming: int = 0


def counted(move: Move) -> dict[str, int]:
    """What a movement adds to its hour's facts (kinds as inventory's ledger names them)."""
    match move.kind:
        case "reserve":
            return {"reserved": move.reserved}
        case "commit":
            return {"sold": move.committed}
        case "release":
            return {"released": -move.reserved}
        case "expire":
            return {"expired": -move.reserved}
        case "cancel":
            return {"cancelled": -move.committed}
        case "return" | "return_unsellable":
            return {"returned": move.on_hand}
        case "receive":
            return {"restocked": move.on_hand}
    return {}


# Movements that bring units to sell during an in-stock period (a drop topped up).
RESTOCKING = frozenset({"receive", "return", "release_quarantine"})


@dataclass(frozen=True)
class FactKey:
    sku: str
    channel: str
    location: str
    hour: datetime


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


@dataclass
class Level:
    """A stock level's buckets as the fold has them, and the last version folded."""

    version: int = 0
    on_hand: int = 0
    reserved: int = 0
    committed: int = 0
    safety_stock: int = 0
    unsellable: int = 0
    incoming: int = 0  # on order (purchase orders): part of the inventory position

    @property
    def available(self) -> int:
        """inventory's rule (DESIGN.md §2), never negative."""
        return max(0, self.on_hand - self.reserved - self.committed - self.unsellable
                   - self.safety_stock)

    def apply(self, move: Move) -> None:
        self.version = move.version
        self.on_hand += move.on_hand
        self.reserved += move.reserved
        self.committed += move.committed
        self.safety_stock += move.safety_stock
        self.unsellable += move.unsellable
        self.incoming += move.incoming


@dataclass(frozen=True)
class Period:
    """A time the SKU could be bought: [start, end), end None while it lasts; for a drop, its
    sell-out curve. `units` is what there was to sell: the available units when it opened,
    plus what was received during it; `sold_at[i]` is when the available units first fell to
    (1 - SHARES[i]) of them (a 25 %, 50 %, 75 % sold drop), and `end` is 100 %."""

    sku: str
    start: datetime
    end: datetime | None = None
    units: int = 0
    sold_at: tuple[datetime | None, ...] = (None, None, None)

    def minutes_to(self) -> dict[str, float | None]:
        """Minutes from the start to 25, 50, 75 and 100 % sold (None: not reached)."""
        reached = [*self.sold_at, self.end]
        return {f"{round(share * 100)}": None if at is None else
                round((at - self.start).total_seconds() / 60, 2)
                for share, at in zip((*SHARES, 1.0), reached, strict=True)}

    def selling(self, available: int, restocked: int, at: datetime) -> Period:
        """The period after a movement left `available` units (`restocked` of them new)."""
        units = self.units + restocked
        sold_at = tuple(when if when is not None or available > units * (1 - share) else at
                        for share, when in zip(SHARES, self.sold_at, strict=True))
        return replace(self, units=units, sold_at=sold_at)

    def overlap(self, since: datetime, until: datetime) -> timedelta:
        end = until if self.end is None else min(self.end, until)
        return max(timedelta(0), end - max(self.start, since))


def minutes_by_hour(start: datetime, end: datetime) -> dict[datetime, int]:
    """The whole minutes of [start, end) in each hour it touches."""
    out: dict[datetime, int] = {}
    hour = hour_of(start)
    while hour < end:
        part = min(end, hour + HOUR) - max(start, hour)
        minutes = round(part.total_seconds() / 60)
        if minutes:
            out[hour] = minutes
        hour += HOUR
    return out


@dataclass
class Folded:
    """What a fold produced: fact increments, the levels after it, and the in-stock periods
    it opened or closed."""

    facts: dict[FactKey, dict[str, int]] = field(default_factory=dict)
    levels: dict[tuple[str, str], Level] = field(default_factory=dict)
    periods: dict[tuple[str, datetime], Period] = field(default_factory=dict)

    def add(self, key: FactKey, counts: Mapping[str, int]) -> None:
        row = self.facts.setdefault(key, {})
        for name, value in counts.items():
            if value:
                row[name] = row.get(name, 0) + value


def fold(moves: Iterable[Move], levels: Mapping[tuple[str, str], Level],
         open_periods: Mapping[str, Period], *, facts_from: datetime | None = None) -> Folded:
    """Fold movements (each level's in version order; SKUs interleaved by time) onto the
    levels and the SKUs' open in-stock periods. A movement at or below its level's folded
    version was folded before and is skipped (so folding is idempotent). Facts before
    `facts_from` are not counted (a rebuild folds the whole ledger to know the levels, and
    writes only what it replaces)."""
    out = Folded(levels={key: replace(level) for key, level in levels.items()})
    of_sku: dict[str, list[Level]] = {}
    for (sku, _), level in out.levels.items():
        of_sku.setdefault(sku, []).append(level)
    open_now = dict(open_periods)
    for move in _in_time_order(moves):
        found = out.levels.get((move.sku, move.location))
        if found is None:
            found = out.levels[(move.sku, move.location)] = Level()
            of_sku.setdefault(move.sku, []).append(found)
        level = found
        if move.version <= level.version:
            continue
        before = sum(lvl.available for lvl in of_sku[move.sku])
        level.apply(move)
        if facts_from is None or move.at >= facts_from:
            out.add(FactKey(move.sku, move.channel, move.location, hour_of(move.at)),
                    counted(move))
        available = sum(lvl.available for lvl in of_sku[move.sku])
        period = open_now.get(move.sku)
        if available > 0 and period is None:
            open_now[move.sku] = out.periods[(move.sku, move.at)] = Period(
                move.sku, move.at, units=available)
        elif period is not None:
            restocked = max(0, available - before) if move.kind in RESTOCKING else 0
            period = period.selling(available, restocked, move.at)
            if available > 0:
                open_now[move.sku] = out.periods[(move.sku, period.start)] = period
                continue
            out.periods[(move.sku, period.start)] = replace(period, end=move.at)
            del open_now[move.sku]
            start = period.start if facts_from is None else max(period.start, facts_from)
            for hour, minutes in minutes_by_hour(start, move.at).items():
                out.add(FactKey(move.sku, NO_CHANNEL, ALL_LOCATIONS, hour),
                        {"minutes_in_stock": minutes})
    return out


def _in_time_order(moves: Iterable[Move]) -> Iterable[Move]:
    """Each level's movements in version order, the levels merged by time: two processes'
    clocks may disagree by a little, and a level's versions are its true order."""
    by_level: dict[tuple[str, str], list[Move]] = {}
    for move in moves:
        by_level.setdefault((move.sku, move.location), []).append(move)
    runs = [sorted(run, key=lambda m: m.version) for _, run in sorted(by_level.items())]
    return heapq.merge(*runs, key=lambda m: m.at)


# ---------------------------------------------------------------------------------------------
# Measures


@dataclass(frozen=True)
class Velocity:
    """Units sold per day in stock over a window, with a 90 % interval (sales as a Poisson
    count over the time in stock)."""

    units: int
    days_in_stock: float
    per_day: float
    low: float
    high: float


def in_stock_time(periods: Sequence[Period], since: datetime, until: datetime) -> timedelta:
    return sum((p.overlap(since, until) for p in periods), timedelta(0))


def velocity(units: int, in_stock: timedelta, *, level: float = 0.90) -> Velocity:
    # scipy.stats costs a second to import, so it is imported where the interval is computed,
    # not by every process that imports the model (the API's start, every CLI command).
    from scipy.stats import chi2

    days = max(in_stock / DAY, 1.0)
    low = 0.0 if units == 0 else float(chi2.ppf((1 - level) / 2, 2 * units)) / 2 / days
    high = float(chi2.ppf(1 - (1 - level) / 2, 2 * units + 2)) / 2 / days
    return Velocity(units, in_stock / DAY, units / days, low, high)


@dataclass(frozen=True)
class Cover:
    """Days the available units last at the velocity, with the interval the velocity's gives
    (None: they never run out at that rate)."""

    days: float | None
    low: float | None
    high: float | None
    stockout_on: date | None


def cover(available: int, rate: Velocity, today: date,
          out_since: datetime | None = None) -> Cover:
    """Days of cover and the projected stock-out date. A SKU already out of stock has none
    left: its stock-out date is the day it sold out."""
    if available <= 0:
        return Cover(0.0, 0.0, 0.0, out_since.date() if out_since else today)

    def days(per_day: float) -> float | None:
        return available / per_day if per_day > 0 else None

    found = days(rate.per_day)
    # A stock-out past the calendar's end (a million units selling one a month) has no date.
    stockout_on = (today + timedelta(days=math.floor(found))
                   if found is not None and found < (date.max - today).days else None)
    return Cover(found, days(rate.high), days(rate.low), stockout_on)


def sell_through(sold: int, available: int) -> float | None:
    """Share of what there was to sell in the window that sold: sold ÷ (sold + still
    available). None when there was nothing either way."""
    return sold / (sold + available) if sold + available > 0 else None


def conversion(views: int, carts: int, orders: int) -> dict[str, float | int | None]:
    """Views → add-to-carts → units sold, with the rate of each step (None: nothing to divide)."""
    return {"views": views, "carts": carts, "orders": orders,
            "view_to_cart": round(carts / views, 4) if views else None,
            "cart_to_order": round(orders / carts, 4) if carts else None}


@dataclass(frozen=True)
class Day:
    """One UTC day of a SKU: units sold and the share of the day it could be bought."""

    day: date
    sold: int
    in_stock: float


def days_of(first: date, last: date, sold_by_hour: Iterable[tuple[datetime, int]],
            periods: Sequence[Period], now: datetime) -> list[Day]:
    """Every day from `first` to `last`, with its sales and its time in stock (up to `now`)."""
    sold: dict[date, int] = {}
    for hour, units in sold_by_hour:
        sold[hour.date()] = sold.get(hour.date(), 0) + units
    out = []
    day = first
    while day <= last:
        start = datetime(day.year, day.month, day.day, tzinfo=now.tzinfo)
        end = min(start + DAY, now)
        share = in_stock_time(periods, start, end) / (end - start) if end > start else 0.0
        out.append(Day(day, sold.get(day, 0), round(share, 4)))
        day += timedelta(days=1)
    return out


def demand_history(days: Sequence[Day], min_in_stock: float = 0.5) -> list[int]:
    """The days' sales as demand for a forecast: a day mostly out of stock says how much there
    was, not how much was wanted, so it is left out (censored demand)."""
    return [d.sold for d in days if d.in_stock >= min_in_stock]


# ---------------------------------------------------------------------------------------------
# Replenishment (normal lead-time demand, independent days, fixed lead time; the cycle service
# level is the probability of no stock-out between an order and its arrival), z = Φ⁻¹(level):
#     reorder point       ROP = mean_d * L + z * sd_d * sqrt(L)
#     order-up-to level   S   = mean_d * (L + R) + z * sd_d * sqrt(L + R)   (review every R days)
#     reorder quantity    Q   = ceil(S - inventory position), at least 0


def _z(service_level: float) -> float:
    if not 0 < service_level < 1:
        raise ValueError("service level must be within (0, 1)")
    return NormalDist().inv_cdf(service_level)


def reorder_point(
    daily_mean: float, daily_sd: float, lead_time_days: float, service_level: float
) -> float:
    """Stock level at which to order: expected lead-time demand plus safety stock."""
    if daily_mean < 0 or daily_sd < 0 or lead_time_days < 0:
        raise ValueError("demand, its spread and the lead time must be non-negative")
    z = _z(service_level)
    return daily_mean * lead_time_days + z * daily_sd * math.sqrt(lead_time_days)


def order_up_to_level(
    daily_mean: float,
    daily_sd: float,
    lead_time_days: float,
    review_days: float,
    service_level: float,
) -> float:
    """Target inventory position after an order when stock is reviewed every `review_days`."""
    if review_days < 0:
        raise ValueError("the review period must be non-negative")
    return reorder_point(daily_mean, daily_sd, lead_time_days + review_days, service_level)


def reorder_quantity(
    daily_mean: float,
    daily_sd: float,
    lead_time_days: float,
    review_days: float,
    service_level: float,
    inventory_position: float,
) -> int:
    """Units to order now: up to the order-up-to level (on hand + on order - backorders)."""
    target = order_up_to_level(daily_mean, daily_sd, lead_time_days, review_days, service_level)
    return max(0, math.ceil(target - inventory_position - 1e-9))


@dataclass(frozen=True)
class Replenishment:
    """Where a SKU stands for reordering: its cover at the 28-day velocity, and what to order
    (nothing until its inventory position, available plus on order, falls to the reorder
    point)."""

    sku: str
    available: int
    incoming: int
    velocity: Velocity
    cover: Cover
    reorder_point: float
    order_quantity: int


def replenishment(sku: str, available: int, incoming: int, rate: Velocity, today: date, *,
                  lead_time_days: float, review_days: float,
                  service_level: float) -> Replenishment:
    """The reorder point and quantity from the velocity, daily demand taken as a Poisson count
    (its variance is its mean: the list needs no model fitted per SKU; `analytics report`
    fits one)."""
    mean = rate.per_day
    sd = math.sqrt(mean)
    point = reorder_point(mean, sd, lead_time_days, service_level)
    position = available + incoming
    quantity = reorder_quantity(mean, sd, lead_time_days, review_days, service_level,
                                position) if position <= point and mean > 0 else 0
    return Replenishment(sku, available, incoming, rate, cover(available, rate, today),
                         round(point, 2), quantity)


Alert = tuple[date, date | None]  # (projected stock-out day, next receipt day)


def at_risk(row: Replenishment, receipt_on: date | None, today: date,
            horizon_days: int) -> Alert | None:
    """The alert a SKU deserves: it runs out before its next receipt, or (none expected)
    within `horizon_days`. None: it does not (or has nothing left to run out of)."""
    out = row.cover.stockout_on
    if row.available <= 0 or out is None:
        return None
    if out < (receipt_on or today + timedelta(days=horizon_days + 1)):
        return out, receipt_on
    return None


def worth_telling(standing: Alert | None, found: Alert) -> bool:
    """Publish again only when the stock-out comes sooner or the receipt moved."""
    return standing is None or found[0] < standing[0] or found[1] != standing[1]


@dataclass(frozen=True)
class SizeShare:
    """One size's part of the next drop: what its past drops say (units wanted: sold, then
    refused or waited for after it sold out), what a poll says (answers naming it), and the
    blend of both as a share and as units."""

    size: str
    past_demand: int
    poll_answers: int
    share: float
    units: int


def size_curve(past: Mapping[str, int], poll: Mapping[str, int], units: int) -> list[SizeShare]:
    """Split `units` over the sizes by evidence: each unit wanted in a past drop and each poll
    answer naming a size counts once (a poll of few says little beside a drop of thousands,
    and a new product with no drop yet goes by its poll). Whole units by largest remainder, so
    they add up to `units`. No evidence at all: an even split."""
    sizes = sorted(set(past) | set(poll))
    if not sizes:  # a product with no sizes (only bundles): nothing to split
        return []
    weight = {size: past.get(size, 0) + poll.get(size, 0) for size in sizes}
    total = sum(weight.values())
    shares = {size: (weight[size] / total if total else 1 / len(sizes)) for size in sizes}
    exact = {size: shares[size] * units for size in sizes}
    whole = {size: math.floor(value) for size, value in exact.items()}
    for size in sorted(sizes, key=lambda s: (whole[s] - exact[s], s))[:units - sum(whole.values())]:
        whole[size] += 1
    return [SizeShare(size, past.get(size, 0), poll.get(size, 0), round(shares[size], 4),
                      whole[size]) for size in sizes]
