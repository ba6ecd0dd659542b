"""`instock bench reservations`: B buyers at once for U units of one fresh SKU, over HTTP.

In-process by default (the whole ASGI app on the configured database, no sockets), or against a
running server with `--http URL` (which must share this configuration's signing key). The result
is checked, not just timed: confirmed units are compared with the stock the server reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from instock.platform.auth import Role, TokenAuthority
from instock.platform.ids import new_id

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Scenario:
    units: int
    buyers: int
    concurrency: int


# One httpx client slows down as its pool grows; many small ones keep the load generator cheap.
CLIENT_SHARDS = 25


@dataclass(frozen=True)
class Target:
    clients: list[httpx.AsyncClient]
    tokens: TokenAuthority
    database: str


@asynccontextmanager
async def in_process() -> AsyncIterator[Target]:
    from instock.app import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://instock") as client:
            yield Target([client], app.state.tokens, app.state.settings.database_url)


@asynccontextmanager
async def remote(url: str, tokens: TokenAuthority) -> AsyncIterator[Target]:
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60))
                   for _ in range(CLIENT_SHARDS)]
        ready = (await clients[0].get("/readyz")).json()
        yield Target(clients, tokens, ready.get("database", "unknown"))


async def _setup(client: httpx.AsyncClient, tokens: TokenAuthority, units: int) -> str:
    """A fresh SKU with `units` in stock at a bench location; returns the SKU."""
    admin = {"Authorization": f"Bearer {tokens.mint(Role.ADMIN, 'bench')}"}
    run = new_id()[-12:]
    sku, location = f"bench-{run}", "bench-wh"
    await client.post("/v1/locations", headers=admin,
                      json={"id": location, "name": "Bench warehouse", "kind": "warehouse"})
    created = await client.post("/v1/products", headers=admin, json={
        "id": sku, "title": "Bench SKU", "brand": "bench", "category": "bench", "price": "1",
        "variants": [{"sku": sku}]})
    created.raise_for_status()
    received = await client.post("/v1/inventory/adjustments", headers=admin, json={
        "sku": sku, "location": location, "kind": "receive", "quantity": units,
        "reason": "bench"})
    received.raise_for_status()
    return sku


async def run(target: Target, scenario: Scenario, progress: Progress) -> dict[str, Any]:
    client, tokens = target.clients[0], target.tokens
    sku = await _setup(client, tokens, scenario.units)
    headers = [{"Authorization": f"Bearer {tokens.mint(Role.CUSTOMER, f'buyer-{i}')}"}
               for i in range(scenario.buyers)]
    gate = asyncio.Semaphore(scenario.concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def buy(i: int, header: dict[str, str]) -> None:
        async with gate:
            started = time.perf_counter()
            client_i = target.clients[i % len(target.clients)]
            response = await client_i.post("/v1/reservations", headers=header,
                                           json={"lines": [{"sku": sku, "quantity": 1}]})
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            progress(1)

    started = time.perf_counter()
    await asyncio.gather(*(buy(i, h) for i, h in enumerate(headers)))
    elapsed = time.perf_counter() - started
    admin = {"Authorization": f"Bearer {tokens.mint(Role.ADMIN, 'bench')}"}
    stock = (await client.get(f"/v1/inventory/{sku}", headers=admin)).json()
    confirmed = statuses.get(201, 0)
    ms = np.array(latencies) * 1000
    return {
        "units": scenario.units, "buyers": scenario.buyers,
        "concurrency": scenario.concurrency, "confirmed": confirmed,
        "sold_out_answers": statuses.get(409, 0),
        "other_statuses": {str(k): v for k, v in statuses.items() if k not in (201, 409)},
        "oversold": max(0, confirmed - scenario.units),
        "reserved_in_database": stock["reserved"],
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(scenario.buyers / elapsed, 1),
        "confirmed_per_s": round(confirmed / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "latencies_ms": ms,
    }
