"""`instock bench writes` runs end to end on a short setting: a server of its own with the
payment sandbox, every case answered and checked, the server's own counts per request, JSON
on stdout, a chart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import INSTOCK, instock_env

CASES = ["adjustment", "reservation", "checkout", "drop"]


# A bench command's own test: what it measures and checks does not depend on the backend.
@pytest.mark.one_backend
def test_bench_writes_measures_every_case_and_nothing_is_oversold_or_lost(
        database_url: str, tmp_path: Path) -> None:
    plot = tmp_path / "writes.png"
    result = subprocess.run(
        [INSTOCK, "bench", "writes", "--json", "--seconds", "1", "--concurrency", "4",
         "--skus", "10", "--checkout-skus", "3", "--drop-units", "10", "--drop-buyers", "40",
         "--drop-connections", "10", "--plot", str(plot)],
        env=instock_env(database_url, tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=150, check=True)
    report = json.loads(result.stdout)  # stdout holds only the JSON
    assert report["database"] in {"sqlite", "postgresql"}
    assert report["livez_rps"] > 0 and report["livez"]["errors"] == 0
    assert "relay and consumers" in report["counters"]
    assert [row["name"] for row in report["cases"]] == CASES
    for row in report["cases"]:
        name = row["name"]
        assert row["errors"] == 0, (name, row["first_error"])
        assert row["throughput_rps"] > 0 and row["ratio_to_livez"] > 0, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
        assert row["oversold"] == 0 and row["lost"] == 0, row
        assert row["statements_per_request"] > 0, row
        assert row["transactions_per_request"] > 0 and row["cpu_ms_per_request"] > 0, row
        if name != "drop":  # a drop is everyone at once: no offered rate
            offered = row["offered"]
            assert offered["requests"] > 0 and offered["errors"] == 0, (name, offered)
            assert offered["unfinished"] == 0 and offered["statements_per_request"] > 0
    rows = {row["name"]: row for row in report["cases"]}
    assert rows["reservation"]["db_committed"] == rows["reservation"]["commits"] > 0
    checkout = rows["checkout"]
    assert checkout["provider_captures"] == checkout["db_committed"] == checkout["paid"] > 0
    assert rows["drop"]["confirmed"] == 10 and rows["drop"]["strategy"] == "drop_lane"
    assert report["ledger"]["ok"], report["ledger"]
    assert report["findings"] == []
    assert report["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
