"""Marketplace channels, pure: connections, when a listing is pushed, drift, order feeds.

A marketplace is told one number per SKU: its available-to-sell (the inventory model's
`channel_ats`). Telling it is asynchronous and lossy on purpose: every stock change only marks
the (channel, sku) listing as changed (`changes` goes up by one), and a pusher later reads the
SKU's state *now* and sends that. A burst of changes therefore costs one push of the latest value
(coalescing), and since pushes of one channel are made one after the other, each reading the
state after the previous push, a marketplace is never sent an older value after a newer one.
`push_decision` is that rule; the store keeps the counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

CONNECTION_KINDS = ("marketplace",)


@dataclass(frozen=True)
class Connection:
    """How to reach a channel's marketplace and how to recognise its webhooks."""

    channel_id: str
    kind: str
    base_url: str
    api_key: str
    webhook_secret: str


# ---------------------------------------------------------------------------------------------
# Pushing available-to-sell


@dataclass(frozen=True)
class ListingState:
    """What we know of one (channel, sku) listing."""

    sku: str
    changes: int  # stock changes heard for it so far
    pushed_changes: int  # how many of them the last push covered
    pushed_version: int | None  # the SKU version the last pushed quantity was read at
    pushed_quantity: int | None

    @property
    def dirty(self) -> bool:
        return self.changes > self.pushed_changes


class Decision(StrEnum):
    PUSH = "push"  # send the quantity read
    SAME = "same"  # the marketplace already has this quantity: cover the changes, no call
    STALE = "stale"  # the read is older than what was pushed: never send it


def push_decision(state: ListingState, quantity: int, version: int) -> Decision:
    """What to do with a quantity read at the SKU's `version` for a dirty listing.

    A read older than the last push is refused outright, so a slow reader can never overwrite a
    newer value. An equal quantity needs no call (a change at a location the channel does not
    sell from, or under its buffer, leaves the listing as it is); drift the marketplace caused
    itself is `instock channels reconcile`'s business.
    """
    if state.pushed_version is not None and version < state.pushed_version:
        return Decision.STALE
    if state.pushed_quantity == quantity:
        return Decision.SAME
    return Decision.PUSH


def coalesce(changes: list[tuple[str, int, int]]) -> dict[str, tuple[int, int]]:
    """The newest (version, quantity) per SKU of a burst of (sku, version, quantity) reads:
    all a marketplace needs to hear of it. Versions may arrive out of order."""
    latest: dict[str, tuple[int, int]] = {}
    for sku, version, quantity in changes:
        if sku not in latest or version >= latest[sku][0]:
            latest[sku] = (version, quantity)
    return latest


def next_slot(previous: float | None, now: float, rate_per_second: float) -> float:
    """When the next push to a channel may go: evenly spaced at the channel's rate, never in
    the past (an idle channel does not bank a burst of credit)."""
    if previous is None:
        return now
    return max(now, previous + 1.0 / rate_per_second)


# ---------------------------------------------------------------------------------------------
# Reconcile


@dataclass(frozen=True)
class ListingGap:
    """A listing that does not say what it should: `expected` is what it should hold (what
    the channel may sell now, or what we last pushed), `actual` what it holds (what we last
    pushed, or what the marketplace reports); None for no listing."""

    channel_id: str
    sku: str
    expected: int | None
    actual: int | None
    version: int = 0  # the SKU's version `expected` was read at (0: not a read of stock)


@dataclass(frozen=True)
class Drift:
    sku: str
    ours: int
    theirs: int | None  # None: the marketplace has no listing for it


def drift(ours: dict[str, int], theirs: dict[str, int]) -> list[Drift]:
    """Every SKU whose marketplace quantity differs from our ATS, sorted by SKU. A SKU the
    marketplace does not list is no drift while we have none of it to sell."""
    found = []
    for sku in sorted(ours.keys() | theirs.keys()):
        have, listed = ours.get(sku, 0), theirs.get(sku)
        if listed is None and have == 0:
            continue
        if listed != have:
            found.append(Drift(sku, have, listed))
    return found


# ---------------------------------------------------------------------------------------------
# Orders from a marketplace's feed


@dataclass(frozen=True)
class FeedLine:
    sku: str
    quantity: int
    unit_price: Decimal


class OrderWork(StrEnum):
    """What a marketplace told us about one of its orders, to be carried out by the worker."""

    CREATED = "created"
    CANCELLED = "cancelled"


class WorkState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # gave up after the attempts allowed; visible in channel_orders


class FeedError(ValueError):
    """A marketplace feed event instock cannot act on as sent: `field` says where."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# Which feed event kinds become which work; any other kind is acknowledged and ignored, so the
# marketplace stops resending an event instock has no use for.
FEED_KINDS = {"order.created": OrderWork.CREATED, "order.cancelled": OrderWork.CANCELLED}
DEFAULT_CANCEL_REASON = "cancelled by the buyer"


@dataclass(frozen=True)
class FeedDelivery:
    """One marketplace feed event, understood: what it asks of one of its orders."""

    event_id: str  # the marketplace's id of the delivery: a repeat carries the same one
    work: OrderWork
    external_id: str  # the marketplace's order id
    lines: tuple[FeedLine, ...] = ()  # created: what was bought
    currency: str = ""  # created: the currency of the prices
    reason: str = ""  # cancelled: why


def feed_event(event_id: str, kind: str, external_id: str, lines: Sequence[FeedLine],
               currency: str, reason: str | None) -> FeedDelivery | None:
    """The work a feed event asks for; None for a kind instock does not act on.

    Raises FeedError for an order created without lines (there is nothing to fill). A
    cancellation without a reason is the buyer's."""
    work = FEED_KINDS.get(kind)
    if work is OrderWork.CREATED:
        if not lines:
            raise FeedError("data.order.lines", "an order needs at least one line")
        return FeedDelivery(event_id, work, external_id, tuple(lines), currency=currency)
    if work is OrderWork.CANCELLED:
        return FeedDelivery(event_id, work, external_id,
                            reason=reason or DEFAULT_CANCEL_REASON)
    return None
