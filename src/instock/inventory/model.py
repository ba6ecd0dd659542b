"""The inventory domain, pure: buckets, lots, stock levels, allocation, reservations, the ledger.

Nothing here does I/O. Every change to stock is a `Movement` (bucket deltas at one stock level,
optionally one lot); `StockLevel.apply` checks it keeps every invariant, and `LedgerEntry.record`
chains it into the level's tamper-evident history. Folding the ledger must give the levels back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import orjson

from instock.inventory.events import (
    BUNDLE_LOCATION,
    BackInStock,
    Event,
    LowStock,
    ReservationCancelled,
    ReservationCommitted,
    ReservationCreated,
    ReservationEvent,
    ReservationExpired,
    ReservationLine,
    ReservationReleased,
    ReservationShipped,
    SkuEvent,
    SoldOut,
    StockChanged,
    StockTotals,
)

GENESIS_HASH = "0" * 64


# ---------------------------------------------------------------------------------------------
# Errors of the domain (the service maps them to problem+json)


class StockError(Exception):
    """A requested change breaks a stock rule; nothing was changed."""


class NegativeBucket(StockError):
    def __init__(self, sku: str, location: str, lot: str | None, problems: list[str]) -> None:
        where = f"{sku}@{location}" + (f" lot {lot}" if lot else "")
        super().__init__(f"change rejected at {where}: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


class StockShortfall(StockError):
    """The domain rule: the lines need more of some SKU than can be sold to them (the API
    answers it with `errors.InsufficientStockConflict`)."""

    def __init__(self, shortages: list[Shortage]) -> None:
        names = ", ".join(f"{s.sku} (requested {s.requested}, available {s.available})"
                          for s in shortages)
        super().__init__(f"not enough stock for {names}")
        self.shortages = shortages


class LimitExceeded(StockError):
    def __init__(self, sku: str, limit: int, held: int, requested: int) -> None:
        super().__init__(f"customer limit for {sku} is {limit}; already holds {held}, "
                         f"asked for {requested}")
        self.sku, self.limit, self.held, self.requested = sku, limit, held, requested


class IllegalTransition(StockError):
    pass


# ---------------------------------------------------------------------------------------------
# Buckets


@dataclass(frozen=True, slots=True)
class Buckets:
    """Quantities of one stock level (or one lot) by bucket; also used for deltas.

    The arithmetic is spelled out field by field: it runs for every unit of a drop.
    """

    on_hand: int = 0
    reserved: int = 0
    committed: int = 0
    safety_stock: int = 0
    unsellable: int = 0
    quarantined: int = 0  # the part of `unsellable` that may be released again
    incoming: int = 0

    def __add__(self, other: Buckets) -> Buckets:
        return Buckets(self.on_hand + other.on_hand, self.reserved + other.reserved,
                       self.committed + other.committed, self.safety_stock + other.safety_stock,
                       self.unsellable + other.unsellable, self.quarantined + other.quarantined,
                       self.incoming + other.incoming)

    def __sub__(self, other: Buckets) -> Buckets:
        return self + other.scaled(-1)

    def scaled(self, factor: int) -> Buckets:
        return Buckets(self.on_hand * factor, self.reserved * factor, self.committed * factor,
                       self.safety_stock * factor, self.unsellable * factor,
                       self.quarantined * factor, self.incoming * factor)

    def values(self) -> tuple[int, ...]:
        return (self.on_hand, self.reserved, self.committed, self.safety_stock, self.unsellable,
                self.quarantined, self.incoming)

    def as_dict(self) -> dict[str, int]:
        return {"on_hand": self.on_hand, "reserved": self.reserved, "committed": self.committed,
                "safety_stock": self.safety_stock, "unsellable": self.unsellable,
                "quarantined": self.quarantined, "incoming": self.incoming}

    @property
    def free(self) -> int:
        """Physically present and not promised, damaged or held back for any reason."""
        return self.on_hand - self.reserved - self.committed - self.unsellable

    @property
    def available(self) -> int:
        """What may be sold: DESIGN.md §2, never negative."""
        return max(0, self.free - self.safety_stock)

    @property
    def is_zero(self) -> bool:
        return not any(self.values())

    def problems(self) -> list[str]:
        """Every broken invariant, as a sentence naming the bucket."""
        found = [f"{name} would be {value}" for name, value in self.as_dict().items() if value < 0]
        if self.quarantined > self.unsellable:
            found.append(f"quarantined ({self.quarantined}) would exceed unsellable "
                         f"({self.unsellable})")
        if self.free < 0:
            found.append(f"reserved + committed + unsellable ({self.on_hand - self.free}) "
                         f"would exceed on_hand ({self.on_hand})")
        return found


ZERO = Buckets()


def delta(**bucket_changes: int) -> Buckets:
    return Buckets(**bucket_changes)


# ---------------------------------------------------------------------------------------------
# Lots and stock levels


@dataclass
class Lot:
    code: str
    expires_on: date
    buckets: Buckets = ZERO

    def is_expired(self, today: date) -> bool:
        # A lot is not sold on its expiry date.
        return self.expires_on <= today

    def qualifies(self, today: date, min_shelf_life_days: int) -> bool:
        return not self.is_expired(today) and (self.expires_on - today).days >= min_shelf_life_days


@dataclass(frozen=True)
class Source:
    """Where units can be drawn from inside one stock level: a lot, or the unlotted part."""

    lot: str | None
    expires_on: date | None
    free: int


@dataclass
class StockLevel:
    sku: str
    location: str
    buckets: Buckets = ZERO
    version: int = 0
    last_hash: str = GENESIS_HASH
    lots: dict[str, Lot] = field(default_factory=dict)

    @property
    def unlotted(self) -> Buckets:
        """What is not in any lot (all of it, for SKUs that are not lot-tracked)."""
        if not self.lots:
            return self.buckets
        total = ZERO
        for lot in self.lots.values():
            total = total + lot.buckets
        return self.buckets - total

    def sources(self, today: date, min_shelf_life_days: int = 0) -> list[Source]:
        """Drawable sources first-expiry-first-out; unlotted stock has no expiry and comes last."""
        if not self.lots:  # the common case, on every reservation of a drop
            free = self.buckets.free
            return [Source(None, None, free)] if free > 0 else []
        lots = sorted((lot for lot in self.lots.values()
                       if lot.qualifies(today, min_shelf_life_days) and lot.buckets.free > 0),
                      key=lambda lot: (lot.expires_on, lot.code))
        found = [Source(lot.code, lot.expires_on, lot.buckets.free) for lot in lots]
        if self.unlotted.free > 0:
            found.append(Source(None, None, self.unlotted.free))
        return found

    def expired_free(self, today: date) -> int:
        return sum(lot.buckets.free for lot in self.lots.values()
                   if lot.is_expired(today) and lot.buckets.free > 0)

    def sellable(self, today: date, min_shelf_life_days: int = 0) -> int:
        """Units a channel may take here: expired lots leave sellable stock on their own."""
        if not self.lots:  # all of it is drawable: `available` already says how much
            return self.buckets.available
        drawable = sum(source.free for source in self.sources(today, min_shelf_life_days))
        return max(0, min(drawable, self.buckets.available - self.expired_free(today)))

    def apply(self, movement: Movement) -> None:
        """Apply one movement, or raise NegativeBucket and change nothing."""
        if (movement.sku, movement.location) != (self.sku, self.location):
            raise ValueError("movement applied to the wrong stock level")
        new_buckets = self.buckets + movement.delta
        problems = new_buckets.problems()
        new_lot: Lot | None = None
        if movement.lot is not None:
            lot = self.lots.get(movement.lot)
            if lot is None:
                if movement.lot_expires_on is None:
                    problems.append(f"lot {movement.lot} does not exist here")
                    raise NegativeBucket(self.sku, self.location, movement.lot, problems)
                lot = Lot(movement.lot, movement.lot_expires_on)
            elif movement.lot_expires_on not in (None, lot.expires_on):
                problems.append(f"lot {lot.code} expires on {lot.expires_on}, "
                                f"not {movement.lot_expires_on}")
            new_lot = replace(lot, buckets=lot.buckets + movement.delta)
            problems += [f"lot {lot.code}: {p}" for p in new_lot.buckets.problems()]
            problems += _only_level_buckets(movement.delta, "a lot")
        elif self.lots:  # with no lots, the unlotted part is the level itself: checked above
            unlotted = self.unlotted + movement.delta
            problems += [f"unlotted stock: {p}" for p in unlotted.problems()]
        if problems:
            raise NegativeBucket(self.sku, self.location, movement.lot, problems)
        self.buckets = new_buckets
        if new_lot is not None:
            self.lots[new_lot.code] = new_lot
        self.version += 1


def _only_level_buckets(change: Buckets, target: str) -> list[str]:
    return [f"{name} is kept per stock level, not per {target}"
            for name in ("safety_stock", "incoming") if getattr(change, name)]


@dataclass(frozen=True)
class Movement:
    """One change of buckets at one stock level (and lot), with why it happened."""

    sku: str
    location: str
    delta: Buckets
    kind: str
    lot: str | None = None
    lot_expires_on: date | None = None


# ---------------------------------------------------------------------------------------------
# Adjustments: staff changes, each a pure function from the current level to movements


class AdjustmentKind(StrEnum):
    RECEIVE = "receive"
    COUNT = "count"
    DAMAGE = "damage"
    QUARANTINE = "quarantine"
    RELEASE_QUARANTINE = "release_quarantine"
    WRITE_OFF = "write_off"
    TRANSFER = "transfer"
    SAFETY_STOCK = "safety_stock"
    EXPECT = "expect"
    # Goods a customer sent back: into sellable stock, or in but not for sale (damaged).
    RETURN = "return"
    RETURN_UNSELLABLE = "return_unsellable"


@dataclass(frozen=True)
class Adjustment:
    sku: str
    location: str
    kind: AdjustmentKind
    quantity: int
    lot: str | None = None
    lot_expires_on: date | None = None
    to_location: str | None = None
    # An `expect`'s arrival date: when the incoming units should be received (None: unknown).
    # A plan, not a movement: kept beside the level, not in its ledger.
    expected_on: date | None = None


def plan_adjustment(adj: Adjustment, level: StockLevel, today: date,
                    destination: StockLevel | None = None) -> list[Movement]:
    """The movements an adjustment makes. Validation of the result happens in `apply`."""
    kind, qty = adj.kind, adj.quantity

    def one(change: Buckets) -> list[Movement]:
        return [Movement(adj.sku, adj.location, change, kind.value, adj.lot, adj.lot_expires_on)]

    target = level.lots[adj.lot].buckets if adj.lot in level.lots else (
        ZERO if adj.lot else level.unlotted)
    match kind:
        case AdjustmentKind.RECEIVE | AdjustmentKind.RETURN:
            return one(delta(on_hand=qty))
        case AdjustmentKind.RETURN_UNSELLABLE:
            return one(delta(on_hand=qty, unsellable=qty))
        case AdjustmentKind.COUNT:
            return one(delta(on_hand=qty - target.on_hand))
        case AdjustmentKind.DAMAGE:
            return one(delta(unsellable=qty))
        case AdjustmentKind.QUARANTINE:
            return one(delta(unsellable=qty, quarantined=qty))
        case AdjustmentKind.RELEASE_QUARANTINE:
            return one(delta(unsellable=-qty, quarantined=-qty))
        case AdjustmentKind.WRITE_OFF:
            return one(delta(on_hand=-qty, unsellable=-qty))
        case AdjustmentKind.SAFETY_STOCK:
            return one(delta(safety_stock=qty - level.buckets.safety_stock))
        case AdjustmentKind.EXPECT:
            return one(delta(incoming=qty - level.buckets.incoming))
        case AdjustmentKind.TRANSFER:
            if destination is None:
                raise ValueError("a transfer needs its destination level")
            return plan_transfer(adj, level, destination, today)


def plan_transfer(adj: Adjustment, origin: StockLevel, destination: StockLevel,
                  today: date) -> list[Movement]:
    """Move free units; lots keep their code and expiry at the destination."""
    picks: list[tuple[str | None, date | None, int]]
    if adj.lot is not None:
        lot = origin.lots.get(adj.lot)
        if lot is None:
            raise NegativeBucket(adj.sku, adj.location, adj.lot, [f"lot {adj.lot} does not exist"])
        picks = [(lot.code, lot.expires_on, adj.quantity)]
    else:
        picks = [(s.lot, s.expires_on, n) for s, n in _draw(origin.sources(today), adj.quantity)]
        moved = sum(n for _, _, n in picks)
        if moved < adj.quantity:
            raise NegativeBucket(adj.sku, adj.location, None,
                                 [f"only {moved} free units to transfer, asked {adj.quantity}"])
    kind = AdjustmentKind.TRANSFER.value
    out: list[Movement] = []
    for code, expires_on, n in picks:
        out.append(Movement(adj.sku, origin.location, delta(on_hand=-n), kind, code))
        out.append(Movement(adj.sku, destination.location, delta(on_hand=n), kind, code,
                            expires_on))
    return out


def _draw(sources: Iterable[Source], quantity: int) -> list[tuple[Source, int]]:
    """Greedy: take from each source in order until the quantity is met."""
    picks: list[tuple[Source, int]] = []
    remaining = quantity
    for source in sources:
        if remaining <= 0:
            break
        n = min(remaining, source.free)
        if n > 0:
            picks.append((source, n))
            remaining -= n
    return picks


def expire_lots(level: StockLevel, today: date) -> list[Movement]:
    """Expired lots' free units become unsellable (a durable record of what `sellable` hides)."""
    return [Movement(level.sku, level.location, delta(unsellable=lot.buckets.free), "lot_expired",
                     lot.code)
            for lot in sorted(level.lots.values(), key=lambda lot: lot.code)
            if lot.is_expired(today) and lot.buckets.free > 0]


