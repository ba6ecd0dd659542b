"""`instock bench recs` seeds a catalogue, serves lists over HTTP and checks its sold-outs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from instock.bench import recs
from instock.bench.local import run_loop
from instock.bench.plot import recs_chart
from tests.support import NATS_URL, PG_URL, REDIS_URL

QUANTILES = {"p50", "p90", "p99", "max"}


class Silent:
    def task(self, description: str, total: int) -> Callable[[int], None]:
        return lambda n: None

    def note(self, text: str) -> None:
        pass


def test_a_small_run_reports_its_shape_and_every_sold_out_is_gone(tmp_path: Path) -> None:
    plan = recs.Plan(items=2000, rate=50, seconds=3, shoppers=200, event_rate=10, probes=3,
                     database="sqlite+aiosqlite:///bench.db", redis=None, workdir=tmp_path,
                     fit_budget_seconds=0)  # the base configuration: CI time, not the best blend
    result = run_loop(recs.run(plan, Silent()))
    report = result.report
    assert report["catalogue_items"] == 2000 and report["backend"] == "sqlite"
    assert report["history_events"] > 0 and report["redis"] is False
    assert (report["rate"], report["seconds"]) == (50, 3)
    assert report["errors"] == 0, report["error_kinds"]
    assert report["requests"] == 150 and report["latency_ms"].keys() == QUANTILES
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert 0 <= report["cache_hit_share"] <= 1
    # What the server spent: every list not from the cache was ranked, and ranking is part of
    # all the process's CPU per list.
    cost = report["server_cpu"]
    assert cost["fresh_lists"] == round(150 * (1 - report["cache_hit_share"])), cost
    assert cost["blend_ms_per_fresh_list"] > 0, cost
    assert cost["blend_ms_per_fresh_list"] * cost["fresh_lists"] < cost["ms_per_list"] * 150, cost
    assert report["cold_latency_ms"]["requests"] == 150
    # Every cold shopper is new, and blank: the first per context computes the list they share.
    assert 0 < report["cold_latency_ms"]["cached"] < 150
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


FLEET_BUS = NATS_URL or REDIS_URL


@pytest.mark.skipif(not (PG_URL and FLEET_BUS), reason="a fleet needs PostgreSQL and a shared bus")
def test_a_fleet_run_spreads_shoppers_over_its_servers_and_its_worker_relays(
        tmp_path: Path) -> None:
    """Two API processes that only serve and `instock worker all` beside them: every shopper's
    requests go to one server, both serve, and the sold-outs (relayed by the worker, heard by
    both servers over the bus) still leave every list."""
    assert PG_URL is not None and FLEET_BUS is not None
    plan = recs.Plan(items=2000, rate=50, seconds=3, shoppers=200, event_rate=10, probes=3,
                     database=PG_URL, redis=None, workdir=tmp_path, servers=2, bus=FLEET_BUS,
                     worker=True, fit_budget_seconds=0)
    report = run_loop(recs.run(plan, Silent())).report
    assert (report["servers"], report["worker"], report["backend"]) == (2, True, "postgresql")
    assert report["errors"] == 0, report["error_kinds"]
    assert report["requests"] == 150 and sum(report["requests_per_server"]) == 150
    assert min(report["requests_per_server"]) > 0, report["requests_per_server"]
    assert report["freshness_ms"]["event"]["changed"] == 3
    for probe in report["sold_out_probes"]:
        assert probe["listed_before"] and probe["gone"] and probe["ms"] is not None, probe
