"""`instock bench analytics` runs end to end on a short setting: every sale offered reaches
the facts (each with a lag), a year of facts reads, a rebuilt year folds every entry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import INSTOCK, PG_URL, backends, instock_env


def test_bench_analytics_measures_freshness_reads_and_a_rebuild(tmp_path: Path) -> None:
    # One backend (PostgreSQL when there is one): the bench makes its own databases on it,
    # and its cost is the same code on either.
    backend = backends()[-1]
    database_url = (PG_URL if backend == "postgresql" and PG_URL
                    else f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}")
    plot = tmp_path / "analytics.png"
    result = subprocess.run(
        [INSTOCK, "bench", "analytics", "--rate", "200", "--service-rate", "100", "--seconds",
         "2", "--skus", "20",
         "--reads", "20", "--rebuild-skus", "30", "--sale-every-days", "5", "--plot",
         str(plot)],
        env=instock_env(database_url, tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=180, check=True)
    report = json.loads(result.stdout)
    fresh, bulk = report["freshness"]["through_service"], report["freshness"]["bulk_ledger"]
    assert fresh["failed"] == 0 and fresh["sales"] == 200
    assert fresh["counted_in_facts"] == 200  # every sale counted once
    assert 0 < fresh["lag_ms"]["p50"] <= fresh["lag_ms"]["max"]
    assert bulk["sales"] == bulk["counted_in_facts"] == 400
    assert 0 < bulk["lag_ms"]["p50"] <= bulk["lag_ms"]["max"]
    assert report["read"]["fact_rows"] == 3 * 365 * 24
    assert 0 < report["read"]["ms"]["p50"] <= report["read"]["ms"]["p99"]
    rebuilt = report["rebuild"]
    # 12 receipts and 73 sales (a reservation and a commit each) a SKU.
    assert rebuilt["ledger_entries"] == 30 * (12 + 2 * 73) and rebuilt["reservations"] == 30 * 73
    assert rebuilt["fact_rows"] > 0
    assert plot.stat().st_size > 0
