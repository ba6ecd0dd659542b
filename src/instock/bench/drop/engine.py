"""In-process: a fresh database for the run, instock's services built on it, a SKU per
strategy, and (e) the drop lane: instock's own reservation path, `InventoryService.reserve`."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY

from instock.app import Container, build
from instock.bench.drop.gate import redis_gate
from instock.bench.drop.measure import CONFLICTS_METRIC, Check, Strategy
from instock.bench.drop.sql import LOCATION, ConditionalUpdate, ForUpdate, OccRetry, check
from instock.bench.local import scratch_database
from instock.catalog.model import Product, Variant
from instock.config import Settings, get_settings
from instock.inventory.errors import InsufficientStockConflict
from instock.inventory.model import Adjustment, AdjustmentKind, Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.inventory.service import InventoryService
from instock.migrate import upgrade
from instock.platform.db import Database
from instock.platform.entry_context import EntryContext

CTX = EntryContext(actor="bench:drop", reason="bench")
PER_REQUEST = {s.name: s for s in (ForUpdate, OccRetry, ConditionalUpdate)}


@dataclass
class Engine:
    container: Container  # instock as an API process would build it (the lane, the set-up)
    db: Database  # the raw strategies' own pool: `pool` connections
    pool: int
    redis_url: str | None
    gate_crash_after: int | None
    run_id: str

    async def stock(self, sku: str, units: int) -> None:
        """A product of one variant, `units` received at the bench location; all through the
        services, as a merchant would."""
        await self.container.catalog.create_product(Product(
            id=f"p-{sku}", title=f"Bench {sku}", brand="bench", category="bench",
            price=Decimal("1"), currency=self.container.settings.currency,
            variants=[Variant(sku)]))
        await self.receive(sku, units)

    async def receive(self, sku: str, units: int) -> None:
        await self.container.inventory.adjust(
            Adjustment(sku, LOCATION, AdjustmentKind.RECEIVE, units), CTX)

    async def open_pool(self) -> None:
        """Connect the raw strategies' pool up front, so no strategy's first requests pay for
        the connections."""
        async def touch() -> None:
            async with self.db.read() as conn:
                await conn.execute(sa.text("SELECT 1"))

        await asyncio.gather(*(touch() for _ in range(self.pool)))

    def strategy(self, name: str, sku: str, units: int) -> AbstractAsyncContextManager[Strategy]:
        if name in PER_REQUEST:
            return nullcontext(PER_REQUEST[name](self.db, sku, self.pool))
        if name == "redis_gate":
            assert self.redis_url is not None, "redis_gate needs --redis"
            return redis_gate(self.db, self.redis_url, sku, units, pool=self.pool,
                              run_id=self.run_id, crash_after=self.gate_crash_after)
        if name == "drop_lane":
            return drop_lane(self, sku)
        raise ValueError(f"unknown strategy {name!r}")


def settings_for(database_url: str, redis_url: str | None) -> Settings:
    """This configuration's settings on the scratch database, with no background work (no
    relay, sweeper or consumers: the lane is measured alone)."""
    base = get_settings()
    return base.model_copy(update={
        "database_url": database_url, "redis_url": redis_url, "bus_url": "memory://",
        "run_relay": False, "run_sweeper": False, "run_consumers": False,
        "migrate_on_start": False,
        # Tokens are not used in-process; a key of our own keeps build() from writing one.
        "jwt_secret": base.jwt_secret or secrets.token_urlsafe(32)})


@asynccontextmanager
async def open_engine(database: str, workdir: Path, *, pool: int, redis_url: str | None,
                      gate_crash_after: int | None) -> AsyncIterator[Engine]:
    """A new database on the backend (and server) `database` names, migrated; dropped after."""
    async with scratch_database(database, workdir, "instock_bench_drop") as url:
        await asyncio.to_thread(upgrade, url)
        container = build(settings_for(url, redis_url))
        db = Database(url, pool_size=pool)
        try:
            await container.inventory.create_location(LOCATION, "Bench warehouse", "warehouse")
            engine = Engine(container, db, pool, redis_url, gate_crash_after,
                            secrets.token_hex(4))
            await engine.open_pool()
            yield engine
        finally:
            await db.dispose()
            await container.close()


def lane_stats(inventory: InventoryService) -> dict[str, Any] | None:
    """The lane's own counters, when the service has them (a dict or a method returning one)."""
    stats = getattr(inventory, "lane_stats", None)
    if callable(stats):
        stats = stats()
    return dict(stats) if isinstance(stats, Mapping) else None


def version_conflicts() -> float:
    """The service's count of writes that lost a race, from its metrics in this process."""
    return REGISTRY.get_sample_value(CONFLICTS_METRIC) or 0.0


class Lane:
    """(e) instock's drop lane: every buyer calls `InventoryService.reserve` at once; how
    requests are combined is the service's business. A refusal is `InsufficientStockConflict`.
    Its conflicts are the lane's batch retries if it counts them, else the version conflicts
    the service's metrics counted meanwhile."""

    name = "drop_lane"

    def __init__(self, engine: Engine, sku: str) -> None:
        self.engine, self.sku = engine, sku
        self.inventory = engine.container.inventory
        self.before = lane_stats(self.inventory) or {}
        self.conflicts_before = version_conflicts()

    async def attempt(self, buyer: int) -> str | None:
        try:
            held = await self.inventory.reserve(
                ReserveRequest([Line(self.sku, 1)], channel="web", customer_id=f"buyer-{buyer}"),
                CTX)
        except InsufficientStockConflict:
            return None
        return held.id

    async def restock(self, units: int) -> None:
        await self.engine.receive(self.sku, units)

    async def settle(self) -> dict[str, Any]:
        stats = lane_stats(self.inventory)
        return {} if stats is None else {"lane_stats": stats}

    async def check(self, ids: list[str]) -> Check:
        # Through the raw strategies' pool, not the service: a second opinion.
        return await check(self.engine.db, self.sku, ids)

    def conflicts(self) -> int:
        now = lane_stats(self.inventory) or {}
        if "batch_retries" in now:
            return int(now["batch_retries"]) - int(self.before.get("batch_retries", 0))
        return round(version_conflicts() - self.conflicts_before)


@asynccontextmanager
async def drop_lane(engine: Engine, sku: str) -> AsyncIterator[Lane]:
    """The lane, warmed up first on a SKU of its own (first-call costs: caches, statements)."""
    warm = f"{sku}-warm"
    await engine.stock(warm, 1)
    await engine.container.inventory.reserve(ReserveRequest([Line(warm, 1)]), CTX)
    yield Lane(engine, sku)
