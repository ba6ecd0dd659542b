"""`instock bench events`: how fast a committed change reaches a live client, per bus, and how
many live clients one process holds.

Latency, per bus. A fresh database and a real `instock serve` process on that bus, running the
outbox relay in-process as the embedded default does (the sweeper and the event consumers are
off unless `--consumers`: neither is on the commit-to-client path, and a fleet runs consumers as
workers). A receiver process of its own holds SSE connections subscribed to every SKU (at most
100 per connection) and stamps each `event: stock` frame's (sku, version) when it arrives. The
driver changes stock on an open-loop schedule: change i is due at t0 + i/rate whatever happened
to the changes before it, so a slow server does not lower the offered rate (changes it cannot
take yet queue in the bench; `achieved_rate` says what it sustained).

When was a version committed? Somewhere between sending the write and reading its answer. The
answer carries the SKU's new version (the ETag), so for every version received:
- `p50_ms` ... `max_ms` are measured from the answer: an under-estimate, it leaves out the
  server's re-read of the stock after commit and the answer's trip back to the bench; the push
  often wins that race, so these can be negative;
- `from_send` is measured from sending the write: an over-estimate, it includes the write;
- `from_commit` is measured from the outbox row's `created_at`, stamped inside the committing
  transaction just before COMMIT (read back from the database after the run): usually the
  closest, an over-estimate by the time from that stamp to the end of COMMIT, which grows when
  the committing process is busy (then `p50_ms` can be the better one).
The truth lies between the first two (and is never below zero). The processes share one
machine, so their clocks agree: the receiver stamps CLOCK_MONOTONIC (`time.monotonic`),
converted to wall time to meet the server's UTC stamps.

Where the time goes: `server_cpu_percent` is the server's CPU share during the drive (one core
is 100: near it, the one Python process is the limit, and pushes wait behind writes in its
event loop); `write_ms` is the writes' own latency, queueing in the bench included.

A client may skip versions (each connection keeps only the newest pending update per SKU): a
committed version not received while a newer one of that SKU was is `coalesced`, not a latency
sample; one never superseded either is `lost` (it should be 0).

Drivers: `http` (default) posts adjustments to the server itself, the honest end-to-end path.
`service` commits through InventoryService in the bench process, as a worker would: the answer
is then the commit itself (no HTTP hop), but writes queued on one SKU often read back a later
version than their own (`versions_reported_twice`), so trust its `from_commit`. `outbox`
commits only what the push path sees, the SKU's version bump and its stock_changed event, from
the bench process: not a real stock change, but it reaches rates the write path cannot on a
small machine, so it measures the push path (relay, bus, hub, SSE) alone. For both, the
server's relay hears of a commit made by another process only through PostgreSQL's NOTIFY; on
SQLite it finds it on its 1 s fallback poll, so there they measure the poll, not the push.

Capacity. One server on the memory bus; `--clients` SSE connections from this process over raw
asyncio streams (an httpx client per connection would cost more than the server does), each
subscribed to a shared hot SKU and one of its own, counted as connected when its first
`event: stock` frame arrives. The server's RSS (VmRSS, with its children) is read before and
after; then one change to the hot SKU goes out and `fanout_ms` is how long until every client
had it, measured from sending that write (`fanout_write_ms` is the write's own share; the
first clients usually have the change before its answer arrives). Every connection is a file
descriptor on both sides: this process raises its soft RLIMIT_NOFILE to the hard limit before
it starts the server, which inherits it (a server started some other way needs `ulimit -n`
above its client count too).

Databases: `--database` only chooses the backend and, for PostgreSQL, the server and login. The
bench never writes into the database it names: SQLite runs get new files in a temporary
directory, PostgreSQL runs a new database per server (CREATE DATABASE, so the login needs that
right), dropped afterwards. Each networked bus run gets its own stream (`?stream=`), deleted
afterwards, so runs never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray

from instock.bench.local import (
    free_port,
    instock_executable,
    open_loop,
    scratch_database,
    wait_answering,
)
from instock.bench.wire import Connection, read_body, read_chunk, read_head, request_head
from instock.platform.auth import Role, TokenAuthority

T = TypeVar("T")

HOST = "127.0.0.1"
LOCATION = "bench-wh"
ADJUST_PATH = "/v1/inventory/adjustments"
SKUS_PER_STREAM = 100  # the server's limit per SSE connection
# Writes in flight at once (the HTTP driver's keep-alive connections): enough that a write
# waiting on one SKU does not hold up the others, few enough not to drown one server process.
# Changes due beyond that queue in the bench, so `write_ms` includes that wait.
WRITERS = 64
CONNECT_PARALLEL = 200  # capacity clients connecting at once (stays under the listen backlog)
READY_TIMEOUT = 60.0
DRAIN_TIMEOUT = 120.0  # after the schedule ends: how long unanswered writes may still finish
FANOUT_TIMEOUT = 60.0
# After the last change, the longest wait for its push (longer than the relay's 1 s fallback
# poll, all the service driver on SQLite has); what arrives later counts as lost.
PUSH_GRACE_SECONDS = 5.0
SETTLE_SECONDS = 1.0  # after the last client connected, before reading the server's memory
IDLE_SECONDS = 3.0  # how long the held clients' idle cost is measured
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_NATS = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class Plan:
    buses: list[str]
    rate: float
    seconds: float
    skus: int
    clients: int
    database: str  # chooses the backend (and PostgreSQL server); never written into
    driver: str = "http"  # or "service", "outbox"
    consumers: bool = False


class Reporter(Protocol):
    def task(self, description: str, total: int) -> Callable[[int], None]:
        """Start a progress bar; the callable advances it."""

    def note(self, text: str) -> None:
        """A line of progress text (stderr)."""


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is there (uvicorn's standard extra brings it): the load generator
    and the clients then take less of the CPU the server needs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# -- choosing buses ----------------------------------------------------------------------------


def default_buses() -> list[str]:
    """memory:// always; Redis and NATS (INSTOCK_REDIS_URL / INSTOCK_NATS_URL, else their
    standard local ports) only if something accepts a connection there."""
    candidates = [os.environ.get("INSTOCK_REDIS_URL") or DEFAULT_REDIS,
                  os.environ.get("INSTOCK_NATS_URL") or DEFAULT_NATS]
    return ["memory://", *(url for url in candidates if _answers(url))]


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (6379 if parts.scheme.startswith("redis") else 4222)
    try:
        with socket.create_connection((parts.hostname or HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def with_stream(url: str, stream: str) -> str:
    """The bus URL with this run's own stream (memory:// has none: it lives in the server)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return url
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "stream"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("stream", stream)])))


