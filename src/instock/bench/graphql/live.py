"""Subscriptions: commit-to-subscriber latency at a steady rate of changes, and how many
subscribers one server process holds (see the package)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from instock.bench.events.latency import (
    Drive,
    drive,
    http_driver,
    match,
    newest_versions,
    quantiles,
)
from instock.bench.events.plan import ADJUST_PATH, LOCATION
from instock.bench.graphql import clients
from instock.bench.graphql.plan import (
    CONNECT_PARALLEL,
    FANOUT_TIMEOUT,
    PUSH_GRACE_SECONDS,
    SETTLE_SECONDS,
    Plan,
    seed,
)
from instock.bench.local import (
    READY_TIMEOUT,
    Reporter,
    Server,
    admin_token,
    raise_fd_limit,
    scratch_database,
    serve,
)

Arrivals = list[list[tuple[str, int, float]]]  # per subscriber: (sku, version, monotonic)


async def changes(server: Server, plan: Plan, skus: list[str], workdir: Path,
                  report: Reporter) -> tuple[Drive, Arrivals, float]:
    """`plan.listeners` subscribers (their own process) on every SKU while stock adjustments
    are posted at `plan.changes_per_s` for `plan.seconds`: the drive, what each subscriber
    received, and the server's CPU seconds during the drive."""
    out = workdir / f"graphql-arrivals-{server.port}.json"
    proc = await clients.spawn({"mode": "receive", "port": server.port,
                                "token": admin_token(server), "skus": skus,
                                "listeners": plan.listeners, "out": str(out)})
    assert proc.stdin is not None
    try:
        await clients.read_message(proc, READY_TIMEOUT + 30)
        async with http_driver(server) as write:
            advance = report.task(f"subscription: {plan.changes_per_s:g} changes/s",
                                  max(1, round(plan.changes_per_s * plan.seconds)))
            cpu = server.cpu_seconds()
            result = await drive(write, skus, plan.changes_per_s, plan.seconds, advance)
            cpu = server.cpu_seconds() - cpu
        proc.stdin.write(json.dumps(newest_versions(result.commits)).encode() + b"\n")
        await proc.stdin.drain()
        await clients.read_message(proc, READY_TIMEOUT + PUSH_GRACE_SECONDS)
        arrivals: Arrivals = [[(sku, int(version), float(t)) for sku, version, t in one]
                              for one in json.loads(out.read_text())]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    return result, arrivals, cpu


def latency_row(plan: Plan, result: Drive, arrivals: Arrivals, cpu: float,
                stamps: dict[tuple[str, int], float]
                ) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """Every subscriber's arrivals matched with the commits by (sku, version): the JSON row
    and the samples (ms from the commit stamp; from the write's answer if stamps are
    missing)."""
    totals = {"received": 0, "coalesced": 0, "lost": 0}
    answer, send, commit = [], [], []
    for one in arrivals:
        counts, from_answer, from_send, from_commit = match(result.commits, one, stamps)
        for key in totals:
            totals[key] += counts[key]
        answer.append(from_answer)
        send.append(from_send)
        commit.append(from_commit)
    from_answer, from_send, from_commit = (np.concatenate(x) if x else np.array([])
                                           for x in (answer, send, commit))
    samples = from_commit if len(from_commit) else from_answer
    elapsed = max(result.finished - result.started, 1e-9)
    row = {"changes_per_s": plan.changes_per_s,
           "achieved_changes_per_s": round(len(result.commits) / elapsed, 1),
           **quantiles(samples),
           "measured_from": "commit stamp" if len(from_commit) else "write's answer",
           "subscribers": plan.listeners, "skus": len({c[0] for c in result.commits}),
           "changes": len(result.commits), "errors": sum(result.errors.values()),
           "error_kinds": dict(result.errors), **totals,
           "from_answer": quantiles(from_answer), "from_send": quantiles(from_send),
           "write_ms": quantiles(np.array([(c[3] - c[2]) * 1000 for c in result.commits])),
           "schedule_late_max_ms": round(result.late_ms, 1),
           "server_cpu_percent": round(100 * cpu / elapsed, 1)}
    return row, samples


