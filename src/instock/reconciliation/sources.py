"""What a pass reads of other contexts, through their services: the orders holding committed
stock, and the copies others keep of stock (recommendations' view, marketplace listings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from instock.channels.service import ChannelsService
from instock.inventory.drift import Finding
from instock.inventory.model import ReservationStatus
from instock.inventory.service import InventoryService
from instock.orders.model import MAY_HOLD_STOCK
from instock.orders.service import OrdersService
from instock.recommendations.service import RecommendationsService
from instock.reconciliation import commitments, projections

# Reservations no longer holding stock: one under a paid order is a drift.
LET_GO = (ReservationStatus.RELEASED.value, ReservationStatus.EXPIRED.value,
          ReservationStatus.CANCELLED.value)
ORDERS_PER_PASS = 10_000


@dataclass
class Commitments:
    """What a pass read of committed stock and of the orders that hold it."""

    committed: dict[str, tuple[str, commitments.Allocations]] = field(default_factory=dict)
    let_go: dict[str, tuple[str, commitments.Allocations]] = field(default_factory=dict)
    orders_checked: set[str] = field(default_factory=set)

    async def read_stock(self, inventory: InventoryService, skus: set[str],
                         after: datetime | None) -> None:
        """The chunk's committed reservations, and those let go since the last pass."""
        committed = ReservationStatus.COMMITTED.value
        for rid, held in (await inventory.reservations_holding(
                skus=skus, statuses=(committed, *LET_GO), since=after,
                whenever=(committed,))).items():
            (self.committed if held[0] == committed else self.let_go)[rid] = held

    async def compare(self, inventory: InventoryService, orders: OrdersService,
                      only: str | None, after: datetime | None,
                      recheck: set[str]) -> list[Finding]:
        """Committed reservations against the orders holding them, and orders paid for
        stock (changed since the last pass, holding a reservation let go since, or to be
        checked again) against their reservations."""
        holders = await orders.holders(self.committed.keys() | self.let_go.keys())
        let_go_by = {order for rid, (order, _) in holders.items() if rid in self.let_go}
        # A pass of one SKU asks only about its own reservations' orders.
        paid = await orders.paid_for_stock(let_go_by | recheck, ORDERS_PER_PASS,
                                           changed=only is None, changed_since=after)
        self.orders_checked = set(paid) | recheck
        known = {**self.let_go, **self.committed}
        missing = {rid for rids in paid.values() for rid in rids} - known.keys()
        if missing:
            known.update(await inventory.reservations_holding(ids=missing))
        return commitments.check({rid: a for rid, (_, a) in self.committed.items()},
                                 {rid: (o, s.value) for rid, (o, s) in holders.items()},
                                 paid, known, {s.value for s in MAY_HOLD_STOCK})


async def copies_of(inventory: InventoryService, recommendations: RecommendationsService,
                    channels: ChannelsService, skus: set[str]) -> list[Finding]:
    """These SKUs' stock against recommendations' in-stock view and every channel's listing."""
    views = await inventory.stocks(skus)
    stock = {sku: (view.version, view.available) for sku, view in views.items()}
    return (projections.recs_view(stock, await recommendations.stock_view(set(stock)))
            + projections.listings(await channels.listing_gaps(set(stock))))
