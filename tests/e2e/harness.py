"""The end-to-end harness: server processes, tokens, the audit command, load and SQL helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from instock.bench.local import free_port, instock_executable
from instock.platform.auth import Role, TokenAuthority
from tests.support import TEST_SECRET, instock_env

INSTOCK = instock_executable()
READY_TIMEOUT = 60.0
CLIENT_SHARDS = 25
PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://instock.dev/problems/"

T = TypeVar("T")
TOKENS = TokenAuthority(TEST_SECRET, "instock", 3600 * 4)


async def eventually(check: Callable[[], Awaitable[T | None]], what: str,
                     timeout: float = 60.0) -> T:
    """Poll until `check` gives something truthy (asynchronous effects; no timing asserted)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.1)


def token(role: Role, subject: str | None = None) -> str:
    return TOKENS.mint(role, subject)


def bearer(role: Role, subject: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, subject)}"}


@dataclass
class Database:
    backend: str
    url: str
    tmp_path: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for an `instock` command on this database."""
        return instock_env(self.url, self.tmp_path, **extra)

    async def scalar(self, query: str, **params: Any) -> Any:
        """Run one SQL query directly against the database (a second opinion beside the API)."""
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(sa.text(query), params)).scalar()
        finally:
            await engine.dispose()

    async def column(self, query: str, **params: Any) -> list[Any]:
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(query), params)).scalars())
        finally:
            await engine.dispose()

    async def rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """Every row of one SQL query, as dicts keyed by column name."""
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(sa.text(query), params)
                return [dict(row._mapping) for row in result]
        finally:
            await engine.dispose()

    async def execute(self, statement: sa.Executable) -> int:
        """Run one write statement in its own transaction; the number of rows it touched."""
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(statement)
                return int(getattr(result, "rowcount", 0) or 0)
        finally:
            await engine.dispose()


async def audit_verify(db: Database) -> tuple[int, str]:
    """Run `instock audit verify` as its own process; its exit code and what it said."""
    proc = await asyncio.create_subprocess_exec(
        INSTOCK, "audit", "verify", env=db.env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: Any = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def sigkill(self) -> None:
        """The real thing: SIGKILL, no shutdown hooks, no flushing."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self._log.close()


class ServerFactory:
    """Starts `instock serve` processes on one database; stops every one it started."""

    def __init__(self, db: Database, tmp_path: Path) -> None:
        self.db = db
        self.tmp_path = tmp_path
        self.started: list[Server] = []

    async def start(self, *args: str, app_only: bool = False, **env: str) -> Server:
        """`instock serve` with these further arguments and settings, once it is ready.
        `app_only`: the API app under uvicorn with nothing around it (no migration first,
        whatever that code's `serve` does), as a release runs on a schema it did not make."""
        last_error = ""
        for _ in range(3):  # a free port can be taken by someone else before we bind it
            port = free_port()
            server = self._app(port, env) if app_only else self._spawn(port, env, args)
            try:
                await self._wait_ready(server)
                return server
            except _PortTaken as exc:
                last_error = str(exc)
                server.stop()
        raise AssertionError(f"could not start a server: {last_error}")

    async def restart(self, server: Server, **env: str) -> Server:
        """Stop `server` and start another on its port (a deploy, or a crash and a restart):
        clients that reconnect to the same address find it again."""
        server.stop()
        again = self._spawn(server.port, env)
        await self._wait_ready(again)
        return again

    async def start_many(self, count: int, **env: str) -> list[Server]:
        """Start several servers at once (their start-up costs overlap) on the one database."""
        return list(await asyncio.gather(*(self.start(**env) for _ in range(count))))

    def _spawn(self, port: int, env: dict[str, str], args: tuple[str, ...] = ()) -> Server:
        return self.worker("serve", "--host", "127.0.0.1", "--port", str(port), *args,
                           port=port, **env)

    def _app(self, port: int, env: dict[str, str]) -> Server:
        python = str(Path(INSTOCK).with_name("python"))
        return self.worker("-m", "uvicorn", "instock.app:create_app", "--factory", "--host",
                           "127.0.0.1", "--port", str(port), port=port, program=python, **env)

    def worker(self, *args: str, port: int = 0, program: str = INSTOCK, **env: str) -> Server:
        """Start any `instock` command (a worker: relay, consumer) as its own process (or
        another program's)."""
        name = args[0].lstrip("-") if program == INSTOCK else Path(program).name
        log_path = self.tmp_path / f"{name}-{len(self.started)}-{port}.log"
        log = log_path.open("wb")
        process = subprocess.Popen([program, *args], env=self.db.env(**env), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Server(process, port, log_path, log)
        self.started.append(server)
        return server

    async def _wait_ready(self, server: Server) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                if not server.alive():
                    tail = server.log_tail()
                    if "address already in use" in tail.lower():
                        raise _PortTaken(tail)
                    raise AssertionError(
                        f"server exited with {server.process.returncode} before it was ready:\n"
                        f"{tail}")
                with contextlib.suppress(httpx.TransportError):
                    response = await client.get("/readyz")
                    if response.status_code == 200:
                        body = response.json()
                        assert body["database"] == self.db.backend, body
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"server not ready in {READY_TIMEOUT}s:\n{server.log_tail()}")

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


