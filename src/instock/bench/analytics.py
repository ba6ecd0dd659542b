"""`instock bench analytics`: how fresh the facts are under a stream of sales, what a SKU's
measures cost to read with a year of hourly facts behind them, and what a rebuild from the
ledger costs.

- freshness, two ways. `through_service`: sales (a reservation and its commit, through the
  inventory service) offered at a fixed rate over many SKUs while the relay and the analytics
  consumer run in the same process, as an embedded server runs them; one process cannot make
  1,000 sales a second on this machine, so this shows the whole path at what it reaches.
  `bulk_ledger`: the sales written every 10 ms as the ledger rows, reservations and stock
  events a group commit writes (no inventory service), at the full rate: what the relay and the
  analytics consumer keep up with. Every 20 ms the facts' units sold are read; each sale's lag
  is from its commit to the first reading that counts it.
- read: one SKU with a year of hourly facts (two channels) and a stock-out a week; the
  service's read, timed.
- rebuild: a ledger of `--skus` SKUs over a year, written in bulk (a receipt a month and a sale
  every `--sale-every-days`), then `rebuild` of the whole year, timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from instock.analytics import store as analytics_store
from instock.analytics.model import ALL_LOCATIONS, NO_CHANNEL, FactKey, Level, Period
from instock.app import Container, build
from instock.bench.drop.engine import settings_for
from instock.bench.local import (
    Reporter,
    backend_of,
    logs_to_stderr,
    open_loop,
    scratch_database,
)
from instock.bench.reconcile import seed
from instock.inventory import store as inventory_store
from instock.inventory.events import StockChanged, StockTotals
from instock.inventory.model import Adjustment, AdjustmentKind, Buckets, Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.migrate import upgrade
from instock.platform.bus import outbox
from instock.platform.db import insert_rows
from instock.platform.entry_context import EntryContext

CTX = EntryContext("bench:analytics", "bench")
ZERO_BUCKETS = dict.fromkeys(Buckets().as_dict(), 0)


def unhashed_entry(sku: str, location: str, version: int, kind: str, delta: dict[str, int],
                   reference: str | None, at: datetime, ctx: EntryContext = CTX
                   ) -> dict[str, Any]:
    """A ledger row as the inventory service writes one, its hash chain left empty: history
    written in bulk, faster (or further back in time) than the service can (benches, tests)."""
    return {"sku": sku, "location": location, "version": version, "kind": kind,
            **ZERO_BUCKETS, **delta, "lot": None, "lot_expires_on": None, "actor": ctx.actor,
            "reason": ctx.reason, "correlation_id": None, "idempotency_key": None,
            "reference": reference, "at": at, "prev_hash": "", "hash": ""}


def committed_hold(reservation_id: str, channel: str, at: datetime,
                   expires_at: datetime) -> dict[str, Any]:
    """A reservation row, committed: what an `unhashed_entry`'s reference names."""
    return {"id": reservation_id, "channel": channel, "customer_id": None,
            "status": "committed", "created_at": at, "expires_at": expires_at,
            "updated_at": at}
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@dataclass(frozen=True)
class Plan:
    database: str
    workdir: Path
    rate: float  # sales offered per second, written in bulk
    service_rate: float  # sales offered per second through the inventory service
    seconds: float
    skus: int  # SKUs the sales are spread over
    reads: int
    rebuild_skus: int
    sale_every_days: float


