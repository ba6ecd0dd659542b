"""`instock bench checkout`: what a buyer waits for at checkout when the provider takes its time.

It starts the payment sandbox (with the given latency per call) and one API process on a
scratch database, stocks `skus` SKUs through the API, then has `concurrency` buyers check out
`orders` single-unit orders spread over them (`POST /v1/checkout` with lines: reserve,
authorise, commit, capture, hand to fulfilment, all in the request). One SKU (`--skus 1`) is a
drop's checkout: every order then queues for the same stock rows. Every order is checked
afterwards: the units committed, one capture per order at the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from instock.bench.local import (
    BENCH_SERVER_ENV,
    backend_of,
    free_port,
    instock_process,
    scratch_database,
    wait_answering,
)
from instock.platform.auth import Role, TokenAuthority

SECRET = "bench-checkout-secret-0123456789abcdef"  # noqa: S105 - signs the bench's own throwaway server's tokens


@dataclass(frozen=True)
class Plan:
    orders: int
    skus: int
    concurrency: int
    provider_latency_ms: float
    database: str
    workdir: Path


@dataclass
class Result:
    report: dict[str, Any]
    latencies_ms: np.ndarray[Any, np.dtype[np.float64]]


@contextlib.asynccontextmanager
async def _stack(plan: Plan, database_url: str) -> AsyncIterator[tuple[str, str]]:
    """The sandbox and an API process; yields their base URLs."""
    sandbox_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
    env.update(INSTOCK_DATABASE_URL=database_url, INSTOCK_JWT_SECRET=SECRET,
               INSTOCK_STATE_DIR=str(plan.workdir / "state"), INSTOCK_LOG_LEVEL="warning",
               INSTOCK_PAYMENTS_URL=f"http://127.0.0.1:{sandbox_port}", **BENCH_SERVER_ENV)
    sandbox_log, api_log = plan.workdir / "sandbox.log", plan.workdir / "api.log"
    with instock_process(["sandbox", "payments", "--port", str(sandbox_port), "--latency-ms",
                   str(plan.provider_latency_ms)], env, sandbox_log) as provider, \
            instock_process(["serve", "--port", str(api_port)], env, api_log) as server:
        sandbox, api = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{api_port}"
        await wait_answering(f"{sandbox}/_sandbox/config", sandbox_log, 60, provider)
        await wait_answering(f"{api}/readyz", api_log, 60, server)
        yield sandbox, api


def sku(i: int, plan: Plan) -> str:
    return f"bench-checkout-{i % plan.skus}"


async def _stock(http: httpx.AsyncClient, admin: dict[str, str], plan: Plan) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/v1/products", {"id": "bench-checkout", "title": "Bench", "brand": "b",
                          "category": "c", "price": "49.90",
                          "variants": [{"sku": sku(i, plan), "attributes": {"n": str(i)}}
                                       for i in range(plan.skus)]}),
        ("/v1/locations", {"id": "bench-wh", "name": "bench", "kind": "warehouse"})]
    calls += [("/v1/inventory/adjustments",
               {"sku": sku(i, plan), "location": "bench-wh", "kind": "receive",
                "quantity": plan.orders, "reason": "bench"}) for i in range(plan.skus)]
    for path, body in calls:
        response = await http.post(path, json=body, headers=admin)
        if response.status_code >= 300:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")


async def run(plan: Plan, progress: Callable[[int], None]) -> Result:
    tokens = TokenAuthority(SECRET, "instock", 3600)
    async with scratch_database(plan.database, plan.workdir, "instock_bench_checkout") as url:
        from instock.migrate import upgrade

        await asyncio.to_thread(upgrade, url)
        async with _stack(plan, url) as (sandbox, api), httpx.AsyncClient(
                base_url=api, timeout=60,
                limits=httpx.Limits(max_connections=plan.concurrency + 2)) as http:
            admin = {"Authorization": f"Bearer {tokens.mint(Role.ADMIN)}"}
            await _stock(http, admin, plan)
            await _warm_up(http, tokens, plan)
            latencies, statuses = await _buyers(http, tokens, plan, progress)
            elapsed = latencies.pop()  # the last entry is the run's wall time
            check = await _check(http, admin, sandbox, plan)
    ms = np.array(latencies, dtype=np.float64)
    report = {
        "database": backend_of(plan.database), "orders": plan.orders, "skus": plan.skus,
        "concurrency": plan.concurrency, "provider_latency_ms": plan.provider_latency_ms,
        "provider_calls_per_checkout": 2,
        "rate_limits": BENCH_SERVER_ENV["INSTOCK_RATE_LIMITS"],
        "statuses": statuses, "orders_per_second": round(plan.orders / elapsed, 1),
        "latency_ms": {q: round(float(np.percentile(ms, p)), 1)
                       for q, p in (("p50", 50), ("p95", 95), ("p99", 99))} | {
            "max": round(float(ms.max()), 1)},
        **check,
    }
    return Result(report, ms)


async def _warm_up(http: httpx.AsyncClient, tokens: TokenAuthority, plan: Plan) -> None:
    """One order before the clock starts: first-request costs are not what a buyer waits."""
    await http.post("/v1/checkout", json={"lines": [{"sku": sku(0, plan), "quantity": 1}]},
                    headers={"Authorization": f"Bearer {tokens.mint(Role.CUSTOMER, 'warm')}"})


async def _buyers(http: httpx.AsyncClient, tokens: TokenAuthority, plan: Plan,
                  progress: Callable[[int], None]) -> tuple[list[float], dict[str, int]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(plan.orders - 1):  # the warm-up took one unit
        queue.put_nowait(i)
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    async def buyer() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            headers = {"Authorization": f"Bearer {tokens.mint(Role.CUSTOMER, f'buyer-{i}')}"}
            started = time.perf_counter()
            response = await http.post("/v1/checkout", headers=headers,
                                       json={"lines": [{"sku": sku(i + 1, plan),
                                                        "quantity": 1}]})
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            progress(1)

    started = time.perf_counter()
    await asyncio.gather(*(buyer() for _ in range(plan.concurrency)))
    latencies.append(time.perf_counter() - started)
    return latencies, statuses


async def _check(http: httpx.AsyncClient, admin: dict[str, str], sandbox: str,
                 plan: Plan) -> dict[str, Any]:
    """Counted, not assumed: committed units and captures at the provider, one per order."""
    committed = reserved = 0
    for i in range(plan.skus):
        level = (await http.get(f"/v1/inventory/{sku(i, plan)}", headers=admin)).json()
        committed, reserved = committed + level["committed"], reserved + level["reserved"]
    stats = (await http.get(f"{sandbox}/_sandbox/stats")).json()
    return {"committed_units": committed, "provider_captures": stats.get("captures", 0),
            "consistent": committed == stats.get("captures", 0) == plan.orders
            and reserved == 0}
