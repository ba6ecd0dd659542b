"""`--http URL`: the drop lane over HTTP against a running server, beside that server's own
`/livez` rate (the most a request can get from it).

The server must share this configuration's signing key: every buyer is a customer with a
token of its own, minted here. The SKU is set up and checked through the API: afterwards
every confirmed id is looked up (`GET /v1/reservations/{id}`, a 404 is a lost one) and the
SKU's stock is read back (`GET /v1/inventory/{sku}`). Conflicts are the growth of the
server's `instock_version_conflicts_total` (`/metrics`) over the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from instock.bench.drop.measure import CONFLICTS_METRIC, Advance, Check, Tally, drop
from instock.bench.drop.sql import LOCATION
from instock.bench.wire import Answer, Pool
from instock.platform.auth import Role, TokenAuthority

STAFF_CONNECTIONS = 2


@dataclass
class Remote:
    pool: Pool  # the buyers': raw keep-alive connections cost the bench little per request
    staff: Pool  # set-up and restocks: never queued behind the buyers
    tokens: TokenAuthority
    database: str  # the server's backend, as /readyz names it

    def bearer(self, role: Role, subject: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.mint(role, subject)}"}


@asynccontextmanager
async def connect(url: str, connections: int) -> AsyncIterator[Remote]:
    """`connections` keep-alive connections to the server at `url` (http:// only)."""
    from instock.app import build

    container = build()  # for this configuration's signing key, as `instock token` has it
    tokens = container.tokens
    await container.close()
    pool, staff = Pool(url, connections), Pool(url, STAFF_CONNECTIONS)
    try:
        ready = _ok(await staff.request("GET", "/readyz"))
        yield Remote(pool, staff, tokens, str(ready.json().get("database", "unknown")))
    finally:
        pool.close()
        staff.close()


class Failed(Exception):
    """An answer that is neither a reservation nor a sold-out refusal."""

    def __init__(self, answer: Answer) -> None:
        self.kind = f"http_{answer.status}:{_problem_slug(answer)}"
        super().__init__(answer.body[:300].decode(errors="replace"))


def _problem_slug(answer: Answer) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(answer.json().get("type", "")).rsplit("/", 1)[-1]
    return ""


def _ok(answer: Answer) -> Answer:
    if answer.status >= 400:
        raise Failed(answer)
    return answer


async def stock(remote: Remote, sku: str, units: int) -> None:
    """A product of one variant and `units` received at the bench location, via the API."""
    admin = remote.bearer(Role.ADMIN, "bench")
    location = await remote.staff.request("POST", "/v1/locations", admin, {
        "id": LOCATION, "name": "Bench warehouse", "kind": "warehouse"})
    if location.status != 409:  # already there from an earlier run: fine
        _ok(location)
    _ok(await remote.staff.request("POST", "/v1/products", admin, {
        "id": f"p-{sku}", "title": f"Bench {sku}", "brand": "bench", "category": "bench",
        "price": "1", "variants": [{"sku": sku}]}))
    await receive(remote, sku, units)


async def receive(remote: Remote, sku: str, units: int) -> None:
    _ok(await remote.staff.request(
        "POST", "/v1/inventory/adjustments", remote.bearer(Role.ADMIN, "bench"),
        {"sku": sku, "location": LOCATION, "kind": "receive", "quantity": units,
         "reason": "bench"}))


class HttpLane:
    """(e) over HTTP: `POST /v1/reservations`, each buyer with its own customer token."""

    name = "drop_lane"

    def __init__(self, remote: Remote, sku: str, buyers: int) -> None:
        self.remote, self.sku = remote, sku
        self.body = json.dumps({"lines": [{"sku": sku, "quantity": 1}]}).encode()
        # Built before the clock starts: signing tokens is the bench's cost, not the server's.
        self.heads = [remote.pool.head("POST", "/v1/reservations",
                                       remote.bearer(Role.CUSTOMER, f"buyer-{i}"),
                                       json_body=True) for i in range(buyers)]
        self.admin = remote.bearer(Role.ADMIN, "bench")
        self.conflicts_before = self.conflicts_after = 0.0

    async def attempt(self, buyer: int) -> str | None:
        answer = await self.remote.pool.send(self.heads[buyer], self.body)
        if answer.status == 201:
            return str(answer.json()["id"])
        if answer.status == 409 and _problem_slug(answer) == "insufficient-stock":
            return None
        raise Failed(answer)

    async def restock(self, units: int) -> None:
        await receive(self.remote, self.sku, units)

    async def settle(self) -> dict[str, Any]:
        self.conflicts_after = await version_conflicts(self.remote)
        return {"lost_checked_via": "GET /v1/reservations/{id}"}

    async def check(self, ids: list[str]) -> Check:
        found = await asyncio.gather(*(self._exists(rid) for rid in sorted(set(ids))))
        level = _ok(await self.remote.pool.request("GET", f"/v1/inventory/{self.sku}",
                                                   self.admin)).json()
        return Check(sum(found), int(level["on_hand"]), int(level["reserved"]))

    async def _exists(self, reservation_id: str) -> int:
        answer = await self.remote.pool.request("GET", f"/v1/reservations/{reservation_id}",
                                                self.admin)
        if answer.status == 404:
            return 0
        _ok(answer)
        return 1

    def conflicts(self) -> int:
        """Version conflicts the server counted during the run (/metrics; its other clients'
        would count too)."""
        return round(self.conflicts_after - self.conflicts_before)


@asynccontextmanager
async def http_lane(remote: Remote, sku: str, buyers: int) -> AsyncIterator[HttpLane]:
    """The lane over HTTP, warmed up first on a SKU of its own (the server's first-request
    costs), its buyers' tokens minted."""
    warm = f"{sku}-warm"
    await stock(remote, warm, 1)
    _ok(await remote.staff.request("POST", "/v1/reservations", remote.bearer(Role.SERVICE),
                                   {"lines": [{"sku": warm, "quantity": 1}]}))
    lane = HttpLane(remote, sku, buyers)
    lane.conflicts_before = await version_conflicts(remote)
    yield lane


async def version_conflicts(remote: Remote) -> float:
    """The server's count of writes that lost a race, from its /metrics."""
    text = _ok(await remote.staff.request("GET", "/metrics")).body.decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == CONFLICTS_METRIC)


async def livez(remote: Remote, requests: int, advance: Advance) -> Tally:
    """`GET /livez` from `requests` clients at once, over the same connections: the ceiling."""
    head = remote.pool.head("GET", "/livez")

    async def probe(_: int) -> str | None:
        _ok(await remote.pool.send(head))
        return "ok"

    return await drop(probe, requests, advance)
