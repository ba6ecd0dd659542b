"""`instock bench reservations` measures a real race and checks its own result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import INSTOCK, instock_env


def test_bench_reservations_prints_json_and_draws_the_latencies(database_url: str,
                                                                 tmp_path: Path) -> None:
    env = instock_env(database_url, tmp_path, INSTOCK_RUN_SWEEPER="false")
    plot = tmp_path / "latency.png"
    result = subprocess.run(
        [INSTOCK, "bench", "reservations", "--units", "20", "--buyers", "60",
         "--plot", str(plot)], env=env, capture_output=True, text=True, timeout=300,
        check=True)
    report = json.loads(result.stdout)  # stdout holds only the JSON
    assert report["confirmed"] == report["reserved_in_database"] == 20
    assert report["sold_out_answers"] == 40 and report["oversold"] == 0
    assert report["throughput_rps"] > 0 and report["p50_ms"] <= report["p99_ms"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
