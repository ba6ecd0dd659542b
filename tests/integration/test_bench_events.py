"""`instock bench events` runs end to end: servers, SSE clients, JSON on stdout, a chart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import INSTOCK, instock_env


# A bench command's own test: what it measures and checks does not depend on the backend.
@pytest.mark.one_backend
def test_bench_events_measures_latency_and_holds_every_client(database_url: str,
                                                              tmp_path: Path) -> None:
    plot = tmp_path / "events.png"
    result = subprocess.run(
        [INSTOCK, "bench", "events", "--bus", "memory://", "--rate", "50", "--seconds", "1",
         "--skus", "3", "--clients", "20", "--plot", str(plot)],
        env=instock_env(database_url, tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=True)
    report = json.loads(result.stdout)  # stdout holds only the JSON
    assert report["database"] in {"sqlite", "postgresql"}
    [row] = report["latency"]
    assert row["bus"] == "memory" and row["target_rate"] == 50
    assert row["changes"] + row["errors"] == 50
    assert row["received"] > 0 and row["lost"] == 0
    assert row["received"] + row["coalesced"] <= row["changes"]
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "achieved_rate"):
        assert isinstance(row[key], float), key
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
    capacity = report["capacity"]
    assert capacity["bus"] == "memory" and capacity["connected"] == capacity["clients"] == 20
    assert capacity["fanout_received"] == 20 and capacity["rss_after_mb"] > 0
    for key in ("rss_before_mb", "per_connection_kb", "connect_seconds", "fanout_ms"):
        assert key in capacity, key
    assert report["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
