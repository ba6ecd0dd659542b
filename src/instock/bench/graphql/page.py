"""The product page: one GraphQL query against the REST calls that give the same data, each
at the same steady open-loop rate, on the same server (see the package)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instock.bench.events.latency import quantiles
from instock.bench.graphql.plan import (
    CHANNEL,
    CONNECTIONS,
    DRAIN_SECONDS,
    LIMIT,
    PAGE_QUERY,
    PRODUCT,
    SESSIONS,
    VARIANTS,
    WARMUP,
)
from instock.bench.local import Reporter, Server, admin_token, open_loop
from instock.bench.wire import Pool

Page = Callable[[int], Awaitable[str | None]]  # page i -> None, or what was wrong


class PageFailed(Exception):
    """An answer that is not the page (its reason is the message)."""


def graphql_page(pool: Pool, token: str) -> Page:
    """One POST /graphql: the product, its sizes' stock and the recommendations."""
    head = pool.head("POST", "/graphql", {"Authorization": f"Bearer {token}"}, json_body=True)

    async def page(i: int) -> str | None:
        body = json.dumps({"query": PAGE_QUERY, "variables": {
            "id": PRODUCT, "sessionId": f"bench-s{i % SESSIONS}",
            "context": f"product:{PRODUCT}", "limit": LIMIT}}).encode()
        answer = await pool.send(head, body)
        if answer.status != 200:
            return f"status {answer.status}"
        data = answer.json()
        if data.get("errors"):
            return "errors: " + str(data["errors"][0].get("extensions", {}).get("code"))
        if len(data["data"]["product"]["variants"]) != VARIANTS:
            return "variants missing"
        return None if data["data"]["recommendations"]["items"] else "no recommendations"

    return page


def rest_page(pool: Pool, token: str) -> Page:
    """GET the product; then, at once, each size's stock and the recommendations (a client
    learns the SKUs from the product)."""
    auth = {"Authorization": f"Bearer {token}"}
    product = pool.head("GET", f"/v1/products/{PRODUCT}", auth)

    async def get(head: bytes) -> Any:
        answer = await pool.send(head)
        if answer.status != 200:
            raise PageFailed(f"status {answer.status}")
        return answer.json()

    async def page(i: int) -> str | None:
        try:
            skus = [v["sku"] for v in (await get(product))["variants"]]
            heads = [pool.head("GET", f"/v1/inventory/{sku}?channel={CHANNEL}", auth)
                     for sku in skus]
            heads.append(pool.head(
                "GET", f"/v1/recommendations?session_id=bench-s{i % SESSIONS}"
                f"&context=product:{PRODUCT}&limit={LIMIT}", auth))
            *_, recs = await asyncio.gather(*(get(head) for head in heads))
        except PageFailed as exc:
            return str(exc)
        if len(skus) != VARIANTS:
            return "variants missing"
        return None if recs["items"] else "no recommendations"

    return page


@dataclass
class Side:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def steady(page: Page, rate: float, seconds: float, server: Server,
                 advance: Callable[[int], None]) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """Pages at `rate` for `seconds`, open loop: latency from each page's due time (so time
    queued for a connection counts) until its last answer."""
    side = Side()

    async def one(i: int, due: float) -> None:
        try:
            wrong = await page(i)
        except Exception as exc:  # counted, not fatal: errors are part of the result
            wrong = type(exc).__name__
        if wrong is None:
            side.latencies_ms.append((time.monotonic() - due) * 1000)
        else:
            side.errors[wrong] += 1

    cpu = server.cpu_seconds()
    schedule = await open_loop(rate, seconds, one, DRAIN_SECONDS, advance)
    finished = time.monotonic()
    cpu = server.cpu_seconds() - cpu
    if schedule.unfinished:
        side.errors["unfinished"] = schedule.unfinished
    ms = np.array(side.latencies_ms, dtype=np.float64)
    elapsed = max(finished - schedule.started, 1e-9)
    return {"target_rps": rate, "rps": round(len(ms) / elapsed, 1), **quantiles(ms),
            "pages": len(ms), "errors": sum(side.errors.values()),
            "error_kinds": dict(side.errors),
            "schedule_late_max_ms": round(schedule.late_ms, 1),
            # One core is 100: near it, the one server process is the limit.
            "server_cpu_percent": round(100 * cpu / elapsed, 1)}, ms


async def compare(server: Server, rate: float, seconds: float, report: Reporter
                  ) -> tuple[dict[str, Any], dict[str, NDArray[np.float64]]]:
    """The GraphQL page, then the REST page, at the same rate on the same server."""
    token = admin_token(server)
    rows: dict[str, Any] = {}
    samples: dict[str, NDArray[np.float64]] = {}
    pool = Pool(server.base_url, CONNECTIONS)
    try:
        sides = {"query": graphql_page(pool, token), "rest": rest_page(pool, token)}
        for page in sides.values():  # warm both paths (caches, connections) untimed
            for i in range(WARMUP):
                wrong = await page(i)
                if wrong is not None:
                    raise RuntimeError(f"the product page failed before the run: {wrong}")
        for name, page in sides.items():
            advance = report.task(f"{name}: {rate:g} pages/s",
                                  max(1, round(rate * seconds)))
            rows[name], samples[name] = await steady(page, rate, seconds, server, advance)
            await asyncio.sleep(1.0)  # let the server settle between the two
    finally:
        pool.close()
    rows["rest"]["requests_per_page"] = VARIANTS + 2
    return rows, samples