@dataclass(frozen=True)
class ShelfLifeNotice:
    """A lot still in date became too short-dated for a channel: from today that channel no
    longer sells it, though no unit moved. Recorded as a ledger entry of no quantity (the
    durable proof it was told, once), whose stock_changed makes listeners re-read."""

    sku: str
    location: str
    lot: str
    channel: str
    min_shelf_life_days: int

    @property
    def reference(self) -> str:
        """The entry's reference (at most 64 characters whatever the ids' lengths)."""
        key = f"{self.location}\0{self.lot}\0{self.channel}\0{self.min_shelf_life_days}"
        return "shelf-life:" + hashlib.sha256(key.encode()).hexdigest()[:40]

    @property
    def reason(self) -> str:
        return (f"lot {self.lot} has under {self.min_shelf_life_days} days of shelf life left "
                f"for channel {self.channel}")

    def movement(self) -> Movement:
        return Movement(self.sku, self.location, ZERO, "shelf_life", self.lot)


def lots_of(levels: Iterable[StockLevel]) -> list[tuple[str, str, Lot]]:
    """Every lot of these levels as (sku, location, lot), in code order per level."""
    return [(level.sku, level.location, lot) for level in levels
            for lot in sorted(level.lots.values(), key=lambda lot: lot.code)]


