"""The outbox relay: committed changes reach the bus in order, rolled-back ones never, once led."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from instock.app import Container
from instock.inventory.model import Adjustment, AdjustmentKind
from instock.platform.bus import Envelope
from instock.platform.bus.outbox import outbox
from instock.platform.errors import InstockError
from tests.integration.helpers import CTX, stocked


@contextlib.asynccontextmanager
async def running(*work: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w) for w in work]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def collect(c: Container, group: str, count: int, timeout: float = 20.0) -> list[Envelope]:
    seen: list[Envelope] = []

    async def take() -> None:
        async for delivery in c.bus.consume(group):
            seen.append(delivery.envelope)
            await delivery.ack()
            if len(seen) >= count:
                return

    await asyncio.wait_for(take(), timeout)
    return seen


async def outbox_rows(c: Container, published: bool | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(outbox)
    if published is not None:
        column = outbox.c.published_at
        query = query.where(column.is_not(None) if published else column.is_(None))
    async with c.db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def all_published(c: Container, timeout: float = 10.0) -> None:
    async def drained() -> None:
        while await outbox_rows(c, published=False):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(drained(), timeout)


async def test_committed_changes_reach_the_bus_in_order_and_rolled_back_ones_never(
        container: Container) -> None:
    await stocked(container, "R-1", 10)
    async with running(container.relay().run()):
        for n in range(1, 6):
            await container.inventory.adjust(
                Adjustment("R-1", "wh", AdjustmentKind.RECEIVE, n), CTX)
        with pytest.raises(InstockError):  # more damage than stock: refused, rolled back
            await container.inventory.adjust(
                Adjustment("R-1", "wh", AdjustmentKind.DAMAGE, 10_000), CTX)
        events = await collect(container, "test", await outbox_rows(container))
        # The relay marks rows published just after the bus took them: give it that moment
        # (stopped in between, it would publish them again: at-least-once, not a loss).
        await all_published(container)
    changes = [e for e in events if e["type"] == "inventory.stock_changed.v1"]
    assert [e["data"]["on_hand"] for e in changes] == [10, 11, 13, 16, 20, 25]
    sequences = [e["sequence"] for e in changes]
    assert sequences == sorted(sequences) and len(set(sequences)) == 6
    assert all(e["subject"] == "R-1" and e["specversion"] == "1.0" for e in changes)


async def test_the_relay_wakes_on_commit_rather_than_polling(container: Container) -> None:
    await stocked(container, "R-2", 1)
    relay = container.relay()
    async with running(relay.run()):
        await collect(container, "warmup", await outbox_rows(container))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await container.inventory.adjust(Adjustment("R-2", "wh", AdjustmentKind.RECEIVE, 1), CTX)
        [event] = [e for e in await collect(container, "warmup", 1)]
    # The relay's safety-net poll is 1 s; a woken relay is far quicker than that.
    assert event["data"]["on_hand"] == 2
    assert loop.time() - started < 0.9


async def test_only_one_relay_leads_and_another_takes_over_when_it_stops(
        container: Container) -> None:
    await stocked(container, "R-3", 1)
    first, second = container.relay(), container.relay()
    first_task = asyncio.create_task(first.run())
    await collect(container, "g", await outbox_rows(container))
    async with running(second.run()):
        await asyncio.sleep(0.3)
        first_task.cancel()  # the leader goes away: the stand-by must take over
        with contextlib.suppress(asyncio.CancelledError):
            await first_task
        await container.inventory.adjust(Adjustment("R-3", "wh", AdjustmentKind.RECEIVE, 4), CTX)
        [event] = await collect(container, "g", 1)
    assert event["data"]["on_hand"] == 5


async def test_published_rows_are_deleted_after_the_retention_period(
        container: Container) -> None:
    await stocked(container, "R-4", 3)
    relay = container.relay()
    while await relay.publish_pending():
        pass
    assert await outbox_rows(container, published=True) > 0
    assert await relay.cleanup() == 0  # retention not reached yet
    relay.retention = timedelta(0)
    assert await relay.cleanup() > 0
    assert await outbox_rows(container) == 0
