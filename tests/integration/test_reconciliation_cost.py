"""A reconciliation pass costs what changed, not the catalogue: on 100,000 SKUs with 1% changed
since the last pass, the pass reads and checks those 1,000 (counted in statements and levels,
not timed)."""

from __future__ import annotations

import math

from instock.app import Container
from instock.bench.reconcile import change, changed_share, seed, with_sweep
from instock.inventory import store as inventory_store
from instock.reconciliation.service import CHUNK
from tests.integration.helpers import counting

CATALOGUE = 100_000


async def test_a_pass_after_one_percent_changed_touches_only_those(container: Container) -> None:
    c = container
    skus = await seed(c, CATALOGUE)
    reconciler = with_sweep(c.reconciliation, 0)  # the sweep's stretch aside: changes only
    assert (await reconciler.run_pass()).skus == 0  # nothing changed through the code yet
    changed = changed_share(skus, 0.01)
    assert len(changed) == CATALOGUE // 100
    await change(c, changed)
    with counting(c.db) as statements:
        report = await reconciler.run_pass()
    # No pass has checkpointed these yet: each one's whole (two-entry) ledger is folded.
    assert (report.skus, report.checked, report.entries) == (1000, 1000, 2000)
    assert report.drifts == []
    # A few statements per chunk of SKUs checked (checkpoints, levels, the ledger's new
    # ranges, holds, the reservations orders must hold, the stock against recommendations'
    # view and the channels' listings; SQLite's BEGINs counted too), and a few per pass (open
    # drifts, orders changed): none per SKU, none per unchanged SKU.
    chunks = math.ceil(1000 / CHUNK)
    per_chunk = 14 + math.ceil(CHUNK / inventory_store.RANGES_PER_STATEMENT)
    assert len(statements) <= 17 + per_chunk * chunks, statements
