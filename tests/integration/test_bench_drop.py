"""`instock bench drop` runs every strategy on a fresh database and checks its own results."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import INSTOCK, REDIS_URL, instock_env

UNITS, BUYERS = 20, 120
ROW_KEYS = {"name", "confirmed", "oversold", "lost", "throughput_rps", "p50_ms", "p95_ms",
            "p99_ms", "conflicts"}


def bench_drop(database_url: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [INSTOCK, "bench", "drop", "--units", str(UNITS), "--buyers", str(BUYERS),
         "--plot", str(tmp_path / "drop.png"), *args],
        env=instock_env(database_url, tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)  # stdout holds only the JSON
    return report


def test_every_strategy_sells_exactly_the_stock(database_url: str, tmp_path: Path) -> None:
    redis = ["--redis", REDIS_URL] if REDIS_URL else []
    report = bench_drop(database_url, tmp_path, *redis)
    assert report["database"] == database_url.split("+")[0]
    assert (report["units"], report["buyers"], report["mode"]) == (UNITS, BUYERS, "drop")
    expected = ["for_update", "occ_retry", "conditional_update",
                *(["redis_gate"] if REDIS_URL else []), "drop_lane"]
    assert [row["name"] for row in report["strategies"]] == expected
    for row in report["strategies"]:
        assert row.keys() >= ROW_KEYS, row["name"]
        assert (row["confirmed"], row["oversold"], row["lost"]) == (UNITS, 0, 0), row
        assert row["refused"] == BUYERS - UNITS and row["errors"] == 0, row
        assert row["db_reserved"] == UNITS, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
        assert row["throughput_rps"] > 0 and row["conflicts"] >= 0, row
    summary = report["summary"]
    assert summary["findings"] == []
    assert summary["drop_lane_vs_conditional_update"] > 0
    assert summary["drop_lane_vs_occ_retry"] > 0
    plot = Path(report["plot"])
    assert plot == tmp_path / "drop.png" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sustained_mode_restocks_and_still_never_oversells(database_url: str,
                                                           tmp_path: Path) -> None:
    report = bench_drop(database_url, tmp_path, "--mode", "sustained", "--seconds", "1",
                        "--strategy", "conditional_update", "--strategy", "drop_lane")
    assert report["mode"] == "sustained" and report["seconds"] == 1
    for row in report["strategies"]:
        assert row["restocks"] >= 1 and row["stocked"] == UNITS * (1 + row["restocks"]), row
        assert row["confirmed"] <= row["stocked"], row
        assert (row["oversold"], row["lost"], row["errors"]) == (0, 0, 0), row


@pytest.mark.skipif(REDIS_URL is None, reason="needs INSTOCK_TEST_REDIS_URL")
def test_a_gate_that_dies_before_its_write_behind_loses_confirmations(
        database_url: str, tmp_path: Path) -> None:
    assert REDIS_URL is not None
    report = bench_drop(database_url, tmp_path, "--redis", REDIS_URL, "--strategy",
                        "redis_gate", "--gate-crash-after", "10")
    [row] = report["strategies"]
    assert row["crashed_after"] == 10 and row["confirmed"] == 10
    # The tenth buyer was answered and the process died with it still in memory.
    assert row["lost"] > 0 and row["write_behind_discarded"] == row["lost"]
    # Every later buyer fails, except those whose "sold out" came back from Redis before the
    # crash (answers arrive over several connections, in no fixed order).
    assert row["errors"] + row["refused"] == BUYERS - 10 and row["errors"] > 0
    assert row["oversold"] == 0
    assert any("redis_gate lost" in finding for finding in report["summary"]["findings"])


def test_strategies_that_cannot_run_are_refused_up_front(tmp_path: Path) -> None:
    result = subprocess.run(
        [INSTOCK, "bench", "drop", "--strategy", "redis_gate"],
        env=instock_env("sqlite+aiosqlite:///unused.db", tmp_path), cwd=tmp_path,
        capture_output=True, text=True, timeout=60)
    said = " ".join(result.stderr.replace("│", " ").split())  # unwrap Rich's error box
    assert result.returncode != 0 and "redis_gate needs --redis" in said
    assert result.stdout == ""


def test_a_drop_says_by_when_every_buyer_had_an_answer(database_url: str,
                                                      tmp_path: Path) -> None:
    report = bench_drop(database_url, tmp_path, "--strategy", "drop_lane")
    [row] = report["strategies"]
    assert row["errors"] == 0, row
    # Every buyer was released at once, so the last answer came no sooner than the slowest.
    assert row["answered_within_ms"] >= row["p99_ms"] > 0, row


def test_queue_mode_holds_a_waiting_room_and_measures_what_it_costs(
        database_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [INSTOCK, "bench", "drop", "--mode", "queue", "--waiting", "100", "--seconds", "1",
         "--rate", "5", "--plot", str(tmp_path / "queue.png")],
        env=instock_env(database_url, tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["mode"], report["waiting"], report["connected"]) == ("queue", 100, 100)
    assert report["failed"] == {} and report["memory"]["per_waiting_kb"] is not None
    assert report["cpu"]["connect_ms_per_waiting"] > 0
    assert report["cpu"]["crowd_reader_percent"] >= 0  # the crowd's reader's share of a core
    store = report["storefront"]
    for phase in ("unloaded", "loaded"):
        assert store[phase]["errors"] == 0, store
        assert store[phase]["reserve"]["requests"] == store[phase]["product"]["requests"] > 0
        assert 0 < store[phase]["all"]["p50_ms"] <= store[phase]["all"]["p99_ms"], store
    assert store["p99_ratio"] > 0 and isinstance(store["within_goal"], bool)
    # Streams were told of admissions as the room reached them (how close to the configured
    # rate is the bench's to say, not the test's).
    admission = report["admission"]
    assert admission["configured_per_s"] == 5 and admission["observed"] >= 2, admission
    assert admission["measured_per_s"] > 0, admission
    assert Path(report["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