def percentiles(values_ms: list[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    found = np.percentile(np.array(values_ms), [50, 95, 99, 100])
    return dict(zip(("p50", "p95", "p99", "max"), (round(float(v), 2) for v in found),
                    strict=True))


async def freshness(c: Container, plan: Plan, reporter: Reporter) -> tuple[dict[str, Any],
                                                                           list[float]]:
    """Real sales through the inventory service, offered at `plan.service_rate`."""
    skus = await seed(c, plan.skus, advance=reporter.task(f"seeding {plan.skus} SKUs",
                                                           plan.skus))
    for sku in skus:  # a unit each was seeded; enough for every sale
        await c.inventory.adjust(Adjustment(sku, "wh", AdjustmentKind.RECEIVE, 1_000_000), CTX)
    committed: list[float] = []  # monotonic commit times, in order of commit
    failed = [0]

    async def sale(i: int, _due: float) -> None:
        try:
            held = await c.inventory.reserve(ReserveRequest([Line(skus[i % len(skus)], 1)]), CTX)
            await c.inventory.commit(held.id, CTX)
        except Exception:  # counted, not raised: the open loop goes on
            failed[0] += 1
            return
        committed.append(time.monotonic())

    rate = plan.service_rate
    reporter.note(f"offering {rate:g} sales/s through the service for {plan.seconds:g} s")
    async with watching(c) as seen:
        started = time.monotonic()
        schedule = await open_loop(rate, plan.seconds, sale, drain=30,
                                   sent=reporter.task("sales", round(rate * plan.seconds)))
        elapsed = time.monotonic() - started
        await caught_up(seen, len(committed))
    lags = lags_ms(sorted(committed), seen)
    return {"offered_per_second": rate, "seconds": plan.seconds, "skus": plan.skus,
            "sales": len(committed), "failed": failed[0],
            "achieved_per_second": round(len(committed) / elapsed, 1),
            "sender_late_ms": round(schedule.late_ms, 1),
            "counted_in_facts": seen[-1][1] if seen else 0,
            "lag_ms": percentiles(lags)}, lags


@contextlib.asynccontextmanager
async def watching(c: Container) -> Any:
    """The relay and the analytics consumer running, and the facts' units sold read every
    20 ms: yields the readings, (monotonic time, units sold since the start)."""
    async with c.db.read() as conn:
        baseline = await _sold(conn)
    seen: list[tuple[float, int]] = []
    workers = [asyncio.create_task(c.relay().run()),
               asyncio.create_task(c.consumer("analytics").run())]
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            async with c.db.read() as conn:
                seen.append((time.monotonic(), await _sold(conn) - baseline))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        stop.set()
        await watcher
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def caught_up(seen: list[tuple[float, int]], sales: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (not seen or seen[-1][1] < sales) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def bulk_freshness(c: Container, plan: Plan, reporter: Reporter
                         ) -> tuple[dict[str, Any], list[float]]:
    """`plan.rate` sales a second written as a group commit writes them, every 10 ms: the
    ledger rows (a reservation and its commit), the reservations, one stock event per SKU."""
    await c.inventory.create_location("wh", "wh", "warehouse")
    skus = [f"BL-{i:05d}" for i in range(plan.skus)]
    versions = dict.fromkeys(skus, 0)
    committed: list[float] = []
    per_tick, ticks = plan.rate / 100, round(plan.seconds * 100)
    tick = reporter.task("bulk sales", round(plan.rate * plan.seconds))
    made = 0
    async with watching(c) as seen:
        started = time.monotonic()
        for n in range(ticks):
            due = started + n / 100
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            count = round((n + 1) * per_tick) - round(n * per_tick)
            ledger_rows, held, events = [], [], {}
            now = datetime.now(UTC)
            for i in range(made, made + count):
                sku = skus[i % len(skus)]
                rid = f"bl-{i:08d}"
                held.append(committed_hold(rid, "web", now, now + HOUR))
                for kind, delta in (("reserve", {"reserved": 1}),
                                    ("commit", {"reserved": -1, "committed": 1})):
                    versions[sku] += 1
                    ledger_rows.append(unhashed_entry(sku, "wh", versions[sku], kind, delta,
                                                      rid, now))
                events[sku] = _stock_event(sku, versions[sku])
            async with c.db.write() as conn:
                await insert_rows(conn, inventory_store.reservations, held)
                await insert_rows(conn, inventory_store.ledger, ledger_rows)
                await outbox.add(conn, events.values())
            committed += [time.monotonic()] * count
            made += count
            tick(count)
        elapsed = time.monotonic() - started
        await caught_up(seen, made)
    lags = lags_ms(committed, seen)
    return {"offered_per_second": plan.rate, "seconds": plan.seconds, "skus": plan.skus,
            "sales": made, "achieved_per_second": round(made / elapsed, 1),
            "counted_in_facts": seen[-1][1] if seen else 0,
            "lag_ms": percentiles(lags)}, lags


def _stock_event(sku: str, version: int) -> StockChanged:
    buckets = dict.fromkeys(("on_hand", "reserved", "committed", "safety_stock", "unsellable",
                             "quarantined", "incoming", "available"), 0)
    return StockChanged(sku=sku, sku_version=version, location="wh", version=version,
                        reason="commit", totals=StockTotals(**buckets), **buckets)


def lags_ms(committed: list[float], seen: list[tuple[float, int]]) -> list[float]:
    """Each sale's lag: from its commit to the first reading whose count includes it (the
    k-th sale is in a reading that counts at least k)."""
    lags, reading = [], 0
    for k, at in enumerate(committed, start=1):
        while reading < len(seen) and (seen[reading][1] < k or seen[reading][0] < at):
            reading += 1
        if reading == len(seen):
            break
        lags.append((seen[reading][0] - at) * 1000)
    return lags


async def _sold(conn: Any) -> int:
    facts = analytics_store.facts
    return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(facts.c.sold), 0))
                                   )).scalar_one())