def bus_label(url: str) -> str:
    return urlsplit(url).scheme


async def drop_stream(url: str) -> None:
    """Delete the run's stream from Redis or NATS, so benches leave nothing behind."""
    parts = urlsplit(url)
    stream = dict(parse_qsl(parts.query)).get("stream")
    if stream is None:
        return
    if parts.scheme.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.from_url(urlunsplit(parts._replace(query="")))
        try:
            await client.delete(stream)
        finally:
            await client.aclose()
    elif parts.scheme in {"nats", "tls"}:
        from nats.aio.client import Client

        nc = Client()
        await nc.connect(urlunsplit(parts._replace(query="")), connect_timeout=5,
                         max_reconnect_attempts=0)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()


# -- databases ---------------------------------------------------------------------------------


def backend_of(url: str) -> str:
    return "sqlite" if sa.make_url(url).get_backend_name() == "sqlite" else "postgresql"


# -- the server process ------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (every SSE connection is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    database_url: str
    secret: str

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rss_kb(self) -> int:
        """Resident memory of the server and any children it forked (uvicorn workers)."""
        return sum(_vmrss_kb(pid) for pid in _process_tree(self.process.pid))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and its children have used so far."""
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.process.pid))

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                pids.extend(_process_tree(int(child)))
    return pids


def _cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError):
        # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _vmrss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@asynccontextmanager
async def serve(database_url: str, bus_url: str, workdir: Path, *,
                consumers: bool = False) -> AsyncIterator[Server]:
    """`instock serve` on its own port; stopped (SIGTERM, then SIGKILL) on the way out.

    It inherits this process's file descriptor limit, which `run` raised first (preexec_fn
    could do it in the child, but is unsafe once this process has threads)."""
    secret = secrets.token_urlsafe(32)
    port = free_port(HOST)
    log_path = workdir / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
    env.update(INSTOCK_DATABASE_URL=database_url, INSTOCK_BUS_URL=bus_url,
               INSTOCK_JWT_SECRET=secret, INSTOCK_STATE_DIR=str(workdir / "state"),
               INSTOCK_LOG_LEVEL="warning", INSTOCK_RUN_SWEEPER="false",
               INSTOCK_RUN_CONSUMERS=str(consumers).lower())
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [instock_executable(), "serve", "--host", HOST, "--port", str(port)], env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(process, port, log_path, database_url, secret)
    try:
        await wait_answering(f"{server.base_url}/readyz", log_path, READY_TIMEOUT,
                             server.process)
        yield server
    finally:
        await asyncio.to_thread(_stop, process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)




def admin_token(server: Server) -> str:
    return TokenAuthority(server.secret, "instock", 3600 * 4).mint(Role.ADMIN, "bench")


async def seed(server: Server, count: int) -> list[str]:
    """A bench location and `count` SKUs (100 variants per product), each with some stock."""
    skus = [f"bench-{i:05d}" for i in range(count)]
    headers = {"Authorization": f"Bearer {admin_token(server)}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers,
                                 timeout=60) as api:
        (await api.post("/v1/locations", json={"id": LOCATION, "name": "Bench warehouse",
                                               "kind": "warehouse"})).raise_for_status()
        for start in range(0, count, 100):
            chunk = skus[start:start + 100]
            (await api.post("/v1/products", json={
                "id": f"bench-p{start // 100}", "title": "Bench product", "brand": "bench",
                "category": "bench", "price": "1",
                "variants": [{"sku": s, "attributes": {"n": s}} for s in chunk]})
             ).raise_for_status()
        for sku in skus:  # also warms the write path before anything is timed
            (await api.post(ADJUST_PATH, json={"sku": sku, "location": LOCATION,
                                               "kind": "receive", "quantity": 1000})
             ).raise_for_status()
    return skus


# -- raw HTTP/1.1 over asyncio streams ---------------------------------------------------------


class Writer:
    """One keep-alive connection posting stock adjustments as JSON."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = Connection(HOST, port)
        self.head = request_head(HOST, port, "POST", ADJUST_PATH, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})

    async def post(self, body: bytes) -> tuple[int, dict[str, str], float]:
        """Status and headers of the answer, and when the request went out."""
        answer = await self.connection.send(self.head, body)
        return answer.status, answer.headers, answer.sent

    def close(self) -> None:
        self.connection.close()


