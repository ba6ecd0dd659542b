"""Process-wide tuning of a long-running process (a fresh interpreter each: the settings are
global, and a test process must keep its own)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
import numpy
from threadpoolctl import threadpool_info
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
from instock.platform.runtime import tune_for_throughput
tune_for_throughput()
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after, "young": gc.get_threshold()[0],
                  "frozen": gc.get_freeze_count()}))
"""


def test_a_server_process_runs_blas_on_one_thread_and_collects_less_often() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          check=True, env={"OPENBLAS_NUM_THREADS": "2", "PATH": ""})
    seen = json.loads(done.stdout)
    assert seen["after"] == [1] * len(seen["after"]) and seen["after"], seen
    assert seen["before"] == [2] * len(seen["after"]), "BLAS began on one thread"
    assert seen["young"] == 20_000
    assert seen["frozen"] > 0
