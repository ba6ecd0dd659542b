"""Adjustments and reservation transitions that arrive together share one transaction (their
group commits), and each is still answered alone: its own state, refusal and events."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa

from instock.app import Container
from instock.inventory.errors import InvalidTransition, StockRuleViolated
from instock.inventory.model import Adjustment, AdjustmentKind, Line, ReservationStatus
from instock.inventory.reservation_batch import ReserveRequest
from instock.inventory.unit_of_work import StockView
from instock.platform.bus.outbox import outbox
from instock.platform.entry_context import EntryContext
from instock.platform.errors import NotFound
from tests.integration.helpers import add_location, add_product, counting, receive

SKUS = [f"B-{n:02d}" for n in range(20)]


@pytest.fixture
async def c(container: Container) -> Container:
    await add_location(container, "wh")
    await add_location(container, "shop")
    await add_product(container, "p", SKUS)
    for sku in SKUS:
        await receive(container, sku, "wh", 10)
    return container


def ctx(n: int) -> EntryContext:
    return EntryContext(actor="test", reason="batch", correlation_id=f"req-{n}")


async def stock_events(c: Container) -> list[dict[str, Any]]:
    async with c.db.read() as conn:
        rows = await conn.execute(sa.select(outbox.c.envelope)
                                  .where(outbox.c.type == "inventory.stock_changed.v1"))
        return [row.envelope for row in rows]


async def test_concurrent_adjustments_share_transactions_and_each_gets_its_own_answer(
        c: Container) -> None:
    before = c.inventory.lane_stats()
    # Every SKU a receipt of n + 1; SKU B-03 also a damage it cannot take (refused alone).
    adjustments = [Adjustment(sku, "wh", AdjustmentKind.RECEIVE, n + 1)
                   for n, sku in enumerate(SKUS)]
    adjustments.insert(5, Adjustment("B-03", "wh", AdjustmentKind.DAMAGE, 500))
    with counting(c.db) as statements:
        outcomes = await asyncio.gather(
            *(c.inventory.adjust(adj, ctx(n)) for n, adj in enumerate(adjustments)),
            return_exceptions=True)
    after = c.inventory.lane_stats()

    refused = outcomes.pop(5)
    assert isinstance(refused, StockRuleViolated)
    views = [o for o in outcomes if isinstance(o, StockView)]
    assert len(views) == len(SKUS)
    for n, (sku, view) in enumerate(zip(SKUS, views, strict=True)):
        assert (view.sku, view.totals.on_hand, view.version) == (sku, 10 + n + 1, 2)
        assert await c.inventory.stock(sku) == view
    batches = after["adjustment_batches"] - before["adjustment_batches"]
    assert after["adjustment_requests"] - before["adjustment_requests"] == len(adjustments)
    assert batches < len(adjustments) / 3, "adjustments that arrive together batch"
    assert after["adjustment_batch_retries"] == before["adjustment_batch_retries"]
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO LEDGER")]
    assert len(inserts) <= batches + 1  # one multi-row insert a batch, not one per request

    # Each request's events carry its own correlation id; the refused one wrote nothing.
    events = {e["data"]["sku"]: e for e in await stock_events(c) if e["sequence"] == 2}
    correlations = {n: adj.sku for n, adj in enumerate(adjustments)}
    for n, sku in correlations.items():
        if n != 5:
            assert events[sku]["correlationid"] == f"req-{n}"
    kinds = [e.kind for e in await c.inventory.ledger("B-03", 100)]
    assert kinds == ["receive", "receive"]
    assert (await c.inventory.audit()).problems == []


async def test_adjustments_of_one_sku_never_share_a_batch(c: Container) -> None:
    outcomes = await asyncio.gather(*(
        c.inventory.adjust(Adjustment("B-00", "wh", AdjustmentKind.RECEIVE, 1), ctx(n))
        for n in range(12)))
    # One version each, in arrival order, each answer the state right after its own change.
    assert [(v.version, v.totals.on_hand) for v in outcomes] == [
        (2 + n, 11 + n) for n in range(12)]
    entries = await c.inventory.ledger("B-00", 100)
    assert [e.version for e in entries] == list(range(1, 14))
    assert (await c.inventory.audit()).problems == []


async def test_a_transfer_refused_half_way_splits_its_batch_and_leaves_no_trace(
        c: Container) -> None:
    # Lot L1 at wh expires in January, at shop in February: moving it is refused on its second
    # leg (the destination's lot), after its first (out of wh) was applied in the transaction.
    await receive(c, "B-01", "wh", 3, "L1", date(2030, 1, 31))
    await receive(c, "B-01", "shop", 3, "L1", date(2030, 2, 28))
    before = c.inventory.lane_stats()
    transfer = Adjustment("B-01", "wh", AdjustmentKind.TRANSFER, 2, "L1", to_location="shop")
    others = [Adjustment(sku, "wh", AdjustmentKind.RECEIVE, 1) for sku in SKUS[2:12]]
    outcomes = await asyncio.gather(
        *(c.inventory.adjust(adj, ctx(n)) for n, adj in enumerate([*others[:5], transfer,
                                                                      *others[5:]])),
        return_exceptions=True)
    assert isinstance(outcomes.pop(5), StockRuleViolated)
    assert all(isinstance(o, StockView) and o.totals.on_hand == 11 for o in outcomes)
    assert c.inventory.lane_stats()["adjustment_batch_retries"] > before[
        "adjustment_batch_retries"]
    view = await c.inventory.stock("B-01")
    assert {lv.location: lv.buckets.on_hand for lv in view.levels} == {"wh": 13, "shop": 3}
    assert [e.kind for e in await c.inventory.ledger("B-01", 100)] == [
        "receive", "receive", "receive"]
    assert (await c.inventory.audit()).problems == []


async def test_transitions_that_arrive_together_share_a_transaction(c: Container) -> None:
    """Commits and releases of many reservations at once: batched, each answered alone (the
    same reservation twice: the second sees the first's outcome; an unknown one: 404)."""
    held = [await c.inventory.reserve(ReserveRequest([Line(sku, 2)]), ctx(n))
            for n, sku in enumerate(SKUS * 2)]
    before = c.inventory.lane_stats()
    commits = [c.inventory.commit(r.id, ctx(100 + n)) for n, r in enumerate(held[:30])]
    releases = [c.inventory.release(r.id, ctx(200 + n)) for n, r in enumerate(held[30:])]
    twice = c.inventory.release(held[0].id, ctx(300))
    unknown = c.inventory.commit("no-such-reservation", ctx(301))
    outcomes = await asyncio.gather(*commits, *releases, twice, unknown,
                                    return_exceptions=True)
    after = c.inventory.lane_stats()

    assert [o.status for o in outcomes[:40]] == (  # type: ignore[union-attr]
        [ReservationStatus.COMMITTED] * 30 + [ReservationStatus.RELEASED] * 10)
    assert isinstance(outcomes[40], InvalidTransition)  # already committed just before
    assert isinstance(outcomes[41], NotFound)
    batches = after["transition_batches"] - before["transition_batches"]
    assert after["transition_requests"] - before["transition_requests"] == 42
    assert batches < 42 / 3, "transitions that arrive together batch"
    for sku in SKUS:
        view = await c.inventory.stock(sku)
        n = SKUS.index(sku)
        committed = 2 * ((n < 30) + (n + 20 < 30))
        assert (view.totals.reserved, view.totals.committed) == (0, committed)
    assert (await c.inventory.audit()).problems == []