class SseStream:
    """An SSE subscription read straight off the socket (chunked transfer encoding)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, skus: list[str]) -> SseStream:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(f"GET /v1/stream/inventory?skus={','.join(skus)} HTTP/1.1\r\n"
                     f"Host: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        try:
            status, headers = await read_head(reader)
            if status != 200:
                body = await read_body(reader, headers)
                raise RuntimeError(f"SSE answered {status}: {body[:300]!r}")
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def events(self) -> AsyncIterator[tuple[str, str]]:
        """(event, data) for every frame that has data; comments (heartbeats) are skipped."""
        pending = b""
        while chunk := await read_chunk(self.reader):
            *frames, pending = (pending + chunk).split(b"\n\n")
            for frame in frames:
                parsed = _frame(frame)
                if parsed is not None:
                    yield parsed

    def close(self) -> None:
        self.writer.close()


def _frame(frame: bytes) -> tuple[str, str] | None:
    event, data = "message", []
    for line in frame.decode().split("\n"):
        name, _, value = line.partition(":")
        if name == "event":
            event = value.strip()
        elif name == "data":
            data.append(value.removeprefix(" "))
    return (event, "\n".join(data)) if data else None


def stream_groups(skus: list[str]) -> list[list[str]]:
    return [skus[i:i + SKUS_PER_STREAM] for i in range(0, len(skus), SKUS_PER_STREAM)]


# -- the receiver (its own process, so the driver's work does not delay its stamps) -----------


async def receive(port: int, groups: list[list[str]], ready: Callable[[], None],
                  stop: Awaitable[str]) -> list[tuple[str, int, float]]:
    """Hold one SSE connection per group; once every SKU's first state is in, call `ready`.
    `stop` gives the newest version of every SKU written: once those are in (or after a grace
    period), return every (sku, version, arrival) seen."""
    arrivals: list[tuple[str, int, float]] = []
    wanted = {sku for group in groups for sku in group}
    seen: dict[str, int] = {}
    all_seen = asyncio.Event()
    expected: dict[str, int] = {}
    caught_up = asyncio.Event()

    async def follow(skus: list[str]) -> None:
        stream = await SseStream.open(port, skus)
        try:
            async for event, data in stream.events():
                if event == "stock":
                    now = time.monotonic()
                    body = json.loads(data)
                    sku, version = body["sku"], int(body["version"])
                    arrivals.append((sku, version, now))
                    seen[sku] = max(seen.get(sku, 0), version)
                    if len(seen) == len(wanted):
                        all_seen.set()
                    if expected and _caught_up(seen, expected):
                        caught_up.set()
        finally:
            stream.close()

    tasks = [asyncio.create_task(follow(group)) for group in groups]
    try:
        await _first(all_seen.wait(), tasks, READY_TIMEOUT)
        ready()
        waiter = asyncio.ensure_future(stop)
        await _first(waiter, tasks, None)
        expected.update(json.loads(waiter.result() or "{}"))
        if not _caught_up(seen, expected):
            with contextlib.suppress(TimeoutError):
                await _first(caught_up.wait(), tasks, PUSH_GRACE_SECONDS)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return arrivals


def _caught_up(seen: dict[str, int], expected: dict[str, int]) -> bool:
    return all(seen.get(sku, 0) >= version for sku, version in expected.items())


async def _first(awaitable: Awaitable[Any], tasks: list[asyncio.Task[None]],
                 timeout: float | None) -> None:
    """Wait for `awaitable`, but fail at once if a connection task ends first (it broke)."""
    waiter = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([waiter, *tasks], timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if waiter not in done:
        for task in done:
            task.result()  # raises what broke the connection
        if done:
            raise RuntimeError("SSE connection ended")
        raise TimeoutError("SSE clients not ready in time")


def _receiver_main(port: int, skus: list[str], out: Path) -> None:
    """Entry of the receiver process: "ready" on stdout; then a line on stdin (JSON: the
    newest version of every SKU written); then the arrivals as JSON in `out`, and "done"."""
    async def main() -> list[tuple[str, int, float]]:
        loop = asyncio.get_running_loop()
        stop = loop.run_in_executor(None, sys.stdin.readline)

        def ready() -> None:
            print("ready", flush=True)

        return await receive(port, stream_groups(skus), ready, stop)

    arrivals = run_loop(main())
    out.write_text(json.dumps(arrivals))
    print("done", flush=True)


@asynccontextmanager
async def receiver(port: int, skus: list[str], workdir: Path) -> AsyncIterator[
        Callable[[dict[str, int]], Awaitable[list[tuple[str, int, float]]]]]:
    """Start the receiver process; yields a function that, given the newest version written
    per SKU, waits for those (a grace period at most) and returns the arrivals."""
    out = workdir / f"arrivals-{port}.json"
    args = json.dumps({"port": port, "skus": skus, "out": str(out)})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "instock.bench.events", args, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def finish(newest: dict[str, int]) -> list[tuple[str, int, float]]:
        stdin.write(json.dumps(newest).encode() + b"\n")
        await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), READY_TIMEOUT + PUSH_GRACE_SECONDS)
        if line.strip() != b"done":
            raise RuntimeError("the SSE receiver failed (see stderr above)")
        return [(sku, int(version), float(t))
                for sku, version, t in json.loads(out.read_text())]

    try:
        line = await asyncio.wait_for(stdout.readline(), READY_TIMEOUT + 30)
        if line.strip() != b"ready":
            raise RuntimeError("the SSE receiver failed to connect (see stderr above)")
        yield finish
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


# -- the drivers -------------------------------------------------------------------------------

Commit = tuple[str, int, float, float]  # sku, version, sent, answered
Write = Callable[[str], Awaitable[Commit]]


@asynccontextmanager
async def http_driver(server: Server) -> AsyncIterator[Write]:
    """Adjust stock over HTTP: a pool of raw keep-alive connections (httpx costs the bench
    more CPU per request than the server spends, and both share the machine)."""
    token = admin_token(server)
    pool: asyncio.LifoQueue[Writer] = asyncio.LifoQueue()
    writers = [Writer(server.port, token) for _ in range(WRITERS)]
    for writer in writers:
        pool.put_nowait(writer)

    async def write(sku: str) -> Commit:
        body = json.dumps({"sku": sku, "location": LOCATION, "kind": "receive",
                           "quantity": 1}).encode()
        writer = await pool.get()
        try:
            status, headers, sent = await writer.post(body)
            answered = time.monotonic()
        finally:
            pool.put_nowait(writer)
        if status != 200:
            raise WriteFailed(str(status))
        return sku, int(headers["etag"].strip('"')), sent, answered

    try:
        yield write
    finally:
        for writer in writers:
            writer.close()


@asynccontextmanager
async def service_driver(server: Server) -> AsyncIterator[Write]:
    """Adjust stock through InventoryService in this process, on the server's database."""
    from instock.app import build
    from instock.config import Settings
    from instock.inventory.model import Adjustment, AdjustmentKind
    from instock.platform.entry_context import EntryContext

    settings = Settings(database_url=server.database_url, jwt_secret=server.secret,
                        bus_url="memory://", run_relay=False, run_sweeper=False,
                        run_consumers=False, migrate_on_start=False)
    container = build(settings)
    context = EntryContext(actor="bench:events", reason="bench")
    gate = asyncio.Semaphore(WRITERS)  # as many in flight as the HTTP driver has connections

    async def write(sku: str) -> Commit:
        async with gate:
            sent = time.monotonic()
            view = await container.inventory.adjust(
                Adjustment(sku, LOCATION, AdjustmentKind.RECEIVE, 1), context)
            return sku, view.version, sent, time.monotonic()

    try:
        yield write
    finally:
        await container.close()


