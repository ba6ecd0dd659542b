"""Latency: how fast a committed change reaches a live client, per bus (see the package)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray

from instock.bench.buses import bus_label
from instock.bench.events.plan import ADJUST_PATH, DRAIN_TIMEOUT, LOCATION, WRITERS, Plan, seed
from instock.bench.events.receiver import receiver
from instock.bench.local import (
    HOST,
    Reporter,
    Server,
    admin_token,
    backend_of,
    open_loop,
    scratch_database,
    serve,
)
from instock.bench.wire import Connection, request_head


class Writer:
    """One keep-alive connection posting stock adjustments as JSON."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = Connection(HOST, port)
        self.head = request_head(HOST, port, "POST", ADJUST_PATH, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})

    async def post(self, body: bytes) -> tuple[int, dict[str, str], float]:
        """Status and headers of the answer, and when the request went out."""
        answer = await self.connection.send(self.head, body)
        return answer.status, answer.headers, answer.sent

    def close(self) -> None:
        self.connection.close()


Commit = tuple[str, int, float, float]  # sku, version, sent, answered
Write = Callable[[str], Awaitable[Commit]]


@asynccontextmanager
async def http_driver(server: Server) -> AsyncIterator[Write]:
    """Adjust stock over HTTP: a pool of raw keep-alive connections (httpx costs the bench
    more CPU per request than the server spends, and both share the machine)."""
    token = admin_token(server)
    pool: asyncio.LifoQueue[Writer] = asyncio.LifoQueue()
    writers = [Writer(server.port, token) for _ in range(WRITERS)]
    for writer in writers:
        pool.put_nowait(writer)

    async def write(sku: str) -> Commit:
        body = json.dumps({"sku": sku, "location": LOCATION, "kind": "receive",
                           "quantity": 1}).encode()
        writer = await pool.get()
        try:
            status, headers, sent = await writer.post(body)
            answered = time.monotonic()
        finally:
            pool.put_nowait(writer)
        if status != 200:
            raise WriteFailed(str(status))
        return sku, int(headers["etag"].strip('"')), sent, answered

    try:
        yield write
    finally:
        for writer in writers:
            writer.close()


@asynccontextmanager
async def service_driver(server: Server) -> AsyncIterator[Write]:
    """Adjust stock through InventoryService in this process, on the server's database."""
    from instock.app import build
    from instock.config import Settings
    from instock.inventory.model import Adjustment, AdjustmentKind
    from instock.platform.entry_context import EntryContext

    settings = Settings(database_url=server.database_url, jwt_secret=server.secret,
                        bus_url="memory://", run_relay=False, run_sweeper=False,
                        run_consumers=False, migrate_on_start=False)
    container = build(settings)
    context = EntryContext(actor="bench:events", reason="bench")
    gate = asyncio.Semaphore(WRITERS)  # as many in flight as the HTTP driver has connections

    async def write(sku: str) -> Commit:
        async with gate:
            sent = time.monotonic()
            view = await container.inventory.adjust(
                Adjustment(sku, LOCATION, AdjustmentKind.RECEIVE, 1), context)
            return sku, view.version, sent, time.monotonic()

    try:
        yield write
    finally:
        await container.close()


@asynccontextmanager
async def outbox_driver(server: Server) -> AsyncIterator[Write]:
    """Commit only what the push path sees: the SKU's version bump and its stock_changed
    event, in one transaction from this process (on PostgreSQL its NOTIFY wakes the relay)."""
    from instock.inventory import store
    from instock.platform.bus import outbox
    from instock.platform.db import Database

    db = Database(server.database_url, pool_size=10)
    gate = asyncio.Semaphore(WRITERS)

    async def write(sku: str) -> Commit:
        async with gate:
            sent = time.monotonic()
            async with db.write() as conn:
                version = (await store.bump_items(conn, [sku]))[sku]
                await outbox.add(conn, [_stock_changed(sku, version)])
            return sku, version, sent, time.monotonic()

    try:
        yield write
    finally:
        await db.dispose()


def _stock_changed(sku: str, version: int) -> Any:
    """A valid stock_changed event for `sku` at `version` (the stock itself is not touched)."""
    from instock.inventory.events import StockChanged, StockTotals

    buckets = {"on_hand": 1000, "reserved": 0, "committed": 0, "safety_stock": 0,
               "unsellable": 0, "quarantined": 0, "incoming": 0}
    return StockChanged(sku=sku, sku_version=version, location=LOCATION, version=version,
                        available=1000, reason="receive",
                        totals=StockTotals(available=1000, **buckets), **buckets)


DRIVERS = {"http": http_driver, "service": service_driver, "outbox": outbox_driver}


class WriteFailed(Exception):
    """A write the server refused (its status is the message)."""


@dataclass
class Drive:
    commits: list[Commit] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    last_sent: float = 0.0
    finished: float = 0.0
    late_ms: float = 0.0  # the worst delay between a change's due time and its start
    offered: int = 0


async def drive(write: Write, skus: list[str], rate: float, seconds: float,
                advance: Callable[[int], None]) -> Drive:
    """Open loop: change i is started at t0 + i/rate, to SKU i mod N, however slow earlier
    ones are; every change runs as its own task."""
    result = Drive()

    async def one(i: int) -> None:
        try:
            result.commits.append(await write(skus[i % len(skus)]))
        except WriteFailed as exc:
            result.errors[f"status {exc}"] += 1
        except Exception as exc:  # counted, not fatal: errors are part of the result
            result.errors[type(exc).__name__] += 1
        advance(1)

    schedule = await open_loop(rate, seconds, lambda i, _due: one(i), DRAIN_TIMEOUT)
    result.started, result.last_sent = schedule.started, schedule.last_sent
    result.late_ms, result.offered = schedule.late_ms, schedule.offered
    if schedule.unfinished:
        result.errors["unfinished"] = schedule.unfinished
    result.finished = max((c[3] for c in result.commits), default=result.started)
    return result


