"""The event backbone end to end, in separate processes on a real bus.

Two API processes, a relay and a consumer; random stock changes under load, some of them refused
(rolled back); the relay SIGKILLed and restarted mid-run. Afterwards: every committed change
reached the consumer exactly once in effect and in sequence order per SKU, no event exists for
a rolled-back change, and SSE clients and GraphQL subscribers on each API process hold the true
final stock, never having seen a version go back. So do shoppers reloading the product page
(a GraphQL query answered from each process's read copies): with copies that would live an
hour, only the events from the bus can have kept them true.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from instock.platform.auth import Role
from instock.platform.bus.rabbitmq import RabbitStreamsBus
from tests.e2e.harness import (
    Database,
    ServerFactory,
    client,
    create_location,
    create_product,
    receive,
    sse_events,
    stock,
)
from tests.support import NATS_URL, RABBITMQ_URL, REDIS_URL, rabbitmq_streams

SKUS = [f"EB-{i}" for i in range(4)]
OPERATIONS = 360
CONSUMER = "recs-availability"


def unique_bus(url: str) -> str:
    """The test's own stream on the shared server (NATS stream names are upper case here)."""
    name = f"e2e{uuid.uuid4().hex[:10]}"
    name = name.upper() if url.startswith("nats") else name
    return f"{url}{'&' if '?' in url else '?'}stream={name}"


# Every bus on PostgreSQL; on SQLite (its relays' file lock, its 1 s poll) the first bus
# configured is enough: what a bus does does not depend on the database behind the outbox.
BUSES = [pytest.param(url, id=url.split(":", 1)[0],
                      marks=[pytest.mark.one_backend] if n else [])
         for n, url in enumerate(url for url in (
             NATS_URL, REDIS_URL, RABBITMQ_URL and rabbitmq_streams(RABBITMQ_URL)) if url)]
if not BUSES:
    BUSES = [pytest.param(None, marks=pytest.mark.skip(
        reason="no Redis, NATS or RabbitMQ configured"))]


