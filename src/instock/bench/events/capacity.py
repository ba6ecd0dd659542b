"""Capacity: how many live clients one server process holds, what each costs, and how fast one
change reaches them all (see the package)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from instock.bench.events.plan import (
    ADJUST_PATH,
    CONNECT_PARALLEL,
    FANOUT_TIMEOUT,
    IDLE_SECONDS,
    LOCATION,
    SETTLE_SECONDS,
    Plan,
    seed,
)
from instock.bench.local import (
    READY_TIMEOUT,
    Reporter,
    Server,
    admin_token,
    own_cpu_seconds,
    raise_fd_limit,
    scratch_database,
    serve,
)
from instock.bench.sse import SseStream


@dataclass
class Crowd:
    """The capacity clients' shared state."""

    hot: str
    connected: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    target: int | None = None  # the hot SKU's version every client is waiting for
    arrivals: list[float] = field(default_factory=list)
    streams: list[SseStream] = field(default_factory=list)
    all_arrived: asyncio.Event = field(default_factory=asyncio.Event)


async def _client(crowd: Crowd, port: int, skus: list[str], gate: asyncio.Semaphore,
                  advance: Callable[[int], None]) -> None:
    async with gate:
        try:
            stream = await SseStream.open(port, skus)
        except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError) as exc:
            crowd.failures[type(exc).__name__] += 1
            advance(1)
            return
        crowd.streams.append(stream)
        events = stream.events()
        try:
            await asyncio.wait_for(_first_stock(events), READY_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, StopAsyncIteration) as exc:
            crowd.failures[type(exc).__name__] += 1
            advance(1)
            return
        crowd.connected += 1
        advance(1)
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        await _await_hot(crowd, events)


async def _first_stock(events: AsyncIterator[tuple[str, str]]) -> None:
    async for event, _ in events:
        if event == "stock":
            return
    raise StopAsyncIteration


async def _await_hot(crowd: Crowd, events: AsyncIterator[tuple[str, str]]) -> None:
    async for event, data in events:
        if event != "stock" or crowd.target is None:
            continue
        body = json.loads(data)
        if body["sku"] == crowd.hot and body["version"] >= crowd.target:
            crowd.arrivals.append(time.monotonic())
            if len(crowd.arrivals) >= crowd.connected:
                crowd.all_arrived.set()
            return


async def capacity(plan: Plan, workdir: Path, report: Reporter
                   ) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """One memory-bus server, `plan.clients` SSE connections; its memory and one fan-out."""
    report.note(f"capacity: starting a server; fd limit here {raise_fd_limit()}")
    async with scratch_database(plan.database, workdir, "instock_bench") as db_url, \
            serve(db_url, "memory://", workdir, consumers=plan.consumers) as server:
        skus = await seed(server, plan.skus)
        crowd = Crowd(hot=skus[0])
        await _warm(server, skus)
        before = server.rss_kb()
        samples = [(0, before / 1024)]
        advance = report.task("capacity: connecting", plan.clients)
        gate = asyncio.Semaphore(CONNECT_PARALLEL)
        cpu = server.cpu_seconds()
        started = time.monotonic()
        tasks = [asyncio.create_task(_client(crowd, server.port,
                                             list(dict.fromkeys([crowd.hot, skus[i % len(skus)]])),
                                             gate, advance))
                 for i in range(plan.clients)]
        await _sample_until_connected(crowd, server, plan.clients, samples)
        connect_seconds = time.monotonic() - started
        connect_cpu = server.cpu_seconds() - cpu
        await asyncio.sleep(SETTLE_SECONDS)
        after = server.rss_kb()
        idle = await _idle_cpu_percent(server)
        samples.append((crowd.connected, after / 1024))
        fanout = await _fanout(crowd, server)
        for stream in crowd.streams:
            stream.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    per_kb = (after - before) / crowd.connected if crowd.connected else None
    return {"bus": "memory", "clients": plan.clients, "connected": crowd.connected,
            "failed": dict(crowd.failures), "skus_per_client": 2,
            "rss_before_mb": round(before / 1024, 1), "rss_after_mb": round(after / 1024, 1),
            "per_connection_kb": None if per_kb is None else round(per_kb, 1),
            "connect_seconds": round(connect_seconds, 2),
            "connect_server_cpu_ms_per_client":
                round(connect_cpu * 1000 / crowd.connected, 2) if crowd.connected else None,
            "idle_server_cpu_percent": idle,
            **fanout}, samples


async def _warm(server: Server, skus: list[str]) -> None:
    """Open and close a few streams first, so one-time costs are not charged per client."""
    for _ in range(3):
        stream = await SseStream.open(server.port, skus[:2])
        await asyncio.wait_for(_first_stock(stream.events()), READY_TIMEOUT)
        stream.close()
    await asyncio.sleep(0.5)


async def _sample_until_connected(crowd: Crowd, server: Server, clients: int,
                                  samples: list[tuple[int, float]]) -> None:
    step = max(1, clients // 20)
    next_sample = step
    while crowd.connected + sum(crowd.failures.values()) < clients:
        await asyncio.sleep(0.05)
        if crowd.connected >= next_sample:
            samples.append((crowd.connected, server.rss_kb() / 1024))
            next_sample += step


async def _idle_cpu_percent(server: Server) -> float:
    """The server's CPU share holding its clients with nothing to push (heartbeats only)."""
    cpu, started = server.cpu_seconds(), time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    return round(100 * (server.cpu_seconds() - cpu) / (time.monotonic() - started), 1)


async def _fanout(crowd: Crowd, server: Server) -> dict[str, Any]:
    """One change to the hot SKU every client watches: how long until each had it."""
    if not crowd.connected:
        return {"fanout_ms": None, "fanout_p50_ms": None, "fanout_received": 0}
    headers = {"Authorization": f"Bearer {admin_token(server)}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) as api:
        now = await api.get(f"/v1/inventory/{crowd.hot}")
        now.raise_for_status()
        # Known before the write: the push can reach clients before the write's answer does.
        crowd.target = int(now.headers["etag"].strip('"')) + 1
        cpu, own = server.cpu_seconds(), own_cpu_seconds()
        sent = time.monotonic()
        response = await api.post(ADJUST_PATH, json={"sku": crowd.hot, "location": LOCATION,
                                                     "kind": "receive", "quantity": 1})
        answered = time.monotonic()
    response.raise_for_status()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(crowd.all_arrived.wait(), FANOUT_TIMEOUT)
    cpu, own = server.cpu_seconds() - cpu, own_cpu_seconds() - own
    ms = (np.array(crowd.arrivals) - sent) * 1000
    return {"fanout_ms": round(float(ms.max()), 1) if len(ms) else None,
            "fanout_p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "fanout_write_ms": round((answered - sent) * 1000, 1),
            "fanout_server_cpu_ms": round(cpu * 1000, 1),
            "fanout_bench_cpu_ms": round(own * 1000, 1),  # this process reading the pushes
            "fanout_received": len(ms)}