def shelf_life_notices(lots: Iterable[tuple[str, str, Lot]], channels: Iterable[Channel],
                       today: date) -> list[ShelfLifeNotice]:
    """Per lot (sku, location, lot) with free units, in date, and channel with a minimum
    remaining shelf life that sells from the lot's location: a notice when the lot no longer
    qualifies for it (already expired lots are the sweeper's expiry's to report)."""
    channels = [ch for ch in channels if ch.min_shelf_life_days > 0]
    return [ShelfLifeNotice(sku, location, lot.code, ch.id, ch.min_shelf_life_days)
            for sku, location, lot in lots
            if not lot.is_expired(today) and lot.buckets.free > 0
            for ch in channels
            if location in ch.locations and not lot.qualifies(today, ch.min_shelf_life_days)]


# ---------------------------------------------------------------------------------------------
# Allocation: which levels and lots a reservation draws from


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Allocation:
    sku: str
    location: str
    lot: str | None
    quantity: int


Recipes = Mapping[str, Mapping[str, int]]  # bundle sku -> component sku -> quantity per bundle


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """One line per SKU, in first-seen order: the same SKU twice is one larger line."""
    lines = list(lines)
    if len(lines) == 1:  # most baskets of a drop
        return lines
    merged: dict[str, int] = {}
    for line in lines:
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    return [Line(sku, quantity) for sku, quantity in merged.items()]


