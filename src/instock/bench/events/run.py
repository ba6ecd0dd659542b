"""The whole run: latency on every bus, then capacity."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instock.bench.buses import bus_label, drop_stream, with_stream
from instock.bench.events.capacity import capacity
from instock.bench.events.latency import latency
from instock.bench.events.plan import Plan
from instock.bench.local import (
    BENCH_SERVER_ENV,
    Reporter,
    backend_of,
    logs_to_stderr,
    raise_fd_limit,
    workdir,
)


@dataclass
class Result:
    report: dict[str, Any]
    latencies_ms: dict[str, NDArray[np.float64]]
    memory: list[tuple[int, float]]


async def run(plan: Plan, report: Reporter) -> Result:
    raise_fd_limit()
    logs_to_stderr()
    run_id = secrets.token_hex(4)
    rows, latencies = [], {}
    with workdir("instock-bench-events-") as tmp:
        for url in plan.buses:
            bus_url = with_stream(url, f"instock_bench_{run_id}_{bus_label(url)}")
            try:
                row, samples = await latency(plan, bus_url, tmp, report)
            finally:
                with contextlib.suppress(Exception):
                    await drop_stream(bus_url)
            rows.append(row)
            latencies[row["bus"]] = samples
        held: dict[str, Any] | None = None
        memory: list[tuple[int, float]] = []
        if plan.clients:
            held, memory = await capacity(plan, tmp, report)
    body = {"database": backend_of(plan.database), "driver": plan.driver,
            "server": {"relay": "in-process", "consumers": plan.consumers, "sweeper": False,
                       "rate_limits": BENCH_SERVER_ENV["INSTOCK_RATE_LIMITS"]},
            "seconds": plan.seconds, "skus": plan.skus, "latency": rows, "capacity": held}
    return Result(body, latencies, memory)
