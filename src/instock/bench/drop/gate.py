"""(d) A Redis gate with write-behind: the pattern many flash-sale systems use.

A Lua script checks and decrements a Redis counter preloaded with the stock, atomically, and
the buyer is answered right after it: fast, because the database is not on the answer's
path. A write-behind task then drains the confirmed reservations to the database in batches
(one stock-level update and one multi-row insert per table per batch). Between the answer and
that commit a confirmation exists only in this process's memory: `--gate-crash-after N`
simulates the process dying right after its N-th answer (what the write-behind had not
committed is gone, later requests fail), and the run then shows those confirmations as `lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from instock.bench.drop.measure import Check, ProcessDied
from instock.bench.drop.sql import check, insert_holds, receive, take
from instock.platform.db import Database
from instock.platform.ids import new_id

GATE = """
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if left < wanted then return 0 end
redis.call('DECRBY', KEYS[1], wanted)
return 1
"""
BATCH = 1000  # confirmations per write-behind transaction, at most
DRAIN_TIMEOUT = 60.0  # after the buyers: how long the write-behind may take to catch up
DRAIN_POLL = 0.005


class RedisGate:
    name = "redis_gate"

    def __init__(self, db: Database, sku: str, client: aioredis.Redis, key: str,
                 crash_after: int | None) -> None:
        self.db, self.sku, self.client, self.key = db, sku, client, key
        self.crash_after = crash_after
        self.script = client.register_script(GATE)
        self.pending: list[tuple[str, int]] = []  # confirmed, not yet handed to a transaction
        self.wake = asyncio.Event()
        self.writing = False
        self.confirmed = self.written = self.batches = self.discarded = 0
        self.failures: Counter[str] = Counter()
        self.crashed_after: int | None = None
        self.writer = asyncio.create_task(self._write_behind())

    async def attempt(self, buyer: int) -> str | None:
        self._alive()
        admitted = await self.script(keys=[self.key], args=[1])
        self._alive()  # it died while this request was at Redis: no answer comes
        if not admitted:
            return None
        rid = new_id()
        self.pending.append((rid, buyer))
        self.wake.set()
        self.confirmed += 1
        if self.crash_after is not None and self.confirmed >= self.crash_after:
            self._crash()  # this answer still goes out: the process dies right after it
        return rid

    def _alive(self) -> None:
        if self.crashed_after is not None:
            raise ProcessDied(f"the gate's process died after {self.crashed_after} answers")

    def _crash(self) -> None:
        self.crashed_after = self.confirmed
        self.discarded = len(self.pending)
        self.pending.clear()
        self.wake.set()

    async def _write_behind(self) -> None:
        while self.crashed_after is None:
            await self.wake.wait()
            self.wake.clear()
            while self.pending and self.crashed_after is None:
                batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
                self.writing = True
                try:
                    await self._flush(batch)
                except ProcessDied:  # died before this batch committed: it is gone too
                    self.discarded += len(batch)
                    return
                except Exception as exc:  # the batch is lost; the check after the run says so
                    self.failures[type(exc).__name__] += 1
                finally:
                    self.writing = False

    async def _flush(self, batch: list[tuple[str, int]]) -> None:
        async with self.db.write() as conn:
            # No availability check: the gate decided. If it was wrong, the stock-level check
            # after the run shows reserved beyond on_hand.
            await conn.execute(take(self.sku, len(batch)))
            await insert_holds(conn, self.sku, batch)
            self._alive()  # a process that dies before COMMIT commits nothing
        self.written += len(batch)
        self.batches += 1

    async def restock(self, units: int) -> None:
        self._alive()
        await receive(self.db, self.sku, units)  # the database first: never admit unstocked
        await self.client.incrby(self.key, units)

    async def settle(self) -> dict[str, Any]:
        """Wait for the write-behind to drain what was confirmed (DRAIN_TIMEOUT at most)."""
        started = time.perf_counter()
        drained = True
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                if self.crashed_after is not None:  # the writer stops before its next COMMIT
                    await asyncio.gather(self.writer, return_exceptions=True)
                while (self.pending or self.writing) and self.crashed_after is None:
                    await asyncio.sleep(DRAIN_POLL)
        except TimeoutError:
            drained = False
        await self.stop()
        return {"write_behind_lag_s": round(time.perf_counter() - started, 3),
                "write_behind_drained": drained, "write_behind_batches": self.batches,
                "write_behind_written": self.written,
                "write_behind_discarded": self.discarded + len(self.pending),
                "write_behind_failures": dict(self.failures),
                "crashed_after": self.crashed_after}

    async def stop(self) -> None:
        self.writer.cancel()
        await asyncio.gather(self.writer, return_exceptions=True)

    async def check(self, ids: list[str]) -> Check:
        return await check(self.db, self.sku, ids)

    def conflicts(self) -> int:
        return 0  # the gate never retries: Redis runs one script at a time


@asynccontextmanager
async def redis_gate(db: Database, redis_url: str, sku: str, units: int, *, pool: int,
                     run_id: str, crash_after: int | None) -> AsyncIterator[RedisGate]:
    """The gate for `sku`, its counter preloaded with `units` under this run's own key
    (deleted afterwards); at most `pool` Redis connections, like the SQL strategies."""
    connections = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=pool,
                                                           timeout=None)
    client = aioredis.Redis(connection_pool=connections)
    key = f"instock:bench:drop:{run_id}:{sku}"
    try:
        await client.set(key, units)
        # Connected up front, so the first buyers do not pay for the connections.
        await asyncio.gather(*(client.ping() for _ in range(pool)))
        gate = RedisGate(db, sku, client, key, crash_after)
        try:
            yield gate
        finally:
            await gate.stop()
    finally:
        with contextlib.suppress(Exception):  # Redis may be what failed
            await client.delete(key)
        await client.aclose()
        await connections.aclose()
