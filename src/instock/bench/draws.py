"""`instock bench draws`: what a draw drop costs. Entries taken one by one through the service
(each scored and stored in its own transaction, as the route does), the draw over all of them
(one transaction: read the entries, order them, store the draw and announce the winners), and
an entrant's standing read afterwards (the rights re-computed from the draw, the claims and the
clock). The drops service runs on a clock of the bench's own, so the entry window closes when
the entries are in, not after a guessed wait.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from instock.app import build
from instock.bench.drop.engine import settings_for
from instock.bench.local import Reporter, backend_of, scratch_database
from instock.catalog.model import Product, Variant
from instock.drops import model
from instock.drops.model import draws as draw_model
from instock.drops.service import DropSettings, DropsService, Entry
from instock.inventory.model import Adjustment, AdjustmentKind
from instock.migrate import upgrade
from instock.platform.db import utcnow
from instock.platform.entry_context import EntryContext

SKU = "draw-bench-1"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1e3, 3),
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3, 3)}


async def run(database: str, workdir: Path, entries: int, units: int, reads: int,
              reporter: Reporter) -> dict[str, Any]:
    async with scratch_database(database, workdir, "instock_bench_draws") as url:
        await asyncio.to_thread(upgrade, url)
        c = build(settings_for(url, None))
        now = [utcnow()]
        # No proof of work asked: the bench measures the draw, not the shoppers' hashing.
        drops = DropsService(c.db, c.catalog, c.inventory, c.drops.tokens,
                             replace(DropSettings(), proof_bits=0), clock=lambda: now[0])
        try:
            await c.catalog.create_product(Product(
                id="draw-bench", title="draw bench", brand="b", category="c",
                price=Decimal("10"), currency="EUR", variants=[Variant(SKU)]))
            await c.inventory.create_location("wh", "wh", "warehouse")
            await c.inventory.adjust(Adjustment(SKU, "wh", AdjustmentKind.RECEIVE, units),
                                     EntryContext(actor="bench"))
            starts = now[0] + timedelta(days=1)
            drop = await drops.schedule(model.Drop(
                id="", skus=(SKU,), starts_at=starts, mode=model.Mode.DRAW,
                admit_per_second=0.0, per_customer_limit=None, channels=(), ends_at=None,
                seed="", created_at=starts, created_by="bench", entries_close_at=starts))
            advance = reporter.task(f"entering {entries}", entries)
            taken = []
            for i in range(entries):
                start = time.perf_counter()
                await drops.draws.enter(drop.id, f"cus-{i:07d}", Entry())
                taken.append(time.perf_counter() - start)
                advance(1)
            now[0] = starts
            reporter.note("drawing")
            start = time.perf_counter()
            drawn = await drops.draws.draw(drop.id, "bench")
            draw_seconds = time.perf_counter() - start
            assert len(drawn.entries) == entries and draw_model.draw_order(
                drawn.seed, drawn.entries) == drawn.order
            fresh = DropsService(c.db, c.catalog, c.inventory, c.drops.tokens,
                                 clock=lambda: now[0])  # a process that has not read the draw
            start = time.perf_counter()
            await fresh.draws.published(drop.id)
            first_read = time.perf_counter() - start
            # Spread over the order: winners, the next in line and the far end alike.
            sample = drawn.order[::max(1, entries // reads)][:reads]
            advance = reporter.task(f"reading {len(sample)} standings", len(sample))
            standings = []
            for entry_id in sample:
                start = time.perf_counter()
                await fresh.draws.standing(drop.id, entry_id, lambda _: None)
                standings.append(time.perf_counter() - start)
                advance(1)
        finally:
            await c.close()
    return {"database": backend_of(database), "entries": entries, "winners": drawn.slots,
            "enter": _ms(taken),
            "entries_per_second": round(entries / sum(taken), 1),
            "draw_seconds": round(draw_seconds, 3),
            "first_read_of_the_draw_ms": round(first_read * 1e3, 3),
            "standing": _ms(standings)}
