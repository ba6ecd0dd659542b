"""Events the inventory context publishes (the `data` of a CloudEvents envelope).

Stock events are about a SKU: their subject is the SKU and their sequence is the SKU's version
after the transaction (`inventory_items.version`, the ETag), shared by every event that
transaction emits for that SKU. Every transaction that bumps a SKU's version emits at least one of
them, so a SKU's sequence has no gaps. A bundle (kit) has a version of its own, bumped when a
change of a component moves how many kits can be sold. Reservation events are about a
reservation and carry no sequence.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from instock.platform.bus.envelope import DomainEvent as Event
from instock.platform.bus.envelope import event_types

# A bundle has no stock level of its own: its stock_changed events name this location, which no
# caller-chosen location id can be (see platform.ids.CALLER_ID_PATTERN).
BUNDLE_LOCATION = "*"


class StockBuckets(BaseModel):
    """Quantities by bucket (DESIGN.md §2) and what they leave to sell: the one list of these
    fields, shared by the stock events here and the stock API's documents (inventory/api.py).
    A subclass may describe `available` for what it counts; the field keeps its place."""

    on_hand: int
    reserved: int
    committed: int
    safety_stock: int
    unsellable: int
    quarantined: int
    incoming: int
    available: int


class StockTotals(StockBuckets):
    """The SKU's buckets summed over all its locations, after the change."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    available: int = Field(description="what any location can still sell (expired lots do not "
                                       "count); GET /v1/inventory/{sku} without a channel")


class SkuEvent(Event):
    """An event about one SKU as a whole."""

    sku: str
    sku_version: int = Field(description="the SKU's version after the change (its ETag); "
                                         "also the envelope's sequence")

    @property
    def subject(self) -> str:
        """The SKU."""
        return self.sku

    @property
    def sequence(self) -> int:
        return self.sku_version


class LevelEvent(SkuEvent):
    """An event about one stock level (sku, location) of the SKU."""

    location: str
    version: int = Field(description="the stock level's own version (one per ledger entry)")


# StockBuckets comes first among the bases so that its fields follow LevelEvent's: pydantic
# orders fields base by base from the last, and the published order (sku, sku_version, location,
# version, the buckets) is what consumers and docs/events already have.
class StockChanged(StockBuckets, LevelEvent):
    """One stock level (sku, location) changed; carries its new state and the SKU's totals.

    A bundle (kit) has no stock levels: when a change of its components moves how many kits
    can be sold, it gets one of these with location `*` (no location id can be `*`), its own
    version as both `version` and `sku_version`, zero buckets, and the kits that can be sold
    as `available` and `totals.available`, as `GET /v1/inventory/{sku}` answers for it."""

    type: ClassVar[str] = "inventory.stock_changed.v1"
    available: int = Field(description="what this level may sell by its buckets")
    reason: str = Field(description="the kind of the last ledger entry at this level, e.g. "
                                    "receive, reserve, commit, release, expire")
    totals: StockTotals


class SoldOut(SkuEvent):
    """The SKU's total availability went from above zero to zero."""

    type: ClassVar[str] = "inventory.sold_out.v1"
    available: int


class BackInStock(SkuEvent):
    """The SKU's total availability went from zero to above zero."""

    type: ClassVar[str] = "inventory.back_in_stock.v1"
    available: int


class LowStock(SkuEvent):
    """The SKU's total availability fell from above its low-stock threshold to at or below it,
    and is still above zero."""

    type: ClassVar[str] = "inventory.low_stock.v1"
    available: int
    threshold: int = Field(description="the SKU's low_stock_threshold policy")


class PolicyChanged(SkuEvent):
    """The SKU's policy (per-customer limit, low-stock threshold) was set. It bumps the SKU's
    version (its ETag), so it is published like any other change of the SKU."""

    type: ClassVar[str] = "inventory.policy_changed.v1"
    per_customer_limit: int | None
    low_stock_threshold: int | None


class ReservationLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: str
    quantity: int


class ReservationEvent(Event):
    """A reservation changed state; `lines` are the SKUs as requested (bundles as bundles)."""

    reservation_id: str
    channel: str
    customer_id: str | None
    status: str
    expires_at: datetime
    lines: list[ReservationLine]

    @property
    def subject(self) -> str:
        """The reservation id."""
        return self.reservation_id


class ReservationCreated(ReservationEvent):
    """A hold was placed: the lines' units are reserved until `expires_at`."""

    type: ClassVar[str] = "reservation.created.v1"


class ReservationCommitted(ReservationEvent):
    """The hold became an order: reserved units moved to committed."""

    type: ClassVar[str] = "reservation.committed.v1"


class ReservationReleased(ReservationEvent):
    """The hold was given up: its units are available again."""

    type: ClassVar[str] = "reservation.released.v1"


class ReservationExpired(ReservationEvent):
    """The hold ran out of time: the sweeper released its units."""

    type: ClassVar[str] = "reservation.expired.v1"


class ReservationShipped(ReservationEvent):
    """The committed units were shipped: they left on-hand stock."""

    type: ClassVar[str] = "reservation.shipped.v1"


class ReservationCancelled(ReservationEvent):
    """The order behind a committed hold was cancelled: its units are available again."""

    type: ClassVar[str] = "reservation.cancelled.v1"


class ChannelChanged(Event):
    """A channel's allocation rules changed (locations, buffer, cap, shelf life): what it may
    sell of every SKU may have changed with them."""

    type: ClassVar[str] = "inventory.channel_changed.v1"
    channel: str
    locations: list[str]
    buffer: int
    cap: int | None
    min_shelf_life_days: int

    @property
    def subject(self) -> str:
        """The channel id."""
        return self.channel



class DemandRefused(Event):
    """Reservations of the SKU refused for want of stock, summed over a short while by the
    process that refused them: demand it could not meet (a drop's buyers after the sell-out).
    A measure, not a record: a process that dies loses its last few seconds of counts."""

    type: ClassVar[str] = "inventory.demand_refused.v1"
    sku: str
    units: int = Field(description="units asked for in the refused requests")
    requests: int
    since: datetime
    until: datetime

    @property
    def subject(self) -> str:
        return self.sku


# Events whose subject is a SKU and whose sequence is the SKU's version after the change.
SKU_EVENTS = event_types(SkuEvent)
