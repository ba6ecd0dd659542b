"""What the chaos test (test_chaos.py) is made of: servers of its own that it may kill (Redis,
NATS), the machine's RabbitMQ restarted in place, the fleet, the shoppers, the SSE watchers and
the controller that breaks things. The fleet itself is test_fleet's (`Fleet`, `_stop`, …).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from instock.fleet import lb
from instock.platform.auth import Role
from tests.e2e.harness import INSTOCK, PROBLEM_BASE, PROBLEM_JSON, Database, bearer
from tests.e2e.test_fleet import Fleet, Watcher, _alive, _free_run, _stop

NATS_SERVER = "/usr/sbin/nats-server"
START_TIMEOUT = 120.0  # the fleet's start (a migration check, 3 API processes, 2 workers)
# One TLS context for every client: httpx builds one per client otherwise (the CA bundle read
# and parsed, ~100 ms on a busy machine), and 200 of them held the event loop for 20 s. Only
# http:// is spoken here; it is never used.
TLS = ssl.create_default_context()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def _until(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout:g} s: {what}")
        await asyncio.sleep(0.1)


# -- servers of the test's own ---------------------------------------------------------------


@dataclass
class OwnServer:
    """A server process the test started (and may kill and start again on the same port)."""

    name: str
    args: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%H:%M:%S')} starting\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    async def start(self, timeout: float = 30.0) -> None:
        self.spawn()

        def up() -> bool:
            assert self.process is not None and self.process.poll() is None, self.tail()
            return _answers(self.port)

        await _until(up, f"{self.name} listening on {self.port}", timeout)

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        deadline = time.monotonic() + 20
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""


def redis_server(tmp: Path) -> OwnServer:
    """A Redis of the test's own: no persistence, so a kill loses everything it held."""
    port = _free_run(1)
    return OwnServer("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], port, tmp / "redis.log")


class BusServer:
    """The bus under test, which the controller restarts once."""

    kind: str
    url: str
    port: int  # where the fleet's processes connect to it

    async def start(self) -> None: ...

    async def restart(self, down_seconds: float) -> None: ...

    async def forget(self, url: str) -> None:
        """Delete what the run left on the server under `url` (nothing to do by default)."""

    def close(self) -> None: ...


class OwnNats(BusServer):
    """A NATS server with JetStream of the test's own, its store in the test's directory: a
    restart (a graceful stop, a pause, a start on the same port and store) disturbs no one
    else."""

    kind = "nats"

    def __init__(self, tmp: Path) -> None:
        base = _free_run(2)
        self.monitor = base + 1
        self.server = OwnServer("nats", [
            NATS_SERVER, "-a", "127.0.0.1", "-p", str(base), "-m", str(self.monitor), "-js",
            "-sd", str(tmp / "nats-store")], base, tmp / "nats.log")
        self.url = f"nats://127.0.0.1:{base}"
        self.port = base

    async def start(self) -> None:
        await self.server.start()
        await self._jetstream_ready()

    async def _jetstream_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    answer = await http.get(f"http://127.0.0.1:{self.monitor}/healthz")
                    if answer.status_code == 200:
                        return
                assert time.monotonic() < deadline, self.server.tail()
                await asyncio.sleep(0.1)

    async def restart(self, down_seconds: float) -> None:
        await self.server.kill(signal.SIGTERM)  # nats-server stops gracefully on SIGTERM
        await asyncio.sleep(down_seconds)
        await self.start()

    def close(self) -> None:
        self.server.stop()


class MachineRabbit(BusServer):
    """The machine's RabbitMQ (streams): `rabbitmqctl stop_app`, a pause, `start_app`, as the
    bus contract test does. Whatever happens, the broker is started again on close."""

    kind = "rabbitmq"

    def __init__(self, url: str) -> None:
        from instock.platform.bus.rabbitmq_link import Address

        self.url = url
        self.port = Address.from_url(url).port  # the stream protocol's
        self.stopped = False

    async def start(self) -> None:
        assert shutil.which("rabbitmqctl"), "a RabbitMQ broker restart needs rabbitmqctl"

    async def restart(self, down_seconds: float) -> None:
        self.stopped = True
        await _rabbitmqctl("stop_app")
        await asyncio.sleep(down_seconds)
        await _rabbitmqctl("start_app")
        self.stopped = False
        await _until(lambda: _answers(self.port), "RabbitMQ's stream port open again", 60)

    async def forget(self, url: str) -> None:
        """The run's streams deleted from the machine's broker (a test's tear-down)."""
        from instock.platform.bus.rabbitmq import RabbitStreamsBus

        bus = RabbitStreamsBus.from_url(url)
        try:
            await asyncio.wait_for(bus.drop(), 30)
        finally:
            await bus.close()

    def close(self) -> None:
        if self.stopped:
            subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120,
                           check=False)
            self.stopped = False


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, errors = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, errors.decode()