@asynccontextmanager
async def outbox_driver(server: Server) -> AsyncIterator[Write]:
    """Commit only what the push path sees: the SKU's version bump and its stock_changed
    event, in one transaction from this process (on PostgreSQL its NOTIFY wakes the relay)."""
    from instock.inventory import store
    from instock.platform.bus import outbox
    from instock.platform.db import Database

    db = Database(server.database_url, pool_size=10)
    gate = asyncio.Semaphore(WRITERS)

    async def write(sku: str) -> Commit:
        async with gate:
            sent = time.monotonic()
            async with db.write() as conn:
                version = (await store.bump_items(conn, [sku]))[sku]
                await outbox.add(conn, [_stock_changed(sku, version)])
            return sku, version, sent, time.monotonic()

    try:
        yield write
    finally:
        await db.dispose()


def _stock_changed(sku: str, version: int) -> Any:
    """A valid stock_changed event for `sku` at `version` (the stock itself is not touched)."""
    from instock.inventory.events import StockChanged, StockTotals

    buckets = {"on_hand": 1000, "reserved": 0, "committed": 0, "safety_stock": 0,
               "unsellable": 0, "quarantined": 0, "incoming": 0}
    return StockChanged(sku=sku, sku_version=version, location=LOCATION, version=version,
                        available=1000, reason="receive",
                        totals=StockTotals(available=1000, **buckets), **buckets)


