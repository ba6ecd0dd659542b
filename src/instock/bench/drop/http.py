"""`--http URL`: the drop lane over HTTP against a running server, beside that server's own
`/livez` rate (the most a request can get from it).

The server must share this configuration's signing key: every buyer is a customer with a
token of its own, minted here. The SKU is set up and checked through the API: afterwards
every confirmed id is looked up (`GET /v1/reservations/{id}`, a 404 is a lost one) and the
SKU's stock is read back (`GET /v1/inventory/{sku}`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from instock.bench.drop.measure import Advance, Check, Tally, drop
from instock.bench.drop.sql import LOCATION
from instock.platform.auth import Role, TokenAuthority

# One httpx client slows down as its pool grows; many small ones keep the load generator cheap.
CLIENT_SHARDS = 25


@dataclass
class Remote:
    clients: list[httpx.AsyncClient]
    tokens: TokenAuthority
    database: str  # the server's backend, as /readyz names it

    @property
    def api(self) -> httpx.AsyncClient:
        return self.clients[0]

    def bearer(self, role: Role, subject: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.mint(role, subject)}"}

    def client(self, i: int) -> httpx.AsyncClient:
        return self.clients[i % len(self.clients)]


@asynccontextmanager
async def connect(url: str, connections: int) -> AsyncIterator[Remote]:
    """Client shards holding `connections` keep-alive connections between them."""
    from instock.app import build

    container = build()  # for this configuration's signing key, as `instock token` has it
    tokens = container.tokens
    await container.close()
    per_shard = max(1, -(-connections // CLIENT_SHARDS))
    limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
    # Every buyer is sent at once: most wait for a connection, as long as the drop lasts.
    timeout = httpx.Timeout(120.0, pool=None)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits))
            for _ in range(CLIENT_SHARDS)]
        ready = await clients[0].get("/readyz")
        ready.raise_for_status()
        yield Remote(clients, tokens, str(ready.json().get("database", "unknown")))


class Failed(Exception):
    """An answer that is neither a reservation nor a sold-out refusal."""

    def __init__(self, answer: httpx.Response) -> None:
        self.kind = f"http_{answer.status_code}:{_problem_slug(answer)}"
        super().__init__(answer.text[:300])


def _problem_slug(answer: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(answer.json().get("type", "")).rsplit("/", 1)[-1]
    return ""


def _ok(answer: httpx.Response) -> httpx.Response:
    if answer.is_error:
        raise Failed(answer)
    return answer


async def stock(remote: Remote, sku: str, units: int) -> None:
    """A product of one variant and `units` received at the bench location, via the API."""
    admin = remote.bearer(Role.ADMIN, "bench")
    location = await remote.api.post("/v1/locations", headers=admin, json={
        "id": LOCATION, "name": "Bench warehouse", "kind": "warehouse"})
    if location.status_code != 409:  # already there from an earlier run: fine
        _ok(location)
    _ok(await remote.api.post("/v1/products", headers=admin, json={
        "id": f"p-{sku}", "title": f"Bench {sku}", "brand": "bench", "category": "bench",
        "price": "1", "variants": [{"sku": sku}]}))
    await receive(remote, sku, units)


async def receive(remote: Remote, sku: str, units: int) -> None:
    _ok(await remote.api.post(
        "/v1/inventory/adjustments", headers=remote.bearer(Role.ADMIN, "bench"),
        json={"sku": sku, "location": LOCATION, "kind": "receive", "quantity": units,
              "reason": "bench"}))


class HttpLane:
    """(e) over HTTP: `POST /v1/reservations`, each buyer with its own customer token."""

    name = "drop_lane"

    def __init__(self, remote: Remote, sku: str, buyers: int) -> None:
        self.remote, self.sku = remote, sku
        self.body = {"lines": [{"sku": sku, "quantity": 1}]}
        # Minted before the clock starts: signing is the bench's cost, not the server's.
        self.headers = [remote.bearer(Role.CUSTOMER, f"buyer-{i}") for i in range(buyers)]
        self.admin = remote.bearer(Role.ADMIN, "bench")

    async def attempt(self, buyer: int) -> str | None:
        answer = await self.remote.client(buyer).post(
            "/v1/reservations", json=self.body, headers=self.headers[buyer])
        if answer.status_code == 201:
            return str(answer.json()["id"])
        if answer.status_code == 409 and _problem_slug(answer) == "insufficient-stock":
            return None
        raise Failed(answer)

    async def restock(self, units: int) -> None:
        await receive(self.remote, self.sku, units)

    async def settle(self) -> dict[str, Any]:
        return {"lost_checked_via": "GET /v1/reservations/{id}"}

    async def check(self, ids: list[str]) -> Check:
        found = await asyncio.gather(*(self._exists(i, rid)
                                       for i, rid in enumerate(sorted(set(ids)))))
        level = (_ok(await self.remote.api.get(f"/v1/inventory/{self.sku}",
                                                     headers=self.admin))).json()
        return Check(sum(found), int(level["on_hand"]), int(level["reserved"]))

    async def _exists(self, i: int, reservation_id: str) -> int:
        answer = await self.remote.client(i).get(f"/v1/reservations/{reservation_id}",
                                                 headers=self.admin)
        if answer.status_code == 404:
            return 0
        _ok(answer)
        return 1

    def conflicts(self) -> int:
        return 0  # the server does not say; its /metrics has instock_version_conflicts_total


@asynccontextmanager
async def http_lane(remote: Remote, sku: str, buyers: int) -> AsyncIterator[HttpLane]:
    """The lane over HTTP, warmed up first on a SKU of its own (the server's first-request
    costs), its buyers' tokens minted."""
    warm = f"{sku}-warm"
    await stock(remote, warm, 1)
    _ok(await remote.api.post("/v1/reservations", headers=remote.bearer(Role.SERVICE),
                                    json={"lines": [{"sku": warm, "quantity": 1}]}))
    yield HttpLane(remote, sku, buyers)


async def livez(remote: Remote, requests: int, advance: Advance) -> Tally:
    """`GET /livez` from `requests` clients at once, over the same shards: the ceiling."""
    async def probe(i: int) -> str | None:
        _ok(await remote.client(i).get("/livez"))
        return "ok"

    return await drop(probe, requests, advance)
