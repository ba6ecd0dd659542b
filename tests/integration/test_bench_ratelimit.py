"""`instock bench ratelimit` runs end to end on a short setting: servers with limits off and
on, CPU per request of each, and nothing refused (every limit is raised out of reach)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import INSTOCK, REDIS_URL, instock_env


# A bench command's own test: what it measures and checks does not depend on the backend.
@pytest.mark.one_backend
def test_bench_ratelimit_measures_what_counting_costs(database_url: str,
                                                      tmp_path: Path) -> None:
    plot = tmp_path / "ratelimit.png"
    args = [INSTOCK, "bench", "ratelimit", "--seconds", "0.5", "--concurrency", "4",
            "--database", database_url, "--plot", str(plot)]
    if REDIS_URL:
        args += ["--redis", REDIS_URL]
    result = subprocess.run(args, env=instock_env(database_url, tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(result.stdout)
    servers = ["off", "memory"] + (["redis"] if REDIS_URL else [])
    assert sorted({row["server"] for row in report["rows"]}) == sorted(servers)
    for row in report["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert row["cpu_ms_per_request"] > 0, row
    assert set(report["limiter_cpu_ms_per_request"]) == set(servers) - {"off"}
    assert plot.stat().st_size > 0