DRIVERS = {"http": http_driver, "service": service_driver, "outbox": outbox_driver}


class WriteFailed(Exception):
    """A write the server refused (its status is the message)."""


@dataclass
class Drive:
    commits: list[Commit] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    last_sent: float = 0.0
    finished: float = 0.0
    late_ms: float = 0.0  # the worst delay between a change's due time and its start
    offered: int = 0


async def drive(write: Write, skus: list[str], rate: float, seconds: float,
                advance: Callable[[int], None]) -> Drive:
    """Open loop: change i is started at t0 + i/rate, to SKU i mod N, however slow earlier
    ones are; every change runs as its own task."""
    result = Drive()

    async def one(i: int) -> None:
        try:
            result.commits.append(await write(skus[i % len(skus)]))
        except WriteFailed as exc:
            result.errors[f"status {exc}"] += 1
        except Exception as exc:  # counted, not fatal: errors are part of the result
            result.errors[type(exc).__name__] += 1
        advance(1)

    schedule = await open_loop(rate, seconds, lambda i, _due: one(i), DRAIN_TIMEOUT)
    result.started, result.last_sent = schedule.started, schedule.last_sent
    result.late_ms, result.offered = schedule.late_ms, schedule.offered
    if schedule.unfinished:
        result.errors["unfinished"] = schedule.unfinished
    result.finished = max((c[3] for c in result.commits), default=result.started)
    return result


