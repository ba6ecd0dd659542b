"""`instock bench drop --mode queue`: a waiting room of `--waiting` shoppers (10,000 by default)
on one server process, each holding its ticket's live standing open (SSE), and what it costs.

One `instock serve` (a fresh database on the backend `--database` names, the in-memory bus) and
two queue drops:
- the room: `--waiting` shoppers take tickets after its start (their positions are then final)
  and each opens `GET /v1/drops/{id}/tickets/{ticket}/events` on a raw connection of its own
  (`bench/sse.py`; an httpx client per stream would cost this process more than the server);
  it admits `--rate` a second, so most of them wait for the whole run;
- the storefront's: a few shoppers admitted at once, whose visits are timed — `GET` the
  product, `GET` its stock (the storefront's server, a service token), `POST` a reservation
  with their pass — at `PROBE_RATE` visits a second (an open loop: a slow answer cannot slow the
  sender), for `--seconds` with no one waiting (unloaded), then again with the room full
  (loaded), from a process of their own (this one's loop is busy with the streams). The goal:
  loaded p99 within 2x unloaded.

Measured on the server process (/proc): its RSS and CPU time before and after the waiting
shoppers connect (memory and CPU per waiting shopper), its CPU share while it holds them with
nothing else to do (the room's ticks and pushes), and the pushes it sent. The admission rate is
the slope of admitted position against the time each stream was told `admitted` (a least-squares
fit over every admission seen while connected), against the drop's configured rate (goal ±5%).

This process drives every client on the same machine: reading ten thousand streams takes CPU
the server would otherwise have: its share of a core while the loaded visits run is reported
(`cpu.crowd_reader_percent`). (Running it at nice 19 was tried: it delayed what the streams saw
of admissions, and the measured admission rate with it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instock.bench.drop.run import Result
from instock.bench.events.plan import CONNECT_PARALLEL
from instock.bench.local import (
    READY_TIMEOUT,
    Reporter,
    Server,
    backend_of,
    logs_to_stderr,
    open_loop,
    raise_fd_limit,
    run_loop,
    scratch_database,
    serve,
    workdir,
)
from instock.bench.sse import SseStream
from instock.bench.wire import Answer, Pool
from instock.platform.auth import Role, TokenAuthority

PROBES = 20  # the storefront's admitted shoppers
PROBE_RATE = 20.0  # their visits per second (three requests each)
CONNECTIONS = 32  # keep-alive connections of the tickets and the visits
HOLD_SECONDS = 5.0  # how long the server's CPU is watched holding the room, nothing else to do
# (at most --seconds)
UNITS = 1_000_000  # stock enough that neither drop sells out
LOCATION = "bench-queue"
P2_GOAL, RATE_GOAL = 2.0, 0.05
SECONDS = 30.0  # each storefront measurement, unless asked: 1,800 requests for its p99


@dataclass(frozen=True)
class QueuePlan:
    waiting: int = 10_000
    rate: float = 20.0  # the room's admit_per_second
    seconds: float = SECONDS  # each storefront measurement
    database: str = "sqlite+aiosqlite:///bench.db"


@dataclass
class Crowd:
    """The waiting shoppers' streams, and what they were told."""

    connected: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    pushes: int = 0
    admissions: list[tuple[float, int]] = field(default_factory=list)  # (when told, position)
    streams: list[SseStream] = field(default_factory=list)


