"""`instock bench recs` seeds a catalogue, serves lists over HTTP and checks its sold-outs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from instock.bench import recs
from instock.bench.events import run_loop
from instock.bench.plot import recs_chart

QUANTILES = {"p50", "p90", "p99", "max"}


class Silent:
    def task(self, description: str, total: int) -> Callable[[int], None]:
        return lambda n: None

    def note(self, text: str) -> None:
        pass


def test_a_small_run_reports_its_shape_and_every_sold_out_is_gone(tmp_path: Path) -> None:
    plan = recs.Plan(items=2000, rate=50, seconds=3, shoppers=200, event_rate=10, probes=3,
                     database="sqlite+aiosqlite:///bench.db", redis=None, workdir=tmp_path)
    result = run_loop(recs.run(plan, Silent()))
    report = result.report
    assert report["catalogue_items"] == 2000 and report["backend"] == "sqlite"
    assert report["history_events"] > 0 and report["redis"] is False
    assert (report["rate"], report["seconds"]) == (50, 3)
    assert report["errors"] == 0, report["error_kinds"]
    assert report["requests"] == 150 and report["latency_ms"].keys() == QUANTILES
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert 0 <= report["cache_hit_share"] <= 1
    assert report["cold_latency_ms"]["requests"] == 150
    assert report["cold_latency_ms"]["cached"] == 0  # every cold shopper is new
    assert report["unloaded_latency_ms"]["requests"] == recs.UNLOADED_REQUESTS
    assert report["goals"] == {"p99_ms": 10, "freshness_ms": 1000}
    event, sold_out = report["freshness_ms"]["event"], report["freshness_ms"]["sold_out"]
    assert event["probes"] == event["changed"] == 3
    assert sold_out["probes"] == 3
    for probe in report["sold_out_probes"]:
        # The bench saw the item in cached lists first, and nowhere once sold out.
        assert probe["listed_before"] and probe["cached_before"], probe
        assert probe["gone"] and probe["ms"] is not None, probe
    plot = tmp_path / "recs.png"
    recs_chart(result.latencies_ms, result.freshness_ms, "test", plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
