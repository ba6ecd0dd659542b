"""What a run of `instock bench writes` is asked for, the shop it seeds, and the server's own
counters it reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from instock.bench.drop.sql import LOCATION
from instock.bench.wire import Answer, Pool
from instock.platform.auth import Role, TokenAuthority

CASES = ("adjustment", "reservation", "checkout", "drop")
ADJUST_PATH = "/v1/inventory/adjustments"
VARIANTS_PER_PRODUCT = 200  # the catalogue's most per product
SEED_PARALLEL = 16  # set-up requests in flight at once
STOCK_PER_SKU = 100_000  # reservation and checkout SKUs never sell out in a run
CUSTOMERS = 1000  # buyers' tokens, minted before the clock starts (request i is buyer i mod this)
WARMUP = 5  # untimed requests of each case first: the server's first-request costs
DRAIN_SECONDS = 30.0  # after an offered-rate schedule ends: how long stragglers may finish
SETTLE_SECONDS = 10.0  # after the checkouts: how long a saga answered 202 may take to finish

# The server's own counters (platform/telemetry.py; the process collector's CPU).
STATEMENTS_METRIC = "instock_db_statements_total"
TRANSACTIONS_METRIC = "instock_db_transactions_total"
CPU_METRIC = "process_cpu_seconds_total"
# The server is settled once its statements grow by at most QUIET_STATEMENTS in QUIET_SECONDS
# (an idle relay still polls now and then), or after SETTLE_MOST_SECONDS whatever it does.
QUIET_SECONDS = 0.25
QUIET_STATEMENTS = 5
SETTLE_MOST_SECONDS = 60.0  # the seed's backlog alone takes ~20 s on SQLite


@dataclass(frozen=True)
class Plan:
    seconds: float  # each timed phase: the ceiling, and each case at saturation and at a rate
    rate: float | None  # requests/s offered in every case; None: half the case's saturation
    concurrency: int  # closed-loop clients at saturation (and for the /livez ceiling)
    skus: int  # adjustments and reservations spread over this many SKUs each
    checkout_skus: int
    drop_units: int
    drop_buyers: int
    drop_connections: int
    cases: tuple[str, ...]
    database: str  # chooses the backend (and PostgreSQL server); never written into
    http: str | None = None  # a running server instead of one of our own


def adjustment_sku(i: int) -> str:
    return f"bench-adj-{i:05d}"


def reservation_sku(i: int) -> str:
    return f"bench-res-{i:05d}"


def checkout_sku(i: int) -> str:
    return f"bench-chk-{i:05d}"


@dataclass
class Client:
    """The bench's connections to one server, and its tokens (minted here, signed with the
    server's key: its own secret, or this configuration's for `--http`)."""

    pool: Pool  # the load: raw keep-alive connections cost the bench little per request
    staff: Pool  # set-up, checks and /metrics: never queued behind the load
    tokens: TokenAuthority

    def bearer(self, role: Role, subject: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.mint(role, subject)}"}

    def close(self) -> None:
        self.pool.close()
        self.staff.close()


class Failed(Exception):
    """An answer the case did not expect: its kind is `http_<status>:<problem slug>`."""

    def __init__(self, answer: Answer) -> None:
        self.kind = f"http_{answer.status}:{problem_slug(answer)}"
        super().__init__(answer.body[:300].decode(errors="replace"))


def problem_slug(answer: Answer) -> str:
    try:
        return str(answer.json().get("type", "")).rsplit("/", 1)[-1]
    except (ValueError, AttributeError):
        return ""


def ok(answer: Answer) -> Answer:
    if answer.status >= 400:
        raise Failed(answer)
    return answer


async def in_parallel(calls: list[Callable[[], Awaitable[Any]]],
                      advance: Callable[[int], None], parallel: int = SEED_PARALLEL
                      ) -> list[Any]:
    """Run the calls SEED_PARALLEL at a time (in order of results), advancing a bar."""
    gate = asyncio.Semaphore(parallel)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            result = await call()
        advance(1)
        return result

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def seed(client: Client, plan: Plan, advance: Callable[[int], None]) -> None:
    """The bench location, one catalogue variant per SKU (products of 200), and a receipt for
    each: the adjustment SKUs get one too, so every case's first write finds its level."""
    admin = client.bearer(Role.ADMIN, "bench")
    location = await client.staff.request("POST", "/v1/locations", admin, {
        "id": LOCATION, "name": "Bench warehouse", "kind": "warehouse"})
    if location.status != 409:  # already there (a run against the same server): fine
        ok(location)
    skus = ([adjustment_sku(i) for i in range(plan.skus)]
            + [reservation_sku(i) for i in range(plan.skus)]
            + [checkout_sku(i) for i in range(plan.checkout_skus)])
    batches = [skus[i:i + VARIANTS_PER_PRODUCT]
               for i in range(0, len(skus), VARIANTS_PER_PRODUCT)]
    for n, batch in enumerate(batches):
        answer = await client.staff.request("POST", "/v1/products", admin, {
            "id": f"bench-writes-{batch[0]}", "title": f"Bench writes {n}", "brand": "bench",
            "category": "bench", "price": "9.90",
            "variants": [{"sku": sku} for sku in batch]})
        if answer.status != 409:
            ok(answer)
    head = client.pool.head("POST", ADJUST_PATH, admin, json_body=True)

    def receive(sku: str) -> Callable[[], Awaitable[Answer]]:
        body = {"sku": sku, "location": LOCATION, "kind": "receive",
                "quantity": STOCK_PER_SKU, "reason": "bench seed"}
        return lambda: _send_json(client.pool, head, body)

    for answer in await in_parallel([receive(sku) for sku in skus], advance):
        ok(answer)