class Api:
    """The server's API over raw keep-alive connections, with tokens of its signing key."""

    def __init__(self, base_url: str, secret: str) -> None:
        self.pool = Pool(base_url, CONNECTIONS)
        self.tokens = TokenAuthority(secret, "instock", 4 * 3600)

    def bearer(self, role: Role, subject: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.mint(role, subject)}"}

    async def call(self, method: str, path: str, headers: dict[str, str],
                   body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Answer:
        answer = await self.pool.request(method, path, headers, body)
        if answer.status not in ok:
            raise RuntimeError(f"{method} {path}: {answer.status} {answer.body[:300]!r}")
        return answer


async def run(plan: QueuePlan, report: Reporter) -> Result:
    logs_to_stderr()
    report.note(f"starting a server; fd limit here {raise_fd_limit()}")
    with workdir("instock-bench-queue-") as tmp:
        async with scratch_database(plan.database, tmp, "instock_bench") as url, \
                serve(url, "memory://", tmp, env={"INSTOCK_DROP_PROOF_BITS": "0",
                                                  "INSTOCK_DRAIN_SECONDS": "0"}) as server:
            api = Api(server.base_url, server.secret)
            try:
                return await _measure(plan, server, api, report)
            finally:
                api.pool.close()


async def _measure(plan: QueuePlan, server: Server, api: Api, report: Reporter) -> Result:
    admin = api.bearer(Role.ADMIN, "bench")
    await api.call("POST", "/v1/locations", admin,
                   {"id": LOCATION, "name": "Bench", "kind": "warehouse"})
    probe_drop = await _drop(api, "q-shop", 10_000.0)
    room = await _drop(api, "q-room", plan.rate)
    passes = await _admitted(api, probe_drop, PROBES)
    report.note("storefront visits, nobody waiting")
    unloaded = await _visits_apart(server, passes, plan.seconds,
                                   report.task("unloaded visits", 1))
    positions = await _tickets(api, room, plan.waiting, report.task("tickets", plan.waiting))
    crowd = Crowd()
    rss, cpu = server.rss_kb(), server.cpu_seconds()
    advance = report.task("waiting shoppers connecting", plan.waiting)
    gate = asyncio.Semaphore(CONNECT_PARALLEL)
    tasks = [asyncio.create_task(_wait(crowd, server.port, room, token, position, gate,
                                       advance)) for token, position in positions]
    started = time.monotonic()
    while crowd.connected + sum(crowd.failures.values()) < plan.waiting:
        await asyncio.sleep(0.05)
    connect_seconds = time.monotonic() - started
    connect_cpu = server.cpu_seconds() - cpu
    await asyncio.sleep(1.0)  # let the connections settle before reading memory
    rss_after = server.rss_kb()
    hold = max(1.0, min(HOLD_SECONDS, plan.seconds))  # a short run (CI) holds a short while
    report.note(f"holding {crowd.connected} waiting shoppers for {hold:g} s")
    pushes, cpu, held_from = crowd.pushes, server.cpu_seconds(), time.monotonic()
    await asyncio.sleep(hold)
    held_for = time.monotonic() - held_from
    hold_cpu, hold_pushes = server.cpu_seconds() - cpu, crowd.pushes - pushes
    passes = await _admitted(api, probe_drop, PROBES)  # fresh: they last two minutes
    report.note("storefront visits, the room full")
    crowd_cpu, crowd_from = _own_cpu_seconds(), time.monotonic()
    loaded = await _visits_apart(server, passes, plan.seconds,
                                 report.task("loaded visits", 1))
    crowd_share = (_own_cpu_seconds() - crowd_cpu) / (time.monotonic() - crowd_from)
    for stream in crowd.streams:
        stream.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    connected = max(crowd.connected, 1)
    body = {
        "mode": "queue", "database": backend_of(plan.database), "waiting": plan.waiting,
        # This machine's load when done: the bench, the server and whatever else runs here
        # share its cores, and the latencies move with it.
        "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
        "connected": crowd.connected, "failed": dict(crowd.failures),
        "connect_seconds": round(connect_seconds, 2),
        "memory": {"rss_before_mb": round(rss / 1024, 1),
                   "rss_after_mb": round(rss_after / 1024, 1),
                   "per_waiting_kb": round((rss_after - rss) / connected, 2)},
        "cpu": {"connect_ms_per_waiting": round(connect_cpu * 1000 / connected, 3),
                "holding_percent": round(100 * hold_cpu / held_for, 1),
                "holding_us_per_waiting_per_s": round(hold_cpu * 1e6 / held_for / connected,
                                                      2),
                "pushes_per_s": round(hold_pushes / held_for, 1),
                # this process reading the streams while the loaded visits ran
                "crowd_reader_percent": round(100 * crowd_share, 1)},
        "storefront": _compare(unloaded, loaded),
        "admission": _admission(crowd.admissions, plan.rate)}
    body["summary"] = {"findings": _findings(body)}
    latencies = {"unloaded": _all(unloaded), "loaded": _all(loaded)}
    return Result(body, latencies)


async def _drop(api: Api, name: str, rate: float) -> tuple[str, str]:
    """A product of one SKU with plenty of stock, in a queue drop that starts now: (drop, sku)."""
    admin, sku = api.bearer(Role.ADMIN, "bench"), f"{name}-1"
    await api.call("POST", "/v1/products", admin, {
        "id": name, "title": name, "brand": "bench", "category": "bench", "price": "1",
        "variants": [{"sku": sku}]})
    await api.call("POST", "/v1/inventory/adjustments", admin, {
        "sku": sku, "location": LOCATION, "kind": "receive", "quantity": UNITS,
        "reason": "bench"})
    made = await api.call("POST", "/v1/drops", api.bearer(Role.MERCHANDISER, "bench"), {
        "skus": [sku], "starts_at": datetime.now(UTC).isoformat(), "mode": "queue",
        "admit_per_second": rate})
    return str(made.json()["id"]), sku


async def _admitted(api: Api, drop: tuple[str, str], shoppers: int
                    ) -> list[tuple[str, str]]:
    """Shoppers of the storefront's drop, admitted: (customer, pass) each."""
    service, passes = api.bearer(Role.SERVICE, "storefront"), []
    for i in range(shoppers):
        customer = f"shopper-{i}"
        ticket = (await api.call("POST", f"/v1/drops/{drop[0]}/tickets", service,
                                 {"customer_id": customer})).json()["ticket"]
        while True:
            standing = (await api.call("GET", f"/v1/drops/{drop[0]}/tickets/{ticket}",
                                       service)).json()
            if standing["pass"]:
                passes.append((customer, str(standing["pass"])))
                break
            await asyncio.sleep(0.05)
    return passes


async def _tickets(api: Api, room: tuple[str, str], waiting: int,
                   advance: Callable[[int], None]) -> list[tuple[str, int]]:
    """A place for each waiting shopper (the storefront's server asks for them): (ticket,
    position), positions final since the drop has started."""
    service = api.bearer(Role.SERVICE, "storefront")

    async def one(i: int) -> tuple[str, int]:
        answer = (await api.call("POST", f"/v1/drops/{room[0]}/tickets", service,
                                 {"customer_id": f"waiting-{i}"})).json()
        advance(1)
        return str(answer["ticket"]), int(answer["position"])

    return list(await asyncio.gather(*(one(i) for i in range(waiting))))


async def _wait(crowd: Crowd, port: int, room: tuple[str, str], ticket: str, position: int,
                gate: asyncio.Semaphore, advance: Callable[[int], None]) -> None:
    """One waiting shopper: its stream open, every push counted, its admission timed."""
    async with gate:
        try:
            stream = await SseStream.open_path(port, f"/v1/drops/{room[0]}/tickets/{ticket}"
                                                     "/events")
        except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError) as exc:
            crowd.failures[type(exc).__name__] += 1
            advance(1)
            return
        crowd.streams.append(stream)
        events = stream.events()
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                _, data = await anext(events)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, StopAsyncIteration) as exc:
            crowd.failures[type(exc).__name__] += 1
            advance(1)
            return
        crowd.connected += 1
        advance(1)
    admitted = '"admitted":true' in data
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        async for event, data in events:
            if event != "standing":
                continue
            crowd.pushes += 1
            now_admitted = '"admitted":true' in data
            if now_admitted and not admitted:
                crowd.admissions.append((time.monotonic(), position))
            admitted = now_admitted