def components(sku: str, recipes: Recipes) -> Mapping[str, int]:
    """What one unit of `sku` is made of: a bundle its recipe, any other SKU itself."""
    return recipes.get(sku) or {sku: 1}


def explode(lines: Iterable[Line], recipes: Recipes) -> dict[str, int]:
    """Component demand of the lines: bundles become their components; shared ones add up."""
    need: dict[str, int] = {}
    for line in lines:
        parts = components(line.sku, recipes)
        for sku, per_unit in parts.items():
            need[sku] = need.get(sku, 0) + per_unit * line.quantity
    return need


def sku_sellable(levels: Iterable[StockLevel], today: date, min_shelf_life_days: int = 0) -> int:
    return sum(level.sellable(today, min_shelf_life_days) for level in levels)


def sellable_before_expiry(levels: Iterable[StockLevel], today: date) -> int:
    """What the SKU could sell on the last day its expired lots (those still holding free
    units) were in date.

    A lot leaves sellable stock at the start of its expiry date without any write, so the
    availability last announced for the SKU is this one, not today's; the sweeper's write
    compares against it to raise the alerts (sold out, low stock) the expiry implies.
    """
    levels = list(levels)
    expiring = [lot.expires_on for level in levels for lot in level.lots.values()
                if lot.is_expired(today) and lot.buckets.free > 0]
    if not expiring:
        return sku_sellable(levels, today)
    # Lots that expired before that day hold no free units (else they would be the earliest),
    # so judging the day before the earliest one brings back exactly the expiring lots.
    return sku_sellable(levels, min(expiring) - timedelta(days=1))