async def capacity(plan: Plan, workdir: Path, report: Reporter
                   ) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """A fresh server on the memory bus holding `plan.subscribers` subscriptions, each its own
    WebSocket on a shared hot SKU and one of its own: its memory, and one change's fan-out."""
    report.note(f"capacity: starting a server; fd limit here {raise_fd_limit()}")
    async with scratch_database(plan.database, workdir, "instock_bench") as db_url, \
            serve(db_url, "memory://", workdir) as server:
        skus = await seed(server)
        hot = skus[0]
        token = admin_token(server)
        await _warm(server, token, skus)
        before = server.rss_kb()
        samples = [(0, before / 1024)]
        advance = report.task("capacity: subscribing", plan.subscribers)
        done = [0]

        def progress(message: dict[str, Any]) -> None:
            n = int(message["connected"]) + int(message["failed"])
            advance(n - done[0])
            done[0] = n
            samples.append((int(message["connected"]), server.rss_kb() / 1024))

        cpu = server.cpu_seconds()
        proc = await clients.spawn({"mode": "crowd", "port": server.port, "token": token,
                                    "hot": hot, "skus": skus, "clients": plan.subscribers,
                                    "parallel": CONNECT_PARALLEL})
        assert proc.stdin is not None
        try:
            held = await clients.read_message(proc, READY_TIMEOUT + 30, progress)
            advance(plan.subscribers - done[0])
            connect_cpu = server.cpu_seconds() - cpu
            connected = int(held["connected"])
            await asyncio.sleep(SETTLE_SECONDS)
            after = server.rss_kb()
            samples.append((connected, after / 1024))
            fanout = await _fanout(server, token, hot, proc, connected)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    per_kb = (after - before) / connected if connected else None
    return {"bus": "memory", "subscribers": connected, "asked": plan.subscribers,
            "failed": held["failed"], "skus_per_subscriber": 2,
            "rss_before_mb": round(before / 1024, 1), "rss_mb": round(after / 1024, 1),
            "per_subscriber_kb": None if per_kb is None else round(per_kb, 1),
            "connect_seconds": held["connect_seconds"],
            "connect_server_cpu_ms_per_subscriber":
                round(connect_cpu * 1000 / connected, 2) if connected else None,
            **fanout}, samples


async def _warm(server: Server, token: str, skus: list[str]) -> None:
    """Subscribe and leave a few times first, so one-time costs are not charged per
    subscriber."""
    for _ in range(3):
        subscriber = await clients.Subscriber.open(server.port, token, skus[:2])
        await asyncio.wait_for(anext(subscriber.changes()), READY_TIMEOUT)
        await subscriber.close()
    await asyncio.sleep(0.5)


async def _fanout(server: Server, token: str, hot: str, proc: asyncio.subprocess.Process,
                  connected: int) -> dict[str, Any]:
    """One change to the hot SKU every subscriber watches: how long until each had it,
    from sending the write."""
    assert proc.stdin is not None
    if not connected:
        return {"fanout_ms": None, "fanout_p50_ms": None, "fanout_received": 0}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) as api:
        now = await api.get(f"/v1/inventory/{hot}")
        now.raise_for_status()
        target = int(now.headers["etag"].strip('"')) + 1
        proc.stdin.write(json.dumps({"target": target}).encode() + b"\n")
        await proc.stdin.drain()
        await asyncio.sleep(0.2)  # the crowd has read its target before the write goes out
        cpu = server.cpu_seconds()
        sent = time.monotonic()
        response = await api.post(ADJUST_PATH, json={"sku": hot, "location": LOCATION,
                                                     "kind": "receive", "quantity": 1})
        answered = time.monotonic()
    response.raise_for_status()
    message = await clients.read_message(proc, FANOUT_TIMEOUT + 10)
    cpu = server.cpu_seconds() - cpu
    with contextlib.suppress(Exception):
        proc.stdin.close()
    ms = (np.array(message["arrivals"], dtype=np.float64) - sent) * 1000
    return {"fanout_ms": round(float(ms.max()), 1) if len(ms) else None,
            "fanout_p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "fanout_write_ms": round((answered - sent) * 1000, 1),
            "fanout_server_cpu_ms": round(cpu * 1000, 1),
            "fanout_received": len(ms), "fanout_missed": connected - len(ms)}
