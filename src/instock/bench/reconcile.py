"""`instock bench reconcile`: what a reconciliation pass costs on a large catalogue, when
everything is new (the first pass checks every level), when a share of it changed, and when
nothing did (the sweep's stretch alone).

The catalogue is written in bulk (what receiving each SKU once through the service would leave,
without its events: products, variants, items, levels, and a verified ledger entry each), so
100,000 SKUs take seconds; the changes go through the inventory service like any others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from instock.app import Container, build
from instock.bench.drop.engine import settings_for
from instock.bench.local import Reporter, backend_of, scratch_database
from instock.catalog import store as catalog_store
from instock.inventory import store as inventory_store
from instock.inventory.model import Adjustment, AdjustmentKind, Buckets, Movement, StockLevel
from instock.inventory.model import LedgerEntry as Entry
from instock.migrate import upgrade
from instock.platform.db import insert_rows
from instock.platform.entry_context import EntryContext
from instock.reconciliation.service import PassReport, ReconciliationService

SEEDED = EntryContext("bench", "seeded in bulk")
PER_PRODUCT = 100
CHUNK = 5000


def sku_of(i: int) -> str:
    return f"RC-{i:07d}"


async def seed(c: Container, count: int, location: str = "wh",
               advance: Callable[[int], None] | None = None) -> list[str]:
    """`count` SKUs of PER_PRODUCT-variant products, each with one unit received at
    `location`, in chunks of CHUNK rows per statement (a multiple of PER_PRODUCT: no product
    spans two chunks)."""
    await c.inventory.create_location(location, location, "warehouse")
    skus = [sku_of(i) for i in range(count)]
    at = datetime.now(UTC)
    for start in range(0, count, CHUNK):
        chunk = skus[start:start + CHUNK]
        products = sorted({_product_of(sku) for sku in chunk})
        levels, entries = [], []
        for sku in chunk:
            level = StockLevel(sku, location)
            movement = Movement(sku, location, Buckets(on_hand=1), AdjustmentKind.RECEIVE.value)
            level.apply(movement)
            level.version = 1
            entries.append(Entry.record(level, movement, SEEDED, at))
            levels.append(level)
        async with c.db.write() as conn:
            await insert_rows(conn, catalog_store.products, [
                {"id": p, "title": p, "brand": "bench", "category": "bench", "tags": [],
                 "attributes": {}, "price": Decimal("10"), "currency": "EUR",
                 "created_at": at, "version": 1} for p in products])
            await insert_rows(conn, catalog_store.variants, [
                {"sku": sku, "product_id": _product_of(sku), "position": i % PER_PRODUCT,
                 "attributes": {}} for i, sku in enumerate(chunk, start)])
            await insert_rows(conn, inventory_store.items, [
                {"sku": sku, "version": 1} for sku in chunk])
            await insert_rows(conn, inventory_store.stock_levels, [
                {"sku": lv.sku, "location": lv.location, **lv.buckets.as_dict(),
                 "version": lv.version, "last_hash": lv.last_hash} for lv in levels])
            await inventory_store.insert_entries(conn, entries)
        if advance is not None:
            advance(len(chunk))
    return skus


def _product_of(sku: str) -> str:
    return f"RCP-{int(sku[3:]) // PER_PRODUCT:05d}"


async def change(c: Container, skus: list[str], location: str = "wh") -> None:
    """Receive one more unit of each SKU, through the service (events, ledger and all)."""
    for sku in skus:
        await c.inventory.adjust(Adjustment(sku, location, AdjustmentKind.RECEIVE, 1),
                                 EntryContext("bench", "a change to reconcile"))


def changed_share(skus: list[str], share: float) -> list[str]:
    """Every n-th SKU: `share` of them, spread over the key range."""
    step = max(1, round(1 / share)) if share > 0 else len(skus) + 1
    return skus[::step]


async def timed_pass(service: ReconciliationService, statements: Callable[[], float],
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    before = statements()
    started = time.perf_counter()
    report: PassReport = await service.run_pass(progress=progress)
    return {"seconds": round(time.perf_counter() - started, 3), "skus": report.skus,
            "levels_checked": report.checked, "entries_folded": report.entries,
            "drifts": len(report.drifts), "statements": int(statements() - before)}


def with_sweep(service: ReconciliationService, per_pass: int) -> ReconciliationService:
    return ReconciliationService(service.db, service.inventory, service.catalog, service.orders,
                                 service.recommendations, service.channels,
                                 replace(service.settings, sweep_per_pass=per_pass))


def statements() -> float:
    """This process's SQL statements so far (the database adapter counts them)."""
    from prometheus_client import REGISTRY

    return sum(sample.value for family in REGISTRY.collect()
               if family.name == "instock_db_statements" for sample in family.samples
               if sample.name == "instock_db_statements_total")


async def run(database: str, workdir: Path, skus: int, share: float,
              reporter: Reporter) -> dict[str, Any]:
    """Seed, then three passes: the first (every level new: the sweep takes them all), one
    after `share` of the SKUs changed (no sweep), and one with nothing changed (the sweep's
    default stretch)."""
    async with scratch_database(database, workdir, "instock_bench_reconcile") as url:
        await asyncio.to_thread(upgrade, url)
        container = build(settings_for(url, None))
        try:
            await seed(container, skus, advance=reporter.task(f"seeding {skus} SKUs", skus))
            service = container.reconciliation
            first = with_sweep(service, skus)
            bar = reporter.task("first pass: every level", skus)
            done = [0]

            def advance(checked: int, _total: int) -> None:
                bar(checked - done[0])
                done[0] = checked

            bootstrap = await timed_pass(first, statements, advance)
            changing = changed_share([sku_of(i) for i in range(skus)], share)
            tick = reporter.task(f"changing {len(changing)} SKUs", len(changing))
            for start in range(0, len(changing), 100):
                await change(container, changing[start:start + 100])
                tick(len(changing[start:start + 100]))
            reporter.note("pass after the changes (no sweep)")
            after_changes = await timed_pass(with_sweep(service, 0), statements)
            reporter.note("pass with nothing changed (the sweep's stretch)")
            idle = await timed_pass(service, statements)
        finally:
            await container.close()
    return {"database": backend_of(database), "skus": skus, "changed": len(changing),
            "sweep_per_pass": service.settings.sweep_per_pass,
            "passes": {"first": bootstrap, "after_changes": after_changes, "idle": idle}}