def bundle_available(recipe: Mapping[str, int], component_available: Mapping[str, int]) -> int:
    """How many whole bundles the components make: the scarcest component decides."""
    if not recipe:
        return 0
    return min(component_available.get(sku, 0) // per_unit for sku, per_unit in recipe.items())


def available_to_sell(sku: str, recipes: Recipes, levels: Mapping[str, list[StockLevel]],
                      today: date, min_shelf_life_days: int = 0) -> int:
    """What a buyer can still get of `sku` from these levels: a bundle counts whole kits."""
    recipe = components(sku, recipes)
    per_component = {c: sku_sellable(levels.get(c, []), today, min_shelf_life_days)
                     for c in recipe}
    return bundle_available(recipe, per_component)


@dataclass(frozen=True)
class ChannelRules:
    """How much of its locations' stock a channel is shown: `buffer` units are held back from
    it (a marketplace's listing lags, so it is told a little less than there is), and it never
    sees more than `cap` (None: no cap)."""

    buffer: int = 0
    cap: int | None = None

    @property
    def restricts(self) -> bool:
        return self.buffer > 0 or self.cap is not None

    def ats(self, available: int) -> int:
        return channel_ats(available, self.buffer, self.cap)


NO_RULES = ChannelRules()


@dataclass(frozen=True)
class Channel:
    """A sales channel (web, app, a marketplace): the locations that serve it, in order, and
    its allocation rules."""

    id: str
    name: str
    min_shelf_life_days: int
    locations: list[str]
    buffer: int = 0
    cap: int | None = None

    @property
    def rules(self) -> ChannelRules:
        return ChannelRules(self.buffer, self.cap)


def channel_ats(available: int, buffer: int = 0, cap: int | None = None) -> int:
    """Available-to-sell on a channel: max(0, min(cap, available in its locations - buffer))."""
    after_buffer = available - buffer
    return max(0, after_buffer if cap is None else min(cap, after_buffer))


def channel_available_to_sell(sku: str, recipes: Recipes, levels: Mapping[str, list[StockLevel]],
                              today: date, min_shelf_life_days: int = 0,
                              rules: ChannelRules = NO_RULES) -> int:
    """What a channel may sell of `sku`: the rules apply per physical SKU (a buffer holds back
    units, not kits), so a bundle counts the kits its components' channel ATS make."""
    recipe = components(sku, recipes)
    per_component = {c: rules.ats(sku_sellable(levels.get(c, []), today, min_shelf_life_days))
                     for c in recipe}
    return bundle_available(recipe, per_component)


def check_channel_rules(lines: list[Line], recipes: Recipes,
                        levels: Mapping[str, list[StockLevel]], today: date,
                        min_shelf_life_days: int, rules: ChannelRules) -> None:
    """Raise StockShortfall when the lines need more of a SKU than the channel's ATS, so a
    channel is never sold more than it is shown (a buffer or a cap below its stock)."""
    if not rules.restricts:
        return
    short = {sku for sku, need in explode(lines, recipes).items()
             if need > rules.ats(sku_sellable(levels.get(sku, []), today, min_shelf_life_days))}
    if short:
        raise StockShortfall([
            Shortage(line.sku, line.quantity,
                     channel_available_to_sell(line.sku, recipes, levels, today,
                                               min_shelf_life_days, rules))
            for line in lines if short & components(line.sku, recipes).keys()])


def allocate(lines: list[Line], recipes: Recipes, levels: Mapping[str, list[StockLevel]],
             today: date, min_shelf_life_days: int = 0) -> list[Allocation]:
    """All lines or none: levels in channel priority order, lots first-expiry-first-out.

    `levels[sku]` lists the channel's stock levels for that SKU in priority order.
    Raises StockShortfall naming every requested line that cannot be served.
    """
    allocations: list[Allocation] = []
    short_components: set[str] = set()
    for sku, quantity in explode(lines, recipes).items():
        remaining = quantity
        for level in levels.get(sku, []):
            budget = min(remaining, level.sellable(today, min_shelf_life_days))
            for source, n in _draw(level.sources(today, min_shelf_life_days), budget):
                allocations.append(Allocation(sku, level.location, source.lot, n))
                remaining -= n
        if remaining > 0:
            short_components.add(sku)
    if short_components:
        raise StockShortfall(_shortages(lines, recipes, levels, today, min_shelf_life_days,
                                           short_components))
    return allocations


def _shortages(lines: list[Line], recipes: Recipes, levels: Mapping[str, list[StockLevel]],
               today: date, min_shelf_life_days: int, short: set[str]) -> list[Shortage]:
    return [Shortage(line.sku, line.quantity,
                     available_to_sell(line.sku, recipes, levels, today, min_shelf_life_days))
            for line in lines if short & components(line.sku, recipes).keys()]


@dataclass(frozen=True)
class Item:
    """A SKU's own row: its version (the ETag, one per change of any of its levels) and its
    policy (per-customer limit, low-stock threshold)."""

    sku: str
    version: int
    per_customer_limit: int | None
    low_stock_threshold: int | None


def check_customer_limit(sku: str, limit: int | None, held: int, requested: int) -> None:
    if limit is not None and held + requested > limit:
        raise LimitExceeded(sku, limit, held, requested)


# ---------------------------------------------------------------------------------------------
# Reservations


class ReservationStatus(StrEnum):
    ACTIVE = "active"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"


_MOVEMENT_KIND = {"active": "reserve", "committed": "commit", "released": "release",
                  "expired": "expire", "shipped": "ship", "cancelled": "cancel"}


@dataclass
class Reservation:
    id: str
    channel: str
    customer_id: str | None
    status: ReservationStatus
    created_at: datetime
    expires_at: datetime
    lines: list[Line]
    allocations: list[Allocation]
    events: list[Event] = field(default_factory=list, compare=False)

    @classmethod
    def open(cls, id: str, channel: str, customer_id: str | None, lines: list[Line],
             allocations: list[Allocation], now: datetime, ttl: timedelta) -> Reservation:
        reservation = cls(id, channel, customer_id, ReservationStatus.ACTIVE, now, now + ttl,
                          lines, allocations)
        reservation._raise(ReservationCreated)
        return reservation

    def movements(self, change: Buckets) -> list[Movement]:
        """One movement per allocation, each `change` scaled by the allocated quantity."""
        return [Movement(a.sku, a.location, change.scaled(a.quantity),
                         _MOVEMENT_KIND[self.status], a.lot)
                for a in self.allocations]

    def commit(self, now: datetime) -> list[Movement]:
        self._require_active(now, "commit")
        self.status = ReservationStatus.COMMITTED
        self._raise(ReservationCommitted)
        return self.movements(delta(reserved=-1, committed=1))

    def ship(self) -> list[Movement]:
        """The committed units left the building: they are no longer on hand."""
        self._require_committed("ship")
        self.status = ReservationStatus.SHIPPED
        self._raise(ReservationShipped)
        return self.movements(delta(on_hand=-1, committed=-1))

    def cancel(self) -> list[Movement]:
        """An order cancelled before shipping gives its committed units back to sale."""
        self._require_committed("cancel")
        self.status = ReservationStatus.CANCELLED
        self._raise(ReservationCancelled)
        return self.movements(delta(committed=-1))

    def _require_committed(self, action: str) -> None:
        if self.status is not ReservationStatus.COMMITTED:
            raise IllegalTransition(f"cannot {action} reservation {self.id}: it is "
                                    f"{self.status.value}, not committed")

    def release(self) -> list[Movement]:
        if self.status is not ReservationStatus.ACTIVE:
            raise IllegalTransition(f"reservation {self.id} is {self.status.value}; "
                                    "only an active one can be released")
        self.status = ReservationStatus.RELEASED
        self._raise(ReservationReleased)
        return self.movements(delta(reserved=-1))

    def expire(self, now: datetime) -> list[Movement]:
        if self.status is not ReservationStatus.ACTIVE or self.expires_at > now:
            raise IllegalTransition(f"reservation {self.id} is not an expired active hold")
        self.status = ReservationStatus.EXPIRED
        self._raise(ReservationExpired)
        return self.movements(delta(reserved=-1))

    def extend(self, ttl: timedelta, now: datetime) -> None:
        self._require_active(now, "extend")
        self.expires_at = now + ttl

    def _require_active(self, now: datetime, action: str) -> None:
        if self.status is not ReservationStatus.ACTIVE:
            raise IllegalTransition(f"cannot {action} reservation {self.id}: it is "
                                    f"{self.status.value}")
        if self.expires_at <= now:
            raise IllegalTransition(f"cannot {action} reservation {self.id}: it expired at "
                                    f"{self.expires_at.isoformat()}")

    def _raise(self, event_type: type[ReservationEvent]) -> None:
        self.events.append(event_type(
            reservation_id=self.id, channel=self.channel, customer_id=self.customer_id,
            status=self.status.value, expires_at=self.expires_at,
            lines=[ReservationLine(sku=line.sku, quantity=line.quantity)
                   for line in self.lines]))


# ---------------------------------------------------------------------------------------------
# The ledger


class Provenance(Protocol):
    """Who and why a movement was made (platform's EntryContext is one): recorded, and hashed,
    with each ledger entry."""

    @property
    def actor(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def reference(self) -> str | None: ...


@dataclass(frozen=True)
class Recorded:
    """A provenance as the ledger keeps it."""

    actor: str
    reason: str
    correlation_id: str | None
    idempotency_key: str | None
    reference: str | None


CUSTOMER_ACTOR = "customer"


def without_customer(ctx: Provenance) -> Provenance:
    """The provenance with a customer named by role only. The ledger is hash-chained and can
    forget nothing, while a person may ask to be forgotten: their identity stays in the
    reservation or order the entry references, which erasure pseudonymises. Staff, services
    and sagas keep their names (an audit trail of who moved stock)."""
    if not ctx.actor.startswith(CUSTOMER_ACTOR + ":"):
        return ctx
    return Recorded(CUSTOMER_ACTOR, ctx.reason, ctx.correlation_id, ctx.idempotency_key,
                    ctx.reference)


@dataclass(frozen=True)
class LedgerEntry:
    """One movement of one stock level, chained to the level's previous entry by its hash."""

    sku: str
    location: str
    version: int
    kind: str
    delta: Buckets
    lot: str | None
    lot_expires_on: date | None
    context: Provenance  # who and why: the command's context, kept whole with each entry
    at: datetime
    prev_hash: str
    hash: str

    @classmethod
    def record(cls, level: StockLevel, movement: Movement, ctx: Provenance,
               at: datetime) -> LedgerEntry:
        """Chain an already-applied movement onto its level's history."""
        ctx = without_customer(ctx)
        lot_expires_on = movement.lot_expires_on
        if movement.lot is not None and lot_expires_on is None:
            lot_expires_on = level.lots[movement.lot].expires_on
        fields_ = (level.sku, level.location, level.version, movement.kind, movement.delta,
                   movement.lot, lot_expires_on, ctx, at, level.last_hash)
        entry = cls(*fields_, hash=chain_hash(_hashed_body(*fields_)))
        level.last_hash = entry.hash
        return entry

    def movement(self) -> Movement:
        return Movement(self.sku, self.location, self.delta, self.kind, self.lot,
                        self.lot_expires_on)

    def body(self) -> dict[str, Any]:
        """What the hash covers."""
        return _hashed_body(self.sku, self.location, self.version, self.kind, self.delta,
                            self.lot, self.lot_expires_on, self.context, self.at, self.prev_hash)


def _hashed_body(sku: str, location: str, version: int, kind: str, delta: Buckets,
                 lot: str | None, lot_expires_on: date | None, ctx: Provenance, at: datetime,
                 prev_hash: str) -> dict[str, Any]:
    """Every field of an entry but its hash, the context's fields at the top level: the form
    every chain was hashed in, so stored chains still verify."""
    return dict(sku=sku, location=location, version=version, kind=kind, delta=delta, lot=lot,
                lot_expires_on=lot_expires_on, actor=ctx.actor, reason=ctx.reason,
                correlation_id=ctx.correlation_id, idempotency_key=ctx.idempotency_key,
                reference=ctx.reference, at=at, prev_hash=prev_hash)


def chain_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and a canonical JSON of the entry (sorted keys, no
    spaces, non-ASCII escaped: the form `json.dumps(sort_keys=True, separators=(",", ":"))`
    writes).

    orjson writes the very same bytes for printable-ASCII entries at a fraction of the cost
    (this runs for every unit of a drop); an entry with other text (which `json` escapes and
    orjson would not) goes through `json`.
    """
    plain = {k: (_PLAIN[type(v)](v) if type(v) in _PLAIN else v) for k, v in body.items()}
    canonical = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
    if not canonical.isascii() or b"\x7f" in canonical:
        canonical = _CANONICAL.encode(plain).encode()
    return hashlib.sha256(canonical).hexdigest()


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_PLAIN: dict[type, Any] = {Buckets: Buckets.as_dict, datetime: datetime.isoformat,
                           date: date.isoformat}


@dataclass
class LedgerFold:
    """Rebuilds stock levels from the ledger one entry at a time, checking every chain.

    Entries must come ordered by (sku, location, version); memory grows with the number of
    stock levels, not with the length of the ledger, so a whole ledger can be streamed through.
    """

    levels: dict[tuple[str, str], StockLevel] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    entries: int = 0

    def add(self, entry: LedgerEntry) -> None:
        self.entries += 1
        key = (entry.sku, entry.location)
        level = self.levels.setdefault(key, StockLevel(entry.sku, entry.location))
        where = f"{entry.sku}@{entry.location} v{entry.version}"
        if entry.version != level.version + 1:
            self.problems.append(f"{where}: expected version {level.version + 1}")
        if entry.prev_hash != level.last_hash:
            self.problems.append(f"{where}: chain broken (prev_hash does not match)")
        if chain_hash(entry.body()) != entry.hash:
            self.problems.append(f"{where}: entry altered (hash does not match its content)")
        try:
            level.apply(entry.movement())
        except NegativeBucket as exc:
            self.problems.append(f"{where}: {exc}")
        level.version = entry.version
        level.last_hash = entry.hash


def fold(entries: Iterable[LedgerEntry]) -> tuple[dict[tuple[str, str], StockLevel], list[str]]:
    """The levels the ledger describes, and every problem found on the way."""
    folder = LedgerFold()
    for entry in entries:
        folder.add(entry)
    return folder.levels, folder.problems


def compare_levels(folded: Mapping[tuple[str, str], StockLevel],
                   stored: Mapping[tuple[str, str], StockLevel]) -> list[str]:
    """Differences between the ledger's projection and the stored levels, one line each."""
    problems = []
    for key in sorted(folded.keys() | stored.keys()):
        want, have = folded.get(key), stored.get(key)
        name = f"{key[0]}@{key[1]}"
        if want is None or have is None:
            only = have or want
            if only is not None and not only.buckets.is_zero:
                side = "levels" if want is None else "ledger"
                problems.append(f"{name}: present only in the {side}")
            continue
        if want.buckets != have.buckets:
            problems.append(f"{name}: levels {have.buckets.as_dict()} != ledger "
                            f"{want.buckets.as_dict()}")
        if want.version != have.version or want.last_hash != have.last_hash:
            problems.append(f"{name}: version/hash {have.version} differs from ledger "
                            f"{want.version}")
        want_lots = {c: (lot.expires_on, lot.buckets) for c, lot in want.lots.items()}
        have_lots = {c: (lot.expires_on, lot.buckets) for c, lot in have.lots.items()}
        if want_lots != have_lots:
            problems.append(f"{name}: lots differ from the ledger")
    return problems


# ---------------------------------------------------------------------------------------------
# What a stock transaction tells the world


def total_buckets(levels: Iterable[StockLevel]) -> Buckets:
    """The buckets of one SKU summed over its stock levels."""
    total = ZERO
    for level in levels:
        total = total + level.buckets
    return total


def stock_totals(levels: Iterable[StockLevel], today: date) -> StockTotals:
    """A physical SKU's totals; `available` is what any location can sell, as
    `available_to_sell` counts it (expired lots excluded)."""
    levels = list(levels)
    return StockTotals(**total_buckets(levels).as_dict(), available=sku_sellable(levels, today))


def bundles_moved(kits: Recipes, before: Mapping[str, int], after: Mapping[str, int],
                  changed: Iterable[str]) -> dict[str, tuple[int, int]]:
    """The kits whose sellable count a change moved, with (before, after).

    `before`/`after` are each component's sellable units around the change; only kits made of
    a `changed` SKU are counted (the rest cannot have moved), and a kit whose count stayed the
    same is left out: its version moves only when what it tells buyers does.
    """
    changed = set(changed)
    moved: dict[str, tuple[int, int]] = {}
    for kit, recipe in kits.items():
        if changed.isdisjoint(recipe):
            continue
        was = bundle_available(recipe, before)
        now = bundle_available(recipe, after)
        if was != now:
            moved[kit] = (was, now)
    return moved


def bundle_changed(sku: str, sku_version: int, available: int, reason: str) -> StockChanged:
    """A kit's stock_changed: zero buckets (it holds no units), the kits that can be sold."""
    return StockChanged(sku=sku, sku_version=sku_version, location=BUNDLE_LOCATION,
                        version=sku_version, available=available, reason=reason,
                        totals=StockTotals(**ZERO.as_dict(), available=available),
                        **ZERO.as_dict())


def stock_changed(level: StockLevel, reason: str, sku_version: int,
                  totals: StockTotals) -> StockChanged:
    b = level.buckets
    return StockChanged(sku=level.sku, sku_version=sku_version, location=level.location,
                        version=level.version, available=b.available, reason=reason,
                        totals=totals, **b.as_dict())


def sku_alerts(sku: str, sku_version: int, before: int, after: int,
               low_stock_threshold: int | None) -> list[SkuEvent]:
    """Alerts raised by a change of the SKU's total availability from `before` to `after`.

    Only crossings count, so a SKU that stays sold out or stays low says nothing more:
    sold out (>0 to 0), back in stock (0 to >0), low stock (above the threshold to at or below
    it, still >0).
    """
    if before > 0 and after == 0:
        return [SoldOut(sku=sku, sku_version=sku_version, available=after)]
    if before == 0 and after > 0:
        return [BackInStock(sku=sku, sku_version=sku_version, available=after)]
    threshold = low_stock_threshold
    if threshold is not None and before > threshold >= after > 0:
        return [LowStock(sku=sku, sku_version=sku_version, available=after, threshold=threshold)]
    return []


@dataclass
class Refusals:
    """Units and requests refused for want of stock, per SKU, since `since`: counted as they
    are refused, handed on (and started again) by `take`."""

    since: datetime
    units: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)

    def add(self, sku: str, units: int) -> None:
        self.units[sku] = self.units.get(sku, 0) + units
        self.requests[sku] = self.requests.get(sku, 0) + 1

    def take(self, now: datetime) -> tuple[datetime, dict[str, tuple[int, int]]]:
        """(since, {sku: (units, requests)}), and an empty tally from `now`."""
        taken = (self.since, {sku: (units, self.requests[sku])
                              for sku, units in self.units.items()})
        self.since, self.units, self.requests = now, {}, {}
        return taken
