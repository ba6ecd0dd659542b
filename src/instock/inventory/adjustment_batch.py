"""The group commit of adjustments: writes that arrive together share one transaction.

`InventoryService.adjust` validates an `Adjusting` and queues it on the one adjustments lane;
what arrives while a batch is in flight forms the next batch, up to the first request that
touches a SKU (or a kit of one) already in it. So a batch changes each SKU for one request only:
every answer is that request's own state and version, as if it had run alone, while the batch
pays for one transaction, one lock statement, one ledger insert and one outbox insert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from instock.inventory import model, store
from instock.inventory.errors import domain_errors
from instock.inventory.model import Adjustment, AdjustmentKind
from instock.inventory.unit_of_work import StockTx
from instock.platform.entry_context import EntryContext
from instock.platform.errors import Conflict, PreconditionFailed, VersionConflict

LANE = "adjustments"  # one lane: requests on different SKUs batch together


@dataclass(frozen=True)
class Adjusting:
    """One adjustment, validated, waiting for its batch."""

    adjustment: Adjustment
    ctx: EntryContext
    expected_version: int | None
    locked: frozenset[str]  # its SKU and the kits made of it: rows its transaction locks

    def claims(self) -> frozenset[str]:
        return self.locked


async def apply(tx: StockTx, adj: Adjustment, ctx: EntryContext,
                expected_version: int | None) -> None:
    """One adjustment inside a stock transaction. With `ctx.reference` set it happens at most
    once per SKU and reference (a resumed job may simply do it again)."""
    if ctx.reference and await store.has_reference(tx.conn, adj.sku, ctx.reference):
        return
    if expected_version is not None and tx.items[adj.sku].version != expected_version:
        raise PreconditionFailed(
            f"{adj.sku} is at version {tx.items[adj.sku].version}, not {expected_version}")
    origin = tx.level(adj.sku, adj.location)
    destination = tx.level(adj.sku, adj.to_location) if adj.to_location else None
    tx.move(model.plan_adjustment(adj, origin, tx.today, destination), ctx)
    if adj.kind is AdjustmentKind.EXPECT:
        await store.expect_on(tx.conn, adj.sku, adj.location, adj.expected_on)


async def decide(tx: StockTx, batch: Sequence[Adjusting]) -> list[str | Exception]:
    """Each request in arrival order: its SKU, or the refusal meant for it alone (a plan the
    model refuses moves nothing, so its neighbours go on). Anything else fails the batch."""
    outcomes: list[str | Exception] = []
    for request in batch:
        entries = len(tx.entries)
        try:
            with domain_errors():
                await apply(tx, request.adjustment, request.ctx, request.expected_version)
        except VersionConflict:
            raise  # a lost race, not a refusal: the whole batch is tried again
        except (Conflict, PreconditionFailed) as refused:
            if len(tx.entries) != entries:  # refused half-way (a transfer's second leg):
                raise  # only a transaction of its own undoes the first, so the batch splits
            outcomes.append(refused)
            continue
        tx.origins[request.adjustment.sku] = request.ctx
        outcomes.append(request.adjustment.sku)
    return outcomes
