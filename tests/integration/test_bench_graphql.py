"""`instock bench graphql` runs end to end: a server, the page both ways, GraphQL subscribers,
JSON on stdout, a chart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import INSTOCK, instock_env


# A bench command's own test: what it measures and checks does not depend on the backend.
@pytest.mark.one_backend
def test_bench_graphql_measures_the_page_both_ways_and_holds_every_subscriber(
        database_url: str, tmp_path: Path) -> None:
    plot = tmp_path / "graphql.png"
    result = subprocess.run(
        [INSTOCK, "bench", "graphql", "--rate", "20", "--seconds", "1", "--changes-per-s",
         "20", "--listeners", "2", "--subscribers", "50", "--plot", str(plot)],
        env=instock_env(database_url, tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=True)
    report = json.loads(result.stdout)  # stdout holds only the JSON
    assert report["database"] in {"sqlite", "postgresql"}
    for side in ("query", "rest"):
        row = report[side]
        assert row["errors"] == 0 and row["pages"] == 20, (side, row)
        assert row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], (side, row)
    subscription = report["subscription"]
    assert subscription["changes_per_s"] == 20 and subscription["errors"] == 0
    assert subscription["changes"] == 20 and subscription["lost"] == 0
    assert subscription["received"] + subscription["coalesced"] == 2 * 20
    assert subscription["p50_ms"] <= subscription["p99_ms"]
    assert subscription["p99_ms"] > 0
    capacity = report["capacity"]
    assert capacity["subscribers"] == capacity["asked"] == 50 and not capacity["failed"]
    assert capacity["fanout_received"] == 50 and capacity["fanout_ms"] > 0
    assert capacity["rss_mb"] > 0 and "per_subscriber_kb" in capacity
    assert report["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