async def read_cost(c: Container, plan: Plan, reporter: Reporter) -> dict[str, Any]:
    """A SKU with a year of hourly facts: the service's read, timed `plan.reads` times."""
    sku, now = "YEAR-1", datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = now - 365 * DAY
    hours = [first + i * HOUR for i in range(365 * 24)]
    rng = np.random.default_rng(21)
    facts = {FactKey(sku, channel, "wh", hour): {"sold": int(n), "reserved": int(n)}
             for channel in ("web", "app") for hour, n in zip(
                 hours, rng.poisson(0.4, len(hours)), strict=True)}
    facts |= {FactKey(sku, NO_CHANNEL, ALL_LOCATIONS, hour): {"minutes_in_stock": 60}
              for hour in hours}
    periods = [Period(sku, first + i * 7 * DAY, first + i * 7 * DAY + 6 * DAY, 100)
               for i in range(52)] + [Period(sku, now - DAY, None, 100)]
    reporter.note(f"writing a year of hourly facts ({len(facts)} rows) for one SKU")
    async with c.db.write() as conn:
        await c.analytics.partitions.ensure(conn, {analytics_store.month_of(h) for h in hours})
        await analytics_store.add_facts(conn, facts)
        await analytics_store.save_periods(conn, periods)
        await analytics_store.save_levels(conn, {(sku, "wh"): Level(version=1, on_hand=40)})
    timings = []
    tick = reporter.task("reads", plan.reads)
    for _ in range(plan.reads):
        started = time.perf_counter()
        await c.analytics.sku(sku)
        timings.append((time.perf_counter() - started) * 1000)
        tick(1)
    return {"fact_rows": len(facts), "reads": plan.reads, "ms": percentiles(timings)}