# -- latency -----------------------------------------------------------------------------------


def newest_versions(commits: list[Commit]) -> dict[str, int]:
    newest: dict[str, int] = {}
    for sku, version, _, _ in commits:
        newest[sku] = max(newest.get(sku, 0), version)
    return newest


def quantiles(ms: NDArray[np.float64]) -> dict[str, float | None]:
    if not len(ms):
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "max_ms": round(float(ms.max()), 2)}


Samples = NDArray[np.float64]


def match(commits: list[Commit], arrivals: list[tuple[str, int, float]],
          stamps: dict[tuple[str, int], float]
          ) -> tuple[dict[str, Any], Samples, Samples, Samples]:
    """Pair commits with arrivals by (sku, version): counts, and latencies in ms from the
    answer, from the send and from the commit stamp (`stamps`, wall time).

    Two writes to one SKU racing can both read back the later version (the answer re-reads the
    stock after commit): that version then keeps the earliest send and answer (both bound its
    commit), and the version neither reported is simply not timed."""
    committed: dict[tuple[str, int], tuple[float, float]] = {}
    for sku, version, sent, answered in commits:
        seen = committed.get((sku, version))
        committed[(sku, version)] = (sent, answered) if seen is None else \
            (min(seen[0], sent), min(seen[1], answered))
    first: dict[tuple[str, int], float] = {}
    newest: dict[str, int] = {}
    for sku, version, t in arrivals:
        first.setdefault((sku, version), t)
        newest[sku] = max(newest.get(sku, 0), version)
    wall = time.time() - time.monotonic()  # one offset for the machine
    from_answer, from_send, from_commit = [], [], []
    coalesced = lost = 0
    for (sku, version), (sent, answered) in committed.items():
        arrived = first.get((sku, version))
        if arrived is not None:
            from_answer.append((arrived - answered) * 1000)
            from_send.append((arrived - sent) * 1000)
            if (sku, version) in stamps:
                from_commit.append((arrived + wall - stamps[(sku, version)]) * 1000)
        elif newest.get(sku, 0) > version:
            coalesced += 1
        else:
            lost += 1
    counts = {"received": len(from_answer), "coalesced": coalesced, "lost": lost,
              "versions_reported_twice": len(commits) - len(committed)}
    return (counts, np.array(from_answer, dtype=np.float64),
            np.array(from_send, dtype=np.float64), np.array(from_commit, dtype=np.float64))


async def commit_stamps(database_url: str) -> dict[tuple[str, int], float]:
    """(sku, version) -> the wall time its stock_changed row was written (inside the commit)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from instock.platform.bus.outbox import outbox

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(outbox.c.subject, outbox.c.sequence, outbox.c.created_at)
                .where(outbox.c.type == "inventory.stock_changed.v1"))).all()
    finally:
        await engine.dispose()
    stamps: dict[tuple[str, int], float] = {}
    for subject, sequence, created in rows:
        if sequence is not None:
            key = (subject, int(sequence))
            stamps[key] = min(stamps.get(key, math.inf), created.timestamp())
    return stamps


async def latency(plan: Plan, bus_url: str, workdir: Path, report: Reporter
                  ) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """One bus: a fresh database and server, the receiver, the drive; the bus's JSON row and
    the latency samples to draw (ms from the commit stamp, the closest estimate; from the
    answer, which the push often beats, only if the stamps are missing)."""
    label = bus_label(bus_url)
    report.note(f"{label}: starting a server on a fresh {backend_of(plan.database)} database")
    async with scratch_database(plan.database, workdir, "instock_bench") as db_url, \
            serve(db_url, bus_url, workdir, consumers=plan.consumers) as server:
        skus = await seed(server, plan.skus)
        driver = DRIVERS[plan.driver]
        async with receiver(server.port, skus, workdir) as finish, driver(server) as write:
            advance = report.task(f"{label}: {plan.rate:g} changes/s",
                                  max(1, round(plan.rate * plan.seconds)))
            cpu = server.cpu_seconds()
            result = await drive(write, skus, plan.rate, plan.seconds, advance)
            cpu = server.cpu_seconds() - cpu
            arrivals = await finish(newest_versions(result.commits))
        stamps = await commit_stamps(db_url)
    counts, from_answer, from_send, from_commit = match(result.commits, arrivals, stamps)
    elapsed = max(result.finished - result.started, 1e-9)
    row = {"bus": label, "driver": plan.driver, "target_rate": plan.rate,
           "offered_rate": round(result.offered
                                 / max(result.last_sent - result.started, 1e-9), 1),
           "achieved_rate": round(len(result.commits) / elapsed, 1),
           "changes": len(result.commits), "errors": sum(result.errors.values()),
           "error_kinds": dict(result.errors), **counts, **quantiles(from_answer),
           "from_send": quantiles(from_send), "from_commit": quantiles(from_commit),
           "write_ms": quantiles(np.array([(c[3] - c[2]) * 1000 for c in result.commits])),
           "schedule_late_max_ms": round(result.late_ms, 1),
           # Near 100 (one core: the GIL) means the server process itself is the limit.
           "server_cpu_percent": round(100 * cpu / elapsed, 1)}
    return row, from_commit if len(from_commit) else from_answer