class _PortTaken(Exception):
    pass


# -- HTTP helpers ----------------------------------------------------------------------------


@dataclass
class SseEvent:
    event: str
    data: Any
    id: str | None


async def sse_events(http: httpx.AsyncClient, path: str,
                     headers: dict[str, str] | None = None) -> Any:
    """Yield the Server-Sent Events of a stream (parsed JSON data), and its comment lines
    (heartbeats) as events named ":"."""
    async with http.stream("GET", path, headers=headers or {}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                yield SseEvent(":", line, None)
            elif line == "":
                if "data" in fields:
                    yield SseEvent(fields.get("event", "message"), json.loads(fields["data"]),
                                   fields.get("id"))
                fields = {}
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")


def client(base_url: str, role: Role = Role.ADMIN, subject: str | None = None,
           connections: int = 20) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, headers=bearer(role, subject), timeout=httpx.Timeout(120.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """An RFC 9457 problem document of the given status and stable type."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug, body
    assert body["status"] == status, body
    assert body["title"], body
    text = response.text.lower()
    for leak in ("traceback", "sqlalchemy", "select ", "insert into", 'file "'):
        assert leak not in text, f"{leak!r} leaked to the client: {response.text}"
    return body


def fields_named(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors", [])}


async def create_product(api: httpx.AsyncClient, product_id: str, skus: Sequence[str],
                         bundles: dict[str, dict[str, int]] | None = None) -> None:
    variants: list[dict[str, Any]] = [
        {"sku": sku, "attributes": {"size": f"S{i}"}} for i, sku in enumerate(skus)]
    for i, (sku, components) in enumerate((bundles or {}).items()):
        variants.append({"sku": sku, "attributes": {"kit": f"K{i}"},
                         "components": [{"sku": c, "quantity": q} for c, q in components.items()]})
    response = await api.post("/v1/products", json={
        "id": product_id, "title": f"Product {product_id}", "brand": "Drop", "category": "apparel",
        "tags": ["e2e"], "price": "59.90", "variants": variants})
    assert response.status_code == 201, response.text


async def create_location(api: httpx.AsyncClient, location_id: str,
                          kind: str = "warehouse") -> None:
    response = await api.post("/v1/locations", json={"id": location_id, "name": location_id,
                                                     "kind": kind})
    assert response.status_code == 201, response.text


async def receive(api: httpx.AsyncClient, sku: str, location: str, quantity: int,
                  lot: str | None = None, expires_on: date | None = None) -> None:
    body: dict[str, Any] = {"sku": sku, "location": location, "kind": "receive",
                            "quantity": quantity, "reason": "e2e stock"}
    if lot is not None:
        body["lot"] = {"code": lot,
                       "expires_on": expires_on.isoformat() if expires_on else None}
    response = await api.post("/v1/inventory/adjustments", json=body)
    assert response.status_code == 200, response.text


async def set_customer_limit(api: httpx.AsyncClient, sku: str, limit: int | None) -> None:
    response = await api.put(f"/v1/inventory/{sku}/policy",
                             json={"per_customer_limit": limit})
    assert response.status_code == 200, response.text
    assert response.json()["per_customer_limit"] == limit, response.text


async def stock(api: httpx.AsyncClient, sku: str) -> dict[str, Any]:
    response = await api.get(f"/v1/inventory/{sku}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def setup_drop(base_url: str, skus: list[str], units: int,
                     bundles: dict[str, dict[str, int]] | None = None) -> None:
    async with client(base_url, Role.ADMIN) as admin:
        await create_product(admin, "drop", skus, bundles)
        await create_location(admin, "wh-1")
        for sku in skus:
            await receive(admin, sku, "wh-1", units)
        # Warm the server (first-request costs) on something else, so the burst measures the drop.
        await create_product(admin, "warmup", ["warmup-1"])
        await receive(admin, "warmup-1", "wh-1", 1)
        async with client(base_url, Role.SERVICE) as svc:
            warm = await svc.post("/v1/reservations",
                                  json={"lines": [{"sku": "warmup-1", "quantity": 1}]})
            assert warm.status_code == 201, warm.text


# -- load ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    index: int
    status: int | None  # None: no HTTP response (connection refused, reset, ...)
    body: dict[str, Any] | None
    content_type: str
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    server: int = 0  # which of the burst's base URLs answered (or failed to)

    @property
    def replayed(self) -> bool:
        """The answer was a stored one, replayed for a repeated Idempotency-Key."""
        return self.headers.get("idempotent-replayed") == "true"


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    seconds: float

    def with_status(self, status: int | None) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    def statuses(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        return counts


@dataclass(frozen=True)
class Call:
    """One request of a burst: what is posted where, by whom."""

    path: str
    body: dict[str, Any] | None = None
    subject: str | None = None  # the token's subject (a customer id for Role.CUSTOMER)
    role: Role = Role.CUSTOMER
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Idempotency-Key
    server: int | None = None  # index into the burst's base URLs; None: round-robin


async def burst(base_urls: Sequence[str], calls: Sequence[Call],
                started: asyncio.Event | None = None,
                on_response: Callable[[Outcome], None] | None = None) -> LoadResult:
    """POST every call at once (one connection each) and collect every outcome.

    Call i goes to `base_urls[call.server]`, or round-robin (`i % len(base_urls)`) when the call
    names no server. A transport error (no HTTP answer) is an outcome with status None.
    """
    # One connection per request, all open at once. The connections are spread over several
    # clients per server: httpx's pool bookkeeping grows with its size, and a single pool of 500
    # costs the client more CPU than the server spends (2 cores are shared by both).
    targets = [c.server if c.server is not None else i % len(base_urls)
               for i, c in enumerate(calls)]
    per_server = [targets.count(s) for s in range(len(base_urls))]
    per_shard = [max(1, -(-n // CLIENT_SHARDS)) for n in per_server]
    shard_of: list[int] = []  # the calls to one server are dealt over its clients in turn
    dealt = [0] * len(base_urls)
    for server in targets:
        shard_of.append(dealt[server] % CLIENT_SHARDS)
        dealt[server] += 1
    clients = [[httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(180.0),
                                  limits=httpx.Limits(max_connections=per_shard[s],
                                                      max_keepalive_connections=per_shard[s]))
                for _ in range(CLIENT_SHARDS)] for s, url in enumerate(base_urls)]
    headers = [{**bearer(c.role, c.subject), **c.headers} for c in calls]

    async def one(i: int) -> Outcome:
        server = targets[i]
        http = clients[server][shard_of[i]]
        try:
            response = await http.post(calls[i].path, json=calls[i].body, headers=headers[i])
        except httpx.TransportError as exc:
            return Outcome(i, None, None, "", f"{type(exc).__name__}: {exc}", server=server)
        try:
            body = response.json()
        except ValueError:
            body = {"raw": response.text}
        outcome = Outcome(i, response.status_code, body, response.headers.get("content-type", ""),
                          headers={k.lower(): v for k, v in response.headers.items()},
                          server=server)
        if on_response is not None:
            on_response(outcome)
        return outcome

    try:
        if started is not None:
            started.set()
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(one(i) for i in range(len(calls))))
        seconds = time.perf_counter() - t0
    finally:
        for per_url in clients:
            for http in per_url:
                await http.aclose()
    return LoadResult(list(outcomes), seconds)


async def reserve_burst(base_urls: Sequence[str], bodies: Sequence[dict[str, Any]],
                        started: asyncio.Event | None = None,
                        on_response: Callable[[Outcome], None] | None = None, *,
                        subjects: Sequence[str] | None = None,
                        keys: Sequence[str | None] | None = None,
                        servers: Sequence[int | None] | None = None) -> LoadResult:
    """Send every reservation at once (one connection each), split round-robin over servers.

    Each request is a different customer with its own token (`buyer-<i>`), as in a real drop,
    unless `subjects` names the customer of each; `keys` gives requests an Idempotency-Key
    (None: none), `servers` sends request i to `base_urls[servers[i]]` instead of round-robin.
    """
    calls = [Call("/v1/reservations", body,
                  subject=subjects[i] if subjects is not None else f"buyer-{i}",
                  headers=({"Idempotency-Key": k} if keys is not None and (k := keys[i])
                           else {}),
                  server=servers[i] if servers is not None else None)
             for i, body in enumerate(bodies)]
    return await burst(base_urls, calls, started, on_response)


def assert_clean_insufficient(outcome: Outcome, skus: set[str]) -> None:
    """A 409 as the contract says: problem+json, insufficient-stock, naming the short SKUs."""
    assert outcome.status == 409, outcome
    assert outcome.content_type.startswith(PROBLEM_JSON), outcome
    assert outcome.body is not None
    assert outcome.body["type"].endswith("insufficient-stock"), outcome.body
    short = {line["sku"] for line in outcome.body.get("short", [])}
    assert short and short <= skus, outcome.body


def assert_clean_problem(outcome: Outcome, status: int, *slugs: str) -> dict[str, Any]:
    """A problem+json of the given status and one of the given stable types, with no internals
    (stack traces, SQL) leaked."""
    assert outcome.status == status, outcome
    assert outcome.content_type.startswith(PROBLEM_JSON), outcome
    assert outcome.body is not None, outcome
    assert outcome.body.get("type") in {PROBLEM_BASE + slug for slug in slugs}, outcome.body
    assert outcome.body.get("status") == status and outcome.body.get("title"), outcome.body
    text = json.dumps(outcome.body).lower()
    for leak in ("traceback", "sqlalchemy", "select ", "insert into", 'file \\"'):
        assert leak not in text, f"{leak!r} leaked to the client: {outcome.body}"
    return outcome.body


def problem_slug(outcome: Outcome) -> str | None:
    """The stable type of a problem answer (e.g. "insufficient-stock"), else None."""
    if outcome.body is None or not outcome.content_type.startswith(PROBLEM_JSON):
        return None
    kind = outcome.body.get("type")
    return kind.removeprefix(PROBLEM_BASE) if isinstance(kind, str) else None