async def seed_year(c: Container, skus: int, sale_every_days: float, reporter: Reporter
                    ) -> tuple[int, int]:
    """A year of ledger for `skus` SKUs at one location, written in bulk: 30 units received
    on the first of each month, and a sale (a web or app reservation, then its commit a
    minute later) every `sale_every_days`, with the reservations they name. Returns (ledger
    entries, reservations)."""
    await c.inventory.create_location("wh", "wh", "warehouse")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 365 * DAY
    sales = int(365 / sale_every_days)
    tick = reporter.task(f"writing a year of ledger for {skus} SKUs", skus)
    entries = reservations = 0
    for first in range(0, skus, 50):
        ledger_rows: list[dict[str, Any]] = []
        held_rows: list[dict[str, Any]] = []
        levels = []
        for i in range(first, min(skus, first + 50)):
            sku = f"YR-{i:06d}"
            moves: list[tuple[datetime, str, dict[str, int], str | None]] = [
                (start + m * 30 * DAY, "receive", {"on_hand": 30}, None) for m in range(12)]
            for n in range(sales):
                at = start + n * sale_every_days * DAY + timedelta(minutes=i % 1440)
                rid = f"{sku}-{n:05d}"
                held_rows.append(committed_hold(rid, "web" if n % 3 else "app", at, at + HOUR))
                moves.append((at, "reserve", {"reserved": 1}, rid))
                moves.append((at + timedelta(minutes=1), "commit",
                              {"reserved": -1, "committed": 1}, rid))
            moves.sort(key=lambda m: m[0])
            totals = dict(ZERO_BUCKETS)
            for version, (at, kind, delta, ref) in enumerate(moves, start=1):
                for bucket, value in delta.items():
                    totals[bucket] += value
                ledger_rows.append(unhashed_entry(sku, "wh", version, kind, delta, ref, at))
            levels.append({"sku": sku, "location": "wh", **totals, "version": len(moves),
                           "last_hash": ""})
        async with c.db.write() as conn:
            await insert_rows(conn, inventory_store.items,
                              [{"sku": lv["sku"], "version": lv["version"]} for lv in levels])
            await insert_rows(conn, inventory_store.stock_levels, levels)
            await insert_rows(conn, inventory_store.reservations, held_rows)
            await insert_rows(conn, inventory_store.ledger, ledger_rows)
        entries += len(ledger_rows)
        reservations += len(held_rows)
        tick(len(levels))
    return entries, reservations


async def rebuild_cost(c: Container, plan: Plan, reporter: Reporter) -> dict[str, Any]:
    entries, reservations = await seed_year(c, plan.rebuild_skus, plan.sale_every_days,
                                            reporter)
    tick = reporter.task("rebuilding a year", plan.rebuild_skus)
    done = [0]

    def progress(stage: str, count: int, _total: int | None) -> None:
        if stage == "ledger":
            tick(count - done[0])
            done[0] = count

    started = time.perf_counter()
    report = await c.analytics.rebuild(datetime.now(UTC) - 366 * DAY, progress)
    seconds = time.perf_counter() - started
    return {"skus": plan.rebuild_skus, "ledger_entries": entries,
            "reservations": reservations, "seconds": round(seconds, 1),
            "entries_per_second": round(entries / seconds), "fact_rows": report["fact_rows"]}


async def run(plan: Plan, reporter: Reporter) -> dict[str, Any]:
    """Freshness, read and rebuild, each on its own scratch database."""
    logs_to_stderr()  # stdout holds only the JSON (the relay logs as it starts)
    out: dict[str, Any] = {"database": backend_of(plan.database), "freshness": {}}
    async with _container(plan, "fresh") as c:
        out["freshness"]["through_service"], _ = await freshness(c, plan, reporter)
    async with _container(plan, "bulk") as c:
        out["freshness"]["bulk_ledger"], lags = await bulk_freshness(c, plan, reporter)
    async with _container(plan, "read") as c:
        out["read"] = await read_cost(c, plan, reporter)
    if plan.rebuild_skus:
        async with _container(plan, "rebuild") as c:
            out["rebuild"] = await rebuild_cost(c, plan, reporter)
    out["lags_ms"] = lags
    return out


@contextlib.asynccontextmanager
async def _container(plan: Plan, name: str) -> Any:
    async with scratch_database(plan.database, plan.workdir,
                                f"instock_bench_analytics_{name}") as url:
        await asyncio.to_thread(upgrade, url)
        container = build(settings_for(url, None))
        try:
            yield container
        finally:
            await container.close()