class Watcher:
    """An SSE client on one API process, remembering each SKU's newest state."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.latest: dict[str, dict[str, Any]] = {}
        self.out_of_order = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=None) as http:
            async for event in sse_events(http, f"/v1/stream/inventory?skus={','.join(SKUS)}"):
                if event.event != "stock":
                    continue
                old = self.latest.get(event.data["sku"])
                if old is not None and old["version"] >= event.data["version"]:
                    self.out_of_order += 1
                self.latest[event.data["sku"]] = event.data


class GraphQLWatcher(Watcher):
    """A GraphQL `stockChanged` subscriber (graphql-transport-ws) on one API process."""

    async def run(self) -> None:
        url = self.base_url.replace("http://", "ws://") + "/graphql"
        transport = WebsocketsTransport(url=url, subprotocols=["graphql-transport-ws"])
        request = GraphQLRequest(
            "subscription($skus: [String!]!) { stockChanged(skus: $skus) { sku version "
            "available } }", variable_values={"skus": SKUS})
        async with Client(transport=transport) as session:
            async for message in session.subscribe(request):
                data = message["stockChanged"]
                old = self.latest.get(data["sku"])
                if old is not None and old["version"] >= data["version"]:
                    self.out_of_order += 1
                self.latest[data["sku"]] = data


class PageReader(Watcher):
    """A shopper reloading the product page (a GraphQL query) on one API process."""

    async def run(self) -> None:
        query = """query($id: ID!) { product(id: $id) {
            variants { sku stock(channel: "web") { version available } } } }"""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            while True:
                await self.read(http, query)
                await asyncio.sleep(0.02)

    async def read(self, http: httpx.AsyncClient, query: str) -> None:
        answer = (await http.post("/graphql", json={"query": query,
                                                     "variables": {"id": "eb"}})).json()
        for variant in answer["data"]["product"]["variants"]:
            state = {"sku": variant["sku"], **variant["stock"]}
            old = self.latest.get(state["sku"])
            if old is not None and old["version"] > state["version"]:
                self.out_of_order += 1
            self.latest[state["sku"]] = state


async def one_operation(api: httpx.AsyncClient, rng: random.Random, held: list[str]) -> None:
    sku = rng.choice(SKUS)
    roll = rng.random()
    if roll < 0.35:
        await api.post("/v1/inventory/adjustments", json={
            "sku": sku, "location": "wh-1", "kind": "receive", "quantity": rng.randint(1, 5)})
    elif roll < 0.6:  # often more than is there: refused, rolled back, must leave no event
        await api.post("/v1/inventory/adjustments", json={
            "sku": sku, "location": "wh-1", "kind": "damage", "quantity": rng.randint(1, 12)})
    elif roll < 0.85 or not held:
        made = await api.post("/v1/reservations", json={
            "lines": [{"sku": sku, "quantity": rng.randint(1, 3)}]})
        if made.status_code == 201:
            held.append(made.json()["id"])
    else:
        reservation = held.pop(rng.randrange(len(held)))
        action = rng.choice(["commit", "release"])
        await api.post(f"/v1/reservations/{reservation}/{action}")


async def wait_for(check: Any, what: str, timeout: float = 90.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def dropped_afterwards() -> AsyncIterator[list[str]]:
    """Bus URLs whose RabbitMQ streams are deleted after the test. Asked for before `servers`,
    so this runs after the processes are gone (a live one would make them again)."""
    urls: list[str] = []
    yield urls
    for url in urls:
        if url.startswith("rabbitmq"):
            bus = RabbitStreamsBus.from_url(url)
            try:
                await bus.drop()
            finally:
                await bus.close()


@pytest.mark.parametrize("bus_url", BUSES)
async def test_every_committed_change_arrives_once_in_order_despite_a_killed_relay(
        dropped_afterwards: list[str], servers: ServerFactory, database: Database,
        bus_url: str) -> None:
    dropped_afterwards.append(bus := unique_bus(bus_url))
    # Rate limits off: a PageReader reloads every 20 ms, past the anonymous 300/minute, and a
    # 429 (no `data`) ended it, short of the final state, whenever the run was quick enough.
    env = {"INSTOCK_BUS_URL": bus, "INSTOCK_RUN_RELAY": "false",
           "INSTOCK_RUN_CONSUMERS": "false", "INSTOCK_LIVE_HEARTBEAT_SECONDS": "1",
           "INSTOCK_READ_CACHE_SECONDS": "3600", "INSTOCK_RATE_LIMITS": "off"}
    apis = [await servers.start(**env), await servers.start(**env)]
    relay = servers.worker("worker", "relay", **env)
    consumer = servers.worker("worker", "consume", CONSUMER, **env)
    async with client(apis[0].base_url, Role.ADMIN) as admin:
        await create_product(admin, "eb", SKUS)
        await create_location(admin, "wh-1")
        for sku in SKUS:
            await receive(admin, sku, "wh-1", 10)
    watchers = [kind(api.base_url) for api in apis
                for kind in (Watcher, Watcher, GraphQLWatcher, PageReader)]
    for watcher in watchers:
        watcher.task = asyncio.create_task(watcher.run())

    rng = random.Random(7)
    held: list[str] = []
    admins = [client(api.base_url, Role.ADMIN) for api in apis]
    try:
        async def worker(n: int) -> None:
            for i in range(n, OPERATIONS, 12):
                await one_operation(admins[i % 2], rng, held)
                if i == OPERATIONS // 3:
                    nonlocal relay
                    relay.sigkill()  # mid-run, with events in flight
                    await asyncio.sleep(0.5)
                    relay = servers.worker("worker", "relay", **env)

        await asyncio.gather(*(worker(n) for n in range(12)))
        assert relay.alive() and consumer.alive(), relay.log_tail() + consumer.log_tail()

        truth = {sku: await stock(admins[0], sku) for sku in SKUS}
        await wait_for(lambda: _unpublished(database), "the relay to drain the outbox")
        await wait_for(lambda: _caught_up(database, truth), "the consumer to catch up")
        await wait_for(lambda: _watchers_caught_up(watchers, truth),
                       "SSE and GraphQL clients to catch up", timeout=30)
    finally:
        for api in admins:
            await api.aclose()
        for watcher in watchers:
            if watcher.task is not None:
                watcher.task.cancel()

    await _assert_exactly_once_in_order(database)
    await _assert_events_are_committed_states(database)
    for watcher in watchers:
        assert watcher.out_of_order == 0
        for sku in SKUS:
            assert (watcher.latest[sku]["version"], watcher.latest[sku]["available"]) == \
                (truth[sku]["version"], truth[sku]["available"])


async def _unpublished(database: Database) -> bool:
    return await database.scalar(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def _caught_up(database: Database, truth: dict[str, dict[str, Any]]) -> bool:
    rows = await database.column("SELECT sku || '=' || version FROM item_availability")
    return sorted(rows) == sorted(f"{sku}={t['version']}" for sku, t in truth.items())


async def _watchers_caught_up(watchers: list[Watcher], truth: dict[str, dict[str, Any]]) -> bool:
    return all(w.latest.get(sku, {}).get("version") == truth[sku]["version"]
               for w in watchers for sku in SKUS)


async def _assert_exactly_once_in_order(database: Database) -> None:
    published = set(await database.column(
        "SELECT id FROM outbox WHERE type = 'inventory.stock_changed.v1'"))
    handled = await database.column(
        "SELECT event_id FROM inbox WHERE consumer = :c AND type = 'inventory.stock_changed.v1'",
        c=CONSUMER)
    assert len(handled) == len(set(handled)) and set(handled) == published
    outcomes = await database.column("SELECT DISTINCT outcome FROM inbox WHERE consumer = :c",
                                     c=CONSUMER)
    assert outcomes == ["applied"]  # in order: not one event arrived after a newer one
    # A batch is claimed in one statement with one `processed_at` for all its events (applied
    # in order within it): ties are broken by sequence, or the database's order among them is
    # arbitrary and a batch would seem to go back.
    rows = await database.column(
        "SELECT subject || ' ' || sequence FROM inbox WHERE consumer = :c "
        "ORDER BY processed_at, subject, sequence", c=CONSUMER)
    last: dict[str, int] = {}
    for row in rows:
        subject, sequence = row.split()
        assert int(sequence) >= last.get(subject, 0), f"{subject} went back to {sequence}"
        last[subject] = int(sequence)


async def _assert_events_are_committed_states(database: Database) -> None:
    """Each stock_changed event shows a state the ledger committed: on_hand at that version
    equals the ledger's running sum. A refused change has no ledger row, so no event."""
    entries = await database.column(
        "SELECT sku || ' ' || location || ' ' || version || ' ' || on_hand FROM ledger")
    running: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for entry in sorted(entries, key=lambda e: (e.split()[0], e.split()[1], int(e.split()[2]))):
        sku, location, version, delta = entry.split()
        level = running[(sku, location)]
        level[int(version)] = (level[max(level)] if level else 0) + int(delta)
    envelopes = await database.column(
        "SELECT envelope FROM outbox WHERE type = 'inventory.stock_changed.v1'")
    assert envelopes
    for raw in envelopes:
        data = (json.loads(raw) if isinstance(raw, str) else raw)["data"]
        assert running[(data["sku"], data["location"])][data["version"]] == data["on_hand"]