# -- the fleet ---------------------------------------------------------------------------------


@contextlib.contextmanager
def fleet_up(database: Database, tmp: Path, apis: int, workers: int,
             env: dict[str, str]) -> Iterator[Fleet]:
    """`instock fleet up` as test_fleet's fixture starts it, with these settings; stopped (and
    anything left of it killed) afterwards."""
    base = _free_run(apis + 3)
    port, stats_port, api_base = base, base + 1, base + 2
    log_path, fleet_env = tmp / "fleet-up.log", database.env(**env)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [INSTOCK, "fleet", "up", "--api", str(apis), "--workers", str(workers),
             "--port", str(port), "--stats-port", str(stats_port),
             "--api-base-port", str(api_base)], env=fleet_env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    fleet = Fleet(process, tmp / "state" / "fleet", log_path, f"http://127.0.0.1:{port}",
                  f"http://127.0.0.1:{stats_port}/stats", database, fleet_env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while fleet.status().get("state") != "up":
            assert process.poll() is None, fleet.tail()
            assert time.monotonic() < deadline, fleet.tail()
            time.sleep(0.2)
        yield fleet
    finally:
        _stop(fleet)


# -- shoppers ----------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One HTTP request as a client saw it."""

    at: float  # seconds since the chaos began
    route: str
    status: int | None  # None: no answer (a transport error)
    slug: str | None  # the problem's type; for a transport error, the exception's name
    error: bool  # a transport error, a 5xx, or an answer the route never gives by design
    seconds: float  # how long it took


@dataclass
class Held:
    """A reservation a client was told exists (201), and what became of it as it was told."""

    sku: str
    customer: str
    fate: str | None = None  # committed / released, once answered


# Answers that mean "ask again with the same key": nothing definite was said.
RETRY_SLUGS = frozenset({"idempotency-in-progress", "rate-limited", "rate-limit-unavailable",
                         "version-conflict"})
# What each route answers by design (anything else, or a 5xx, is an error in the count).
BY_DESIGN: dict[str, frozenset[int]] = {
    "reserve": frozenset({201, 409}), "commit": frozenset({200}),
    "release": frozenset({200}), "adjust": frozenset({200}),
    "checkout": frozenset({201, 202, 402, 409}),
}
# A checkout that failed on its own terms names its cancelled order (503: the provider).
CHECKOUT_FAILED = frozenset({"payment-declined", "insufficient-stock", "hold-expired",
                             "payment-unavailable", "payment-circuit-open"})


def _slug(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return None
    with contextlib.suppress(ValueError, AttributeError):
        kind = response.json().get("type")
        return kind.removeprefix(PROBLEM_BASE) if isinstance(kind, str) else None
    return None


@dataclass
class Shoppers:
    """Clients through the balancer: reserve (then commit or release), check out and receive
    stock, each request with an Idempotency-Key and retried with it until the answer is
    definite. Every attempt is kept; so is every confirmation a client was given."""

    lb_url: str
    skus: list[str]  # the ordinary SKUs
    drop: str  # the SKU most reservations go for, which sells out
    started: float  # time.monotonic() when the chaos began
    retry_for: float = 60.0  # a request unanswered this long is given up as unknown
    attempts: list[Attempt] = field(default_factory=list)
    held: dict[str, Held] = field(default_factory=dict)  # reservation id -> held
    orders: dict[str, str] = field(default_factory=dict)  # order id -> what the client heard
    order_skus: dict[str, list[str]] = field(default_factory=dict)  # order id -> its SKUs
    received: Counter[str] = field(default_factory=Counter)  # units received, by SKU
    outcomes: Counter[str] = field(default_factory=Counter)  # "reserve 201", …
    unknown: list[str] = field(default_factory=list)  # requests never answered definitely
    surprises: list[str] = field(default_factory=list)  # definite answers not by design
    pause: tuple[float, float] = (2.5, 5.5)  # seconds a client waits between its actions
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.monotonic() - self.started

    async def run(self, n: int) -> None:
        rng = random.Random(1000 + n)
        if await self._paused(rng.uniform(0, self.pause[1])):  # not all at once
            return
        async with httpx.AsyncClient(base_url=self.lb_url, verify=TLS,
                                     timeout=httpx.Timeout(30.0, connect=5.0)) as http:
            i = 0
            while not self.stop.is_set():
                i += 1
                roll = rng.random()
                if roll < 0.55:
                    await self.reserve(http, rng, n, i)
                elif roll < 0.75:
                    await self.checkout(http, rng, n, i)
                else:
                    await self.adjust(http, rng, n, i)
                # Moderate load: the machine (2 cores) runs the fleet, the database, the
                # brokers and these clients; the run measures correctness, not saturation.
                if await self._paused(rng.uniform(*self.pause)):
                    return

    async def _paused(self, seconds: float) -> bool:
        """Wait `seconds` unless told to stop first: True if told."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    async def ask(self, http: httpx.AsyncClient, route: str, path: str, headers: dict[str, str],
                  body: dict[str, Any] | None = None) -> httpx.Response | None:
        """POST until a definite answer (None: none came within `retry_for` seconds, and the
        request is listed as unknown with what each try got)."""
        deadline = time.monotonic() + self.retry_for
        pause = 0.25
        tries: list[str] = []
        while True:
            sent = time.monotonic()
            try:
                response = await http.post(path, headers=headers, json=body or {})
            except httpx.TransportError as exc:
                self.attempts.append(Attempt(self.now(), route, None, type(exc).__name__, True,
                                             time.monotonic() - sent))
                tries.append(f"{self.now():.1f} s {type(exc).__name__}")
            else:
                slug = _slug(response)
                status = response.status_code
                tries.append(f"{self.now():.1f} s {status} {slug or ''}".rstrip())
                self.attempts.append(Attempt(self.now(), route, status, slug, status >= 500 or (
                    status not in BY_DESIGN[route] and slug not in RETRY_SLUGS),
                    time.monotonic() - sent))
                replayed = response.headers.get("idempotent-replayed") == "true"
                if status < 500 and (slug not in RETRY_SLUGS or replayed):
                    return response
                if route == "checkout" and slug in CHECKOUT_FAILED:
                    return response  # 503: the provider failed it; the order is cancelled
            if time.monotonic() > deadline:
                self.unknown.append(f"{route} {path} {headers.get('Idempotency-Key')} "
                                    f"{json.dumps(body)}: {tries}")
                return None
            pause = min(2.0, pause * 2)  # 0.5, 1, 2, 2, … s
            await asyncio.sleep(pause)

    def _surprise(self, what: str, response: httpx.Response) -> None:
        self.surprises.append(f"{what}: {response.status_code} {response.text[:300]}")

    async def reserve(self, http: httpx.AsyncClient, rng: random.Random, n: int,
                      i: int) -> None:
        sku = self.drop if rng.random() < 0.6 else rng.choice(self.skus)
        customer = f"res-{n}"
        token = bearer(Role.CUSTOMER, customer)
        made = await self.ask(http, "reserve", "/v1/reservations",
                              {**token, "Idempotency-Key": f"r-{n}-{i}"},
                              {"lines": [{"sku": sku, "quantity": 1}]})
        if made is None:
            return
        self.outcomes[f"reserve {made.status_code}"] += 1
        if made.status_code == 409 and _slug(made) == "insufficient-stock":
            return
        if made.status_code != 201:
            self._surprise(f"reserve {sku}", made)
            return
        reservation = made.json()["id"]
        self.held[reservation] = Held(sku, customer)
        verb = "commit" if rng.random() < 0.7 else "release"
        done = await self.ask(http, verb, f"/v1/reservations/{reservation}/{verb}",
                              {**token, "Idempotency-Key": f"{verb}-{n}-{i}"})
        if done is None:
            return
        self.outcomes[f"{verb} {done.status_code}"] += 1
        if done.status_code == 200:
            self.held[reservation].fate = "committed" if verb == "commit" else "released"
        else:
            self._surprise(f"{verb} {reservation}", done)

    async def checkout(self, http: httpx.AsyncClient, rng: random.Random, n: int,
                       i: int) -> None:
        count = 1 if rng.random() < 0.7 else 2
        skus = rng.sample(self.skus, count)
        if rng.random() < 0.3:
            skus[0] = self.drop
        key = f"c-{n}-{i}"
        answer = await self.ask(http, "checkout", "/v1/checkout",
                                {**bearer(Role.CUSTOMER, f"chk-{n}"), "Idempotency-Key": key},
                                {"lines": [{"sku": s, "quantity": 1} for s in skus]})
        if answer is None:
            return
        slug = _slug(answer)
        self.outcomes[f"checkout {answer.status_code}{' ' + slug if slug else ''}"] += 1
        body = answer.json()
        if answer.status_code in (201, 202):
            self.orders[body["id"]] = "paid" if answer.status_code == 201 else "accepted"
            self.order_skus[body["id"]] = skus
        elif slug in CHECKOUT_FAILED and body.get("order_id"):
            self.orders[body["order_id"]] = f"failed: {slug}"
            self.order_skus[body["order_id"]] = skus
        else:
            self._surprise(f"checkout {skus}", answer)

    async def adjust(self, http: httpx.AsyncClient, rng: random.Random, n: int,
                     i: int) -> None:
        sku, quantity = rng.choice(self.skus), rng.randint(1, 3)
        done = await self.ask(http, "adjust", "/v1/inventory/adjustments",
                              {**bearer(Role.INVENTORY, f"staff-{n}"),
                               "Idempotency-Key": f"a-{n}-{i}"},
                              {"sku": sku, "location": "wh-1", "kind": "receive",
                               "quantity": quantity, "reason": "chaos e2e"})
        if done is None:
            return
        self.outcomes[f"adjust {done.status_code}"] += 1
        if done.status_code == 200:
            self.received[sku] += quantity
        else:
            self._surprise(f"receive {sku}", done)


# -- SSE watchers ------------------------------------------------------------------------------


@dataclass
class ChaosWatcher(Watcher):
    """test_fleet's SSE client on these SKUs, which also comes back from whatever a killed
    process or the balancer answers (a connection reset, a 503 while no server is up)."""

    skus: list[str] = field(default_factory=list)
    connections: int = 0

    async def run(self) -> None:
        last_id: str | None = None
        async with httpx.AsyncClient(base_url=self.lb_url, timeout=30, verify=TLS) as http:
            while True:
                headers = {"Last-Event-ID": last_id} if last_id else {}
                hinted = False
                try:
                    async with http.stream("GET", f"/v1/stream/inventory?skus="
                                           f"{','.join(self.skus)}", headers=headers) as response:
                        if response.status_code != 200:
                            self.errors.append(f"status {response.status_code}")
                            await asyncio.sleep(0.5)
                            continue
                        self.connections += 1
                        self.servers.append(http.cookies.get("INSTOCK_SERVER", ""))
                        last_id, hinted = await self.read(response, last_id, hinted)
                except (httpx.HTTPError, AssertionError, ValueError) as exc:  # the stream is
                    # cut (its process killed) or garbled: noted, and the client comes back
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.3)


def connected_ports(pid: int) -> set[int]:
    """The remote ports of a process's established TCP connections (from /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                cells = row.split()
                if cells[3] == "01" and cells[9] in inodes:  # ESTABLISHED
                    ports.add(int(cells[2].rsplit(":", 1)[1], 16))
    return ports


# -- the controller ----------------------------------------------------------------------------


@dataclass
class Controller:
    """Breaks things on a seeded schedule: a SIGKILL to a random API process or worker every
    few seconds (the supervisor starts it again), one bus restart, one Redis outage.

    The fleet is hurt, never taken down, and what is killed was doing work: an API process
    only while it and two others are in the balancer's rotation; a worker only while it and
    the other one are at work (connected to the database and the bus: a worker says nothing
    when it is ready). A process killed while it starts would do no work between deaths
    (starting costs seconds of CPU), and the supervisor's pause before it starts one again
    doubles each time."""

    fleet: Fleet
    bus: BusServer
    redis: OwnServer
    started: float
    seconds: float
    rng: random.Random
    bus_at: float
    bus_down: float
    redis_at: float
    redis_down: float
    database_port: int = 5432
    events: list[dict[str, Any]] = field(default_factory=list)
    # Seconds from each kill to its replacement's being of use again (an API process up in
    # the balancer, a worker connected to the database and the bus), by kind.
    back: dict[str, list[float]] = field(default_factory=lambda: {"api": [], "worker": []})
    _useful: set[int] = field(default_factory=set)  # pids up / at work now
    _killed: dict[str, tuple[float, int]] = field(default_factory=dict)  # name -> when, pid

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    async def run(self) -> None:
        watching = asyncio.create_task(self.watch())
        try:
            await asyncio.gather(self.kills(), self.restart_bus(), self.redis_outage())
        finally:
            watching.cancel()

    async def watch(self) -> None:
        """Which processes are of use now, every half second."""
        async with httpx.AsyncClient(timeout=2, verify=TLS) as http:
            while True:
                await self.look(http)
                await asyncio.sleep(0.5)

    async def look(self, http: httpx.AsyncClient) -> None:
        states: dict[str, lb.ServerStats] = {}
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            states = await lb.api_states(self.fleet.stats_url, http)
        now, useful = time.monotonic(), set()
        for child in self.fleet.children("api") + self.fleet.children("worker"):
            pid = child["pid"]
            if not child["alive"] or not pid:
                continue
            if child["kind"] == "api":
                row = states.get(child["slot"] or "")
                if row is None or not row.up:
                    continue
            elif not {self.database_port, self.bus.port} <= connected_ports(pid):
                continue
            useful.add(pid)
            killed = self._killed.get(child["name"])
            if killed is not None and killed[1] != pid:  # its replacement
                self.back[child["kind"]].append(round(now - killed[0], 1))
                del self._killed[child["name"]]
        self._useful = useful

    async def _at(self, second: float) -> None:
        await asyncio.sleep(max(0.0, self.started + second - time.monotonic()))

    async def kills(self) -> None:
        at = 3.0
        while at < self.seconds - 10:  # the last ones restarted before the chaos ends
            await self._at(at)
            await self.kill_one()
            at += self.rng.uniform(3.0, 6.0)

    async def kill_one(self) -> None:
        async with httpx.AsyncClient(timeout=2, verify=TLS) as http:
            await self.look(http)
        now = time.monotonic()
        apis = [c for c in self.fleet.children("api") if c["pid"] in self._useful]
        workers = [c for c in self.fleet.children("worker") if c["pid"] in self._useful]
        candidates = (apis if len(apis) >= 3 else []) + (workers if len(workers) >= 2 else [])
        if not candidates:
            self.events.append({"at": self.now(), "what": "kill skipped", "why": (
                f"{len(apis)} API processes up, {len(workers)} workers at work")})
            return
        victim = self.rng.choice(candidates)
        if not _alive(victim["pid"]):
            return
        os.kill(victim["pid"], signal.SIGKILL)
        self._killed[victim["name"]] = (now, victim["pid"])
        self.events.append({"at": self.now(), "what": "SIGKILL", "process": victim["name"],
                            "kind": victim["kind"], "pid": victim["pid"]})

    async def restart_bus(self) -> None:
        await self._at(self.bus_at)
        event = {"at": self.now(), "what": f"{self.bus.kind} restart"}
        self.events.append(event)
        await self.bus.restart(self.bus_down)
        event["back_at"] = self.now()

    async def redis_outage(self) -> None:
        await self._at(self.redis_at)
        event = {"at": self.now(), "what": "Redis killed (SIGKILL)"}
        self.events.append(event)
        await self.redis.kill()
        await self._at(self.redis_at + self.redis_down)
        await self.redis.start()
        event["back_at"] = self.now()


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2, default=str))


# -- the database's word -----------------------------------------------------------------------


async def queries(database: Database, wait: float = 60.0,
                  **named: str) -> dict[str, list[dict[str, Any]]]:
    """Several SQL queries on one connection: each one's rows, by name. Asked again for up to
    `wait` seconds if the server turns the connection away (its connections are shared with
    the fleet: "too many clients" is possible on a busy machine)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine

    deadline = time.monotonic() + wait
    while True:
        engine = create_async_engine(database.url)
        try:
            async with engine.connect() as conn:
                return {name: [dict(row._mapping) for row in await conn.execute(sa.text(query))]
                        for name, query in named.items()}
        except (DBAPIError, OSError):
            if time.monotonic() > deadline:
                raise
        finally:
            await engine.dispose()
        await asyncio.sleep(1.0)


async def instock_json(database: Database, *args: str, timeout: float = 180
                       ) -> tuple[int, str, dict[str, Any] | None]:
    """An `instock` command on the database: its exit code, what it said, its JSON (if any)."""
    process = await asyncio.create_subprocess_exec(
        INSTOCK, *args, env=database.env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, errors = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    found = None
    with contextlib.suppress(ValueError):
        found = json.loads(out)
    return process.returncode, (out + errors).decode(errors="replace")[-3000:], found