# -- latency -----------------------------------------------------------------------------------


def newest_versions(commits: list[Commit]) -> dict[str, int]:
    newest: dict[str, int] = {}
    for sku, version, _, _ in commits:
        newest[sku] = max(newest.get(sku, 0), version)
    return newest


def _quantiles(ms: NDArray[np.float64]) -> dict[str, float | None]:
    if not len(ms):
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "max_ms": round(float(ms.max()), 2)}


Samples = NDArray[np.float64]


def match(commits: list[Commit], arrivals: list[tuple[str, int, float]],
          stamps: dict[tuple[str, int], float]
          ) -> tuple[dict[str, Any], Samples, Samples, Samples]:
    """Pair commits with arrivals by (sku, version): counts, and latencies in ms from the
    answer, from the send and from the commit stamp (`stamps`, wall time).

    Two writes to one SKU racing can both read back the later version (the answer re-reads the
    stock after commit): that version then keeps the earliest send and answer (both bound its
    commit), and the version neither reported is simply not timed."""
    committed: dict[tuple[str, int], tuple[float, float]] = {}
    for sku, version, sent, answered in commits:
        seen = committed.get((sku, version))
        committed[(sku, version)] = (sent, answered) if seen is None else \
            (min(seen[0], sent), min(seen[1], answered))
    first: dict[tuple[str, int], float] = {}
    newest: dict[str, int] = {}
    for sku, version, t in arrivals:
        first.setdefault((sku, version), t)
        newest[sku] = max(newest.get(sku, 0), version)
    wall = time.time() - time.monotonic()  # one offset for the machine
    from_answer, from_send, from_commit = [], [], []
    coalesced = lost = 0
    for (sku, version), (sent, answered) in committed.items():
        arrived = first.get((sku, version))
        if arrived is not None:
            from_answer.append((arrived - answered) * 1000)
            from_send.append((arrived - sent) * 1000)
            if (sku, version) in stamps:
                from_commit.append((arrived + wall - stamps[(sku, version)]) * 1000)
        elif newest.get(sku, 0) > version:
            coalesced += 1
        else:
            lost += 1
    counts = {"received": len(from_answer), "coalesced": coalesced, "lost": lost,
              "versions_reported_twice": len(commits) - len(committed)}
    return (counts, np.array(from_answer, dtype=np.float64),
            np.array(from_send, dtype=np.float64), np.array(from_commit, dtype=np.float64))


