"""The whole run: the product page (query, then REST) and subscription latency on one server,
then capacity on a fresh one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instock.bench.events.latency import commit_stamps
from instock.bench.graphql.live import capacity, changes, latency_row
from instock.bench.graphql.page import compare
from instock.bench.graphql.plan import OTHERS, VARIANTS, Plan, seed
from instock.bench.local import (
    BENCH_SERVER_ENV,
    Reporter,
    backend_of,
    logs_to_stderr,
    raise_fd_limit,
    scratch_database,
    serve,
    workdir,
)


@dataclass
class Result:
    report: dict[str, Any]
    pages_ms: dict[str, NDArray[np.float64]]  # "query", "rest"
    subscription_ms: NDArray[np.float64]
    memory: list[tuple[int, float]]  # (subscribers held, server RSS in MB)


async def run(plan: Plan, report: Reporter) -> Result:
    raise_fd_limit()
    logs_to_stderr()
    load = os.getloadavg()[0]
    with workdir("instock-bench-graphql-") as tmp:
        report.note(f"starting a server on a fresh {backend_of(plan.database)} database")
        async with scratch_database(plan.database, tmp, "instock_bench") as db_url:
            async with serve(db_url, "memory://", tmp) as server:
                skus = await seed(server)
                pages, pages_ms = await compare(server, plan.rate, plan.seconds, report)
                drive, arrivals, cpu = await changes(server, plan, skus, tmp, report)
            stamps = await commit_stamps(db_url)
        subscription, subscription_ms = latency_row(plan, drive, arrivals, cpu, stamps)
        held: dict[str, Any] = {"subscribers": 0, "rss_mb": None, "asked": 0}
        memory: list[tuple[int, float]] = []
        if plan.subscribers:
            held, memory = await capacity(plan, tmp, report)
    body = {"database": backend_of(plan.database), "bus": "memory",
            "server": {"processes": 1, "relay": "in-process", "consumers": False,
                       "sweeper": False,
                       "rate_limits": BENCH_SERVER_ENV["INSTOCK_RATE_LIMITS"]},
            "seconds": plan.seconds,
            # The machine's 1-minute load average at the start and the end, beside its cores:
            # other work on the machine takes CPU the one server process would have had.
            "machine": {"cpus": os.cpu_count(), "load_start": round(load, 2),
                        "load_end": round(os.getloadavg()[0], 2)},
            "page": {"product": 1, "variants": VARIANTS, "other_products": OTHERS,
                     "recommendations": 10},
            "query": pages["query"], "rest": pages["rest"],
            "subscription": subscription, "capacity": held}
    return Result(body, pages_ms, subscription_ms, memory)