async def _send_json(pool: Pool, head: bytes, body: dict[str, Any]) -> Answer:
    return await pool.send(head, json.dumps(body).encode())


@dataclass(frozen=True)
class Counters:
    """The server's own counts at one moment (its /metrics)."""

    statements: float = 0.0
    commits: float = 0.0
    rollbacks: float = 0.0
    cpu_seconds: float = 0.0
    # Statements by the work they were for (a request, the relay, a consumer: the `origin`
    # label), which says where the statements per request go.
    by_origin: dict[str, float] = field(default_factory=dict)

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.statements - other.statements, self.commits - other.commits,
                        self.rollbacks - other.rollbacks, self.cpu_seconds - other.cpu_seconds,
                        {origin: n - other.by_origin.get(origin, 0.0)
                         for origin, n in self.by_origin.items()})

    def per_request(self, requests: int) -> dict[str, Any]:
        """Growth over a phase ÷ the requests answered in it (relay and consumers included)."""
        if not requests:
            return {"statements_per_request": None, "transactions_per_request": None,
                    "rollbacks_per_request": None, "cpu_ms_per_request": None,
                    "statements_per_request_by_origin": {}}
        by_origin = {origin: round(n / requests, 2) for origin, n in sorted(
            self.by_origin.items(), key=lambda item: -item[1]) if round(n / requests, 2)}
        return {"statements_per_request": round(self.statements / requests, 2),
                "transactions_per_request": round(self.commits / requests, 2),
                "rollbacks_per_request": round(self.rollbacks / requests, 2),
                "cpu_ms_per_request": round(self.cpu_seconds * 1000 / requests, 3),
                "statements_per_request_by_origin": by_origin}


async def counters(client: Client) -> Counters:
    text = ok(await client.staff.request("GET", "/metrics")).body.decode()
    found = {"statements": 0.0, "commit": 0.0, "rollback": 0.0, "cpu": 0.0}
    by_origin: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == STATEMENTS_METRIC:
                found["statements"] += sample.value
                origin = sample.labels.get("origin", "")
                by_origin[origin] = by_origin.get(origin, 0.0) + sample.value
            elif sample.name == TRANSACTIONS_METRIC:
                outcome = sample.labels.get("outcome", "")
                if outcome in found:
                    found[outcome] += sample.value
            elif sample.name == CPU_METRIC:
                found["cpu"] += sample.value
    return Counters(found["statements"], found["commit"], found["rollback"], found["cpu"],
                    by_origin)


async def settled(client: Client) -> tuple[Counters, float]:
    """The server's counters once its background work (the relay and consumers catching up
    with the outbox a phase filled) has died down, and how long that took: a phase's counts
    then hold all the work its requests caused, not a backlog left to the next phase."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    last = await counters(client)
    while loop.time() - started < SETTLE_MOST_SECONDS:
        await asyncio.sleep(QUIET_SECONDS)
        now = await counters(client)
        if now.statements - last.statements <= QUIET_STATEMENTS:
            return now, loop.time() - started
        last = now
    return last, loop.time() - started