async def commit_stamps(database_url: str) -> dict[tuple[str, int], float]:
    """(sku, version) -> the wall time its stock_changed row was written (inside the commit)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from instock.platform.bus.outbox import outbox

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(outbox.c.subject, outbox.c.sequence, outbox.c.created_at)
                .where(outbox.c.type == "inventory.stock_changed.v1"))).all()
    finally:
        await engine.dispose()
    stamps: dict[tuple[str, int], float] = {}
    for subject, sequence, created in rows:
        if sequence is not None:
            key = (subject, int(sequence))
            stamps[key] = min(stamps.get(key, math.inf), created.timestamp())
    return stamps


async def latency(plan: Plan, bus_url: str, workdir: Path, report: Reporter
                  ) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """One bus: a fresh database and server, the receiver, the drive; the bus's JSON row and
    the latency samples to draw (ms from the commit stamp, the closest estimate; from the
    answer, which the push often beats, only if the stamps are missing)."""
    label = bus_label(bus_url)
    report.note(f"{label}: starting a server on a fresh {backend_of(plan.database)} database")
    async with scratch_database(plan.database, workdir, "instock_bench") as db_url, \
            serve(db_url, bus_url, workdir, consumers=plan.consumers) as server:
        skus = await seed(server, plan.skus)
        driver = DRIVERS[plan.driver]
        async with receiver(server.port, skus, workdir) as finish, driver(server) as write:
            advance = report.task(f"{label}: {plan.rate:g} changes/s",
                                  max(1, round(plan.rate * plan.seconds)))
            cpu = server.cpu_seconds()
            result = await drive(write, skus, plan.rate, plan.seconds, advance)
            cpu = server.cpu_seconds() - cpu
            arrivals = await finish(newest_versions(result.commits))
        stamps = await commit_stamps(db_url)
    counts, from_answer, from_send, from_commit = match(result.commits, arrivals, stamps)
    elapsed = max(result.finished - result.started, 1e-9)
    row = {"bus": label, "driver": plan.driver, "target_rate": plan.rate,
           "offered_rate": round(result.offered
                                 / max(result.last_sent - result.started, 1e-9), 1),
           "achieved_rate": round(len(result.commits) / elapsed, 1),
           "changes": len(result.commits), "errors": sum(result.errors.values()),
           "error_kinds": dict(result.errors), **counts, **_quantiles(from_answer),
           "from_send": _quantiles(from_send), "from_commit": _quantiles(from_commit),
           "write_ms": _quantiles(np.array([(c[3] - c[2]) * 1000 for c in result.commits])),
           "schedule_late_max_ms": round(result.late_ms, 1),
           # Near 100 (one core: the GIL) means the server process itself is the limit.
           "server_cpu_percent": round(100 * cpu / elapsed, 1)}
    return row, from_commit if len(from_commit) else from_answer


# -- capacity ----------------------------------------------------------------------------------


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
        cpu, own = server.cpu_seconds(), _own_cpu_seconds()
        sent = time.monotonic()
        response = await api.post(ADJUST_PATH, json={"sku": crowd.hot, "location": LOCATION,
                                                     "kind": "receive", "quantity": 1})
        answered = time.monotonic()
    response.raise_for_status()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(crowd.all_arrived.wait(), FANOUT_TIMEOUT)
    cpu, own = server.cpu_seconds() - cpu, _own_cpu_seconds() - own
    ms = (np.array(crowd.arrivals) - sent) * 1000
    return {"fanout_ms": round(float(ms.max()), 1) if len(ms) else None,
            "fanout_p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "fanout_write_ms": round((answered - sent) * 1000, 1),
            "fanout_server_cpu_ms": round(cpu * 1000, 1),
            "fanout_bench_cpu_ms": round(own * 1000, 1),  # this process reading the pushes
            "fanout_received": len(ms)}


# -- the whole run -----------------------------------------------------------------------------


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
    with _workdir() as workdir:
        for url in plan.buses:
            bus_url = with_stream(url, f"instock_bench_{run_id}_{bus_label(url)}")
            try:
                row, samples = await latency(plan, bus_url, workdir, report)
            finally:
                with contextlib.suppress(Exception):
                    await drop_stream(bus_url)
            rows.append(row)
            latencies[row["bus"]] = samples
        held: dict[str, Any] | None = None
        memory: list[tuple[int, float]] = []
        if plan.clients:
            held, memory = await capacity(plan, workdir, report)
    body = {"database": backend_of(plan.database), "driver": plan.driver,
            "server": {"relay": "in-process", "consumers": plan.consumers, "sweeper": False},
            "seconds": plan.seconds, "skus": plan.skus, "latency": rows, "capacity": held}
    return Result(body, latencies, memory)


def logs_to_stderr() -> None:
    """Benches that run project code in their own process (here the service and outbox
    drivers) get its structlog output on stderr (stdout by default): stdout holds the JSON."""
    import logging

    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="instock-bench-events-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":  # the receiver process (see `receiver`)
    _args = json.loads(sys.argv[1])
    _receiver_main(int(_args["port"]), list(_args["skus"]), Path(_args["out"]))
