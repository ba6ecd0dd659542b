"""The per-request strategies, in raw SQL (SQLAlchemy Core) on instock's own tables.

Each confirmed request does what a reservation needs at the least: decide, add one to the
stock level's `reserved` (and its `version`), insert the reservation with its line and its
allocation, commit. Unlike instock's own path they write no ledger entry and no event, so
they are measured doing less work than the drop lane, not more.

Each holds at most `--pool` connections at once: a request waits for one (that wait is part
of its latency), as it would for a server's connection pool.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.bench.drop.measure import Check
from instock.inventory.store import (
    reservation_allocations,
    reservation_lines,
    reservations,
    stock_levels,
)
from instock.platform.db import Database, utcnow
from instock.platform.ids import new_id
from instock.platform.retry import retry

LOCATION = "bench-wh"
HOLD = timedelta(minutes=15)  # no sweeper runs during a bench: holds only need to outlive it
OCC_ATTEMPTS = 100  # then the request is answered with an error
CHECK_CHUNK = 500  # ids per lookup (SQLite caps bound parameters)

LEVEL = stock_levels.c
AVAILABLE = LEVEL.on_hand - LEVEL.reserved - LEVEL.committed - LEVEL.unsellable \
    - LEVEL.safety_stock


def at_level(sku: str) -> sa.ColumnElement[bool]:
    return sa.and_(LEVEL.sku == sku, LEVEL.location == LOCATION)


def take(sku: str, units: int) -> sa.Update:
    """Reserve `units` more of the SKU's stock level, unconditionally (callers add WHEREs)."""
    return stock_levels.update().where(at_level(sku)).values(
        reserved=LEVEL.reserved + units, version=LEVEL.version + 1)


async def insert_holds(conn: AsyncConnection, sku: str, holds: list[tuple[str, int]]) -> None:
    """Active reservations of one unit each: (reservation id, buyer) pairs, one statement per
    table whatever their number."""
    now = utcnow()
    await conn.execute(reservations.insert(), [
        {"id": rid, "channel": "web", "customer_id": f"buyer-{buyer}", "status": "active",
         "created_at": now, "expires_at": now + HOLD, "updated_at": now}
        for rid, buyer in holds])
    await conn.execute(reservation_lines.insert(), [
        {"reservation_id": rid, "sku": sku, "quantity": 1} for rid, _ in holds])
    await conn.execute(reservation_allocations.insert(), [
        {"reservation_id": rid, "position": 0, "sku": sku, "location": LOCATION, "lot": None,
         "quantity": 1} for rid, _ in holds])


async def hold_one(conn: AsyncConnection, sku: str, buyer: int) -> str:
    rid = new_id()
    await insert_holds(conn, sku, [(rid, buyer)])
    return rid


async def receive(db: Database, sku: str, units: int) -> None:
    """The raw strategies' restock: they keep no ledger, so neither does their restock."""
    async with db.write() as conn:
        await conn.execute(stock_levels.update().where(at_level(sku)).values(
            on_hand=LEVEL.on_hand + units, version=LEVEL.version + 1))


async def check(db: Database, sku: str, ids: list[str]) -> Check:
    """How many of `ids` the reservations table holds, and the SKU's stock now."""
    found: set[str] = set()
    async with db.read() as conn:
        unique = sorted(set(ids))
        for start in range(0, len(unique), CHECK_CHUNK):
            chunk = unique[start:start + CHECK_CHUNK]
            rows = await conn.execute(sa.select(reservations.c.id).where(
                reservations.c.id.in_(chunk)))
            found.update(row.id for row in rows)
        totals = (await conn.execute(sa.select(
            sa.func.coalesce(sa.func.sum(LEVEL.on_hand), 0).label("on_hand"),
            sa.func.coalesce(sa.func.sum(LEVEL.reserved), 0).label("reserved"))
            .where(LEVEL.sku == sku))).one()
    return Check(len(found), int(totals.on_hand), int(totals.reserved))


class PerRequest:
    """What the three per-request strategies share: the pool gate, restock, the check."""

    name = ""

    def __init__(self, db: Database, sku: str, pool: int) -> None:
        self.db, self.sku, self.pool = db, sku, pool
        self.gate = asyncio.Semaphore(pool)
        self.stale = 0  # version checks that failed (occ_retry only)

    async def attempt(self, buyer: int) -> str | None:
        async with self.gate:
            return await self.decide(buyer)

    async def decide(self, buyer: int) -> str | None:
        raise NotImplementedError

    async def restock(self, units: int) -> None:
        # Not through the gate: the restock is the warehouse's, it does not queue behind the
        # buyers for their pool (the pool's overflow has room for it).
        await receive(self.db, self.sku, units)

    async def settle(self) -> dict[str, Any]:
        return {"pool": self.pool}

    async def check(self, ids: list[str]) -> Check:
        return await check(self.db, self.sku, ids)

    def conflicts(self) -> int:
        return self.stale


class ForUpdate(PerRequest):
    """(a) Lock the row, look, write. On SQLite, which has no row locks, the write transaction
    itself is the lock (BEGIN IMMEDIATE, see `Database.write`)."""

    name = "for_update"

    async def decide(self, buyer: int) -> str | None:
        async with self.db.write() as conn:
            available = await conn.scalar(
                sa.select(AVAILABLE).where(at_level(self.sku)).with_for_update())
            if available is None or available < 1:
                return None
            await conn.execute(take(self.sku, 1))
            return await hold_one(conn, self.sku, buyer)


class Stale(Exception):
    """The version read is no longer the row's: another buyer wrote in between."""


class OccRetry(PerRequest):
    """(b) Read without a lock, write only if the version is still the one read; else back off
    (jittered) and try again, up to OCC_ATTEMPTS times. The connection is given back between
    tries, so a retry queues for the pool like any request."""

    name = "occ_retry"

    async def attempt(self, buyer: int) -> str | None:
        return await retry(lambda: self._try(buyer), retry_on=(Stale,), attempts=OCC_ATTEMPTS,
                           base_delay=0.001, max_delay=0.05)

    async def _try(self, buyer: int) -> str | None:
        async with self.gate:
            async with self.db.read() as conn:
                seen = (await conn.execute(sa.select(AVAILABLE.label("available"),
                                                     LEVEL.version)
                                           .where(at_level(self.sku)))).one()
            if seen.available < 1:
                return None
            async with self.db.write() as conn:
                written = await conn.execute(take(self.sku, 1).where(
                    LEVEL.version == seen.version))
                if written.rowcount == 1:
                    return await hold_one(conn, self.sku, buyer)
        self.stale += 1
        raise Stale(f"{self.sku} moved past version {seen.version}")


class ConditionalUpdate(PerRequest):
    """(c) One UPDATE … WHERE available >= 1 RETURNING decides and writes at once; the row
    lock it takes is held only until COMMIT."""

    name = "conditional_update"

    async def decide(self, buyer: int) -> str | None:
        async with self.db.write() as conn:
            taken = (await conn.execute(take(self.sku, 1).where(AVAILABLE >= 1)
                                        .returning(LEVEL.version))).first()
            if taken is None:
                return None
            return await hold_one(conn, self.sku, buyer)