async def _visits_apart(server: Server, passes: list[tuple[str, str]], seconds: float,
                        advance: Callable[[int], None]) -> dict[str, list[float]]:
    """`_visits` from a process of its own: this one reads ten thousand streams, and its event
    loop's delays would count as the server's."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ms = await loop.run_in_executor(pool, _visits_in_process, server.base_url,
                                        server.secret, passes, seconds)
    advance(1)
    return ms


def _visits_in_process(base_url: str, secret: str, passes: list[tuple[str, str]],
                       seconds: float) -> dict[str, list[float]]:
    async def visits() -> dict[str, list[float]]:
        api = Api(base_url, secret)
        try:
            return await _visits(api, passes, seconds)
        finally:
            api.pool.close()

    return run_loop(visits())


async def _visits(api: Api, passes: list[tuple[str, str]],
                  seconds: float) -> dict[str, list[float]]:
    """Storefront visits of admitted shoppers at PROBE_RATE for `seconds`: each request's
    latency (ms) by kind; a failed request counts under `errors`."""
    heads = [(api.pool.head("GET", "/v1/products/q-shop", api.bearer(Role.CUSTOMER, c)),
              api.pool.head("POST", "/v1/reservations",
                            {**api.bearer(Role.CUSTOMER, c), "Drop-Pass": p}, json_body=True))
             for c, p in passes]
    stock = api.pool.head("GET", "/v1/inventory/q-shop-1", api.bearer(Role.SERVICE, "shop"))
    reserve = b'{"lines": [{"sku": "q-shop-1", "quantity": 1}]}'
    ms: dict[str, list[float]] = {"product": [], "stock": [], "reserve": [], "errors": []}

    async def timed(kind: str, head: bytes, body: bytes, ok: int) -> None:
        started = time.monotonic()
        answer = await api.pool.send(head, body)
        (ms[kind] if answer.status == ok else ms["errors"]).append(
            (time.monotonic() - started) * 1000)

    async def visit(i: int, _: float) -> None:
        product, reservation = heads[i % len(heads)]
        await timed("product", product, b"", 200)
        await timed("stock", stock, b"", 200)
        await timed("reserve", reservation, reserve, 201)

    await open_loop(PROBE_RATE, seconds, visit, drain=30.0)
    return ms


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stats(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"requests": 0, "p50_ms": None, "p99_ms": None}
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def _all(ms: dict[str, list[float]]) -> NDArray[np.float64]:
    return np.array([v for kind in ("product", "stock", "reserve") for v in ms[kind]])


def _compare(unloaded: dict[str, list[float]], loaded: dict[str, list[float]]) -> dict[str, Any]:
    def phase(ms: dict[str, list[float]]) -> dict[str, Any]:
        return {"all": _stats(list(_all(ms))), "errors": len(ms["errors"]),
                **{kind: _stats(ms[kind]) for kind in ("product", "stock", "reserve")}}

    before, after = phase(unloaded), phase(loaded)
    p99 = (round(after["all"]["p99_ms"] / before["all"]["p99_ms"], 2)
           if before["all"]["p99_ms"] and after["all"]["p99_ms"] else None)
    p50 = (round(after["all"]["p50_ms"] / before["all"]["p50_ms"], 2)
           if before["all"]["p50_ms"] and after["all"]["p50_ms"] else None)
    return {"visits_per_s": PROBE_RATE, "unloaded": before, "loaded": after,
            "p50_ratio": p50, "p99_ratio": p99, "goal": f"loaded p99 within {P2_GOAL:g}x",
            "within_goal": p99 is not None and p99 <= P2_GOAL}


def _admission(seen: list[tuple[float, int]], rate: float) -> dict[str, Any]:
    """The room's admission rate as the streams saw it: admitted position against the time
    each was told, fitted by least squares (ticks make each time late by up to a tick; over
    many ticks that leaves the slope alone)."""
    if len(seen) < 2 or len({t for t, _ in seen}) < 2:
        return {"configured_per_s": rate, "measured_per_s": None, "observed": len(seen),
                "error_pct": None, "goal": f"±{RATE_GOAL:.0%}", "within_goal": False}
    times = np.array([t for t, _ in seen])
    positions = np.array([p for _, p in seen], dtype=np.float64)
    slope = float(np.polyfit(times - times.min(), positions, 1)[0])
    error = (slope - rate) / rate
    return {"configured_per_s": rate, "measured_per_s": round(slope, 3), "observed": len(seen),
            "over_seconds": round(float(times.max() - times.min()), 1),
            "error_pct": round(100 * error, 2), "goal": f"±{RATE_GOAL:.0%}",
            "within_goal": abs(error) <= RATE_GOAL}


def _findings(body: dict[str, Any]) -> list[str]:
    found = []
    if body["connected"] < body["waiting"]:
        found.append(f"{body['waiting'] - body['connected']} waiting shoppers could not "
                     f"connect: {body['failed']}")
    store = body["storefront"]
    if not store["within_goal"]:
        found.append(f"storefront p99 loaded is {store['p99_ratio']}x unloaded (goal "
                     f"{P2_GOAL:g}x)")
    for phase in ("unloaded", "loaded"):
        if store[phase]["errors"]:
            found.append(f"{store[phase]['errors']} storefront requests failed ({phase})")
    admission = body["admission"]
    if not admission["within_goal"]:
        found.append(f"admission rate {admission['measured_per_s']}/s against "
                     f"{admission['configured_per_s']}/s configured (goal ±5%)")
    return found
