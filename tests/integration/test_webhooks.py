"""Outbound webhooks against the real database and a real HTTP receiver: the fan-out queues
each event once per subscriber however often the bus delivers it, concurrent workers never send
one delivery twice, a killed worker's claim comes back, failures are retried then dead-lettered,
and a dead letter can be sent again; the routes validate, authorise and hide secrets."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from instock.app import Container, create_app
from instock.platform.auth import Role
from instock.platform.bus import inbox
from instock.platform.bus.outbox import outbox
from instock.platform.db import Database, utcnow
from instock.platform.errors import PROBLEM_JSON, Conflict
from instock.platform.ids import new_id
from instock.webhooks import store
from instock.webhooks.model import Attempt, Delivery, Next, Status
from instock.webhooks.service import Policy, WebhooksService
from tests.integration.helpers import stocked
from tests.support import make_settings
from tests.webhook_receiver import Receiver

SECRET = "whsec_integration-test-secret"


class Clock:
    """A clock the test moves: retries come due without anyone sleeping."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def service(c: Container, clock: Clock | None = None, db: Database | None = None,
            **policy: Any) -> WebhooksService:
    return WebhooksService(db or c.db, Policy(**{"timeout": 5.0, **policy}),
                          clock=clock or utcnow, jitter=lambda: 0.0, guard=c.webhooks.guard)


async def queue(c: Container, subscription_id: str, count: int) -> list[str]:
    """Queue `count` deliveries of made-up events, as the fan-out would."""
    now = utcnow()
    made = [Delivery(new_id(), subscription_id, (event := new_id()), "inventory.sold_out.v1",
                     {"specversion": "1.0", "id": event, "type": "inventory.sold_out.v1"},
                     Status.PENDING, 0, now, now) for _ in range(count)]
    async with c.db.write() as conn:
        await store.queue(conn, made)
    return [d.id for d in made]


async def events_of_type(c: Container, event_type: str) -> list[dict[str, Any]]:
    async with c.db.read() as conn:
        rows = await conn.execute(sa.select(outbox.c.envelope).where(outbox.c.type == event_type))
        return [row.envelope for row in rows]


async def queued(c: Container) -> list[tuple[str, str]]:
    async with c.db.read() as conn:
        rows = await conn.execute(sa.select(store.deliveries.c.subscription_id,
                                            store.deliveries.c.event_id))
        return [(r.subscription_id, r.event_id) for r in rows]


async def test_each_event_is_queued_once_per_wanting_subscriber_however_often_it_arrives(
        container: Container) -> None:
    webhooks = container.webhooks
    exact = await webhooks.subscribe("http://127.0.0.1:9/a", ["inventory.stock_changed.v1"], None)
    wildcard = await webhooks.subscribe("http://127.0.0.1:9/b", ["inventory.*"], None)
    other = await webhooks.subscribe("http://127.0.0.1:9/c", ["waitlist.*"], None)
    disabled = await webhooks.subscribe("http://127.0.0.1:9/d", ["inventory.*"], None)
    await webhooks.update(disabled.id, {"active": False})
    since = utcnow()
    await stocked(container, "WH-1", 5)
    envelopes = await events_of_type(container, "inventory.stock_changed.v1")
    envelopes += await events_of_type(container, "product.created.v1")
    assert len(envelopes) == 2
    fanout = container.consumer("webhook-fanout")

    # The bus hands each event over several times, some at once.
    outcomes = await asyncio.gather(*(fanout.handle(e) for e in envelopes for _ in range(3)))
    outcomes += [await fanout.handle(e) for e in envelopes]
    assert Counter(outcomes) == {"applied": 2, "duplicate": 6}
    # A replay makes the consumer forget it saw them; the queue still holds each only once.
    async with container.db.write() as conn:
        await inbox.forget_since(conn, "webhook-fanout", since)
    assert [await fanout.handle(e) for e in envelopes] == ["applied", "applied"]

    stock_changed = next(e["id"] for e in envelopes if e["type"] == "inventory.stock_changed.v1")
    assert sorted(await queued(container)) == sorted([(exact.id, stock_changed),
                                                      (wildcard.id, stock_changed)])
    assert other.id not in {s for s, _ in await queued(container)}


async def test_concurrent_workers_send_each_delivery_once(container: Container,
                                                          receiver: Receiver) -> None:
    subscription = await container.webhooks.subscribe(receiver.url(), ["inventory.*"], SECRET)
    receiver.secrets["/hook"] = SECRET
    ids = await queue(container, subscription.id, 40)
    databases = [Database(container.settings.database_url) for _ in range(4)]
    workers = [service(container, db=db) for db in databases]

    async def drain(worker: WebhooksService) -> int:
        sent = 0
        while n := await worker.deliver_due(limit=3):
            sent += n
        return sent

    try:
        sent = await asyncio.gather(*(drain(w) for w in workers))
    finally:
        for db in databases:
            await db.dispose()
    assert sum(sent) == 40
    assert Counter(r.headers["instock-delivery-id"] for r in receiver.received) == {
        i: 1 for i in ids}
    assert all(r.verified for r in receiver.received)
    log = await container.webhooks.deliveries(subscription.id, limit=100)
    assert {d.id for d in log} == set(ids)
    assert all(d.status is Status.DELIVERED and d.attempts == 1 and len(d.log) == 1
               and d.log[0].status_code == 200 for d in log)


async def test_a_killed_workers_claim_comes_back_when_its_lease_runs_out(
        container: Container, receiver: Receiver) -> None:
    subscription = await container.webhooks.subscribe(receiver.url(), ["inventory.*"], SECRET)
    [delivery_id] = await queue(container, subscription.id, 1)
    clock = Clock()  # from now on: the delivery is due
    worker = service(container, clock)
    async with container.db.write() as conn:  # a worker claims it, then dies
        [claim] = await store.claim(conn, clock(), "killed", clock() + worker.policy.lease, 10)
    assert claim.delivery.id == delivery_id and claim.delivery.attempts == 1

    assert await worker.deliver_due() == 0  # the lease still holds
    clock.advance(worker.policy.lease.total_seconds() + 1)
    assert await worker.deliver_due() == 1
    assert len(receiver.received) == 1
    # The killed worker's late word (had it only been slow) decides nothing.
    async with container.db.write() as conn:
        late = Attempt(delivery_id, 1, clock(), None, "too late", 1)
        assert not await store.finish(conn, delivery_id, "killed",
                                      Next(Status.DEAD, None), late)
    done = await container.webhooks.delivery(delivery_id)
    assert done.status is Status.DELIVERED and done.attempts == 2  # the lost attempt counts
    assert [a.error for a in done.log] == [None, "too late"]


async def test_failures_are_retried_with_backoff_then_dead_lettered_and_redeliverable(
        container: Container, receiver: Receiver) -> None:
    clock = Clock()
    worker = service(container, clock, attempts=3, backoff_base=10.0, backoff_max=100.0)
    failing = await worker.subscribe(receiver.url("/fail"), ["webhook.*"], SECRET)
    ops = await worker.subscribe(receiver.url("/ops"), ["webhook.dead_lettered.v1"], SECRET)
    receiver.secrets.update({"/fail": SECRET, "/ops": SECRET})
    receiver.answers["/fail"] = 500

    first = await worker.ping(failing.id)  # the first attempt runs at once
    assert (first.status, first.attempts, first.last_status_code) == (Status.PENDING, 1, 500)
    assert first.due_at == clock() + timedelta(seconds=5)  # base 10, jitter 0: the lower half
    assert await worker.deliver_due() == 0  # not due yet
    clock.advance(5)
    assert await worker.deliver_due() == 1
    assert (await worker.delivery(first.id)).due_at == clock() + timedelta(seconds=10)
    clock.advance(10)
    assert await worker.deliver_due() == 1
    dead = await worker.delivery(first.id)
    assert (dead.status, dead.attempts) == (Status.DEAD, 3)
    assert [(a.number, a.status_code, a.error) for a in dead.log] == [
        (n, 500, "HTTP 500") for n in (1, 2, 3)]
    clock.advance(1000)
    assert await worker.deliver_due() == 0  # dead stays dead

    [letter] = await events_of_type(container, "webhook.dead_lettered.v1")
    assert letter["subject"] == failing.id
    assert letter["data"]["delivery_id"] == first.id
    assert letter["data"]["attempts"] == 3 and letter["data"]["last_status_code"] == 500
    # The dead letter goes to whoever watches for them, never to the subscription it is about.
    await container.consumer("webhook-fanout").handle(letter)
    assert [s for s, e in await queued(container) if e == letter["id"]] == [ops.id]

    receiver.answers["/fail"] = 204
    again = await worker.redeliver(first.id)
    assert (again.status, again.attempts) == (Status.PENDING, 0)
    with pytest.raises(Conflict):
        await worker.redeliver(first.id)  # already queued
    assert await worker.deliver_due(delivery_id=first.id) == 1
    delivered = await worker.delivery(first.id)
    assert (delivered.status, delivered.attempts, delivered.last_status_code) == (
        Status.DELIVERED, 1, 204)
    assert [a.number for a in delivered.log] == [1, 2, 3, 1]
    pings = receiver.on("/fail")
    assert len(pings) == 4 and all(r.verified for r in pings)
    assert {r.headers["instock-delivery-id"] for r in pings} == {first.id}
    assert pings[0].envelope["type"] == "webhook.ping.v1"
    assert await worker.redeliver(first.id) is not None  # a delivered one may go again


async def test_a_receiver_that_never_answers_is_an_error_not_a_stuck_worker(
        container: Container) -> None:
    worker = service(container, Clock(), timeout=0.5)
    silent = await asyncio.start_server(lambda r, w: asyncio.sleep(3600), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        s = await worker.subscribe(f"http://127.0.0.1:{port}/", ["inventory.*"], None)
        attempted = await worker.ping(s.id)
    finally:
        silent.close()
    assert attempted.status is Status.PENDING and attempted.log[0].status_code is None
    assert attempted.last_error is not None and "no answer" in attempted.last_error


# -- the routes ------------------------------------------------------------------------------


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(make_settings(database_url, tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        client.headers["Authorization"] = (
            f"Bearer {app.state.tokens.mint(Role.ADMIN, 'admin-1')}")
        yield app, client
    await app.state.webhooks.db.dispose()


def problem_fields(response: httpx.Response, status: int = 422) -> set[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    return {e["field"] for e in response.json().get("errors", [])}


async def test_subscriptions_are_validated_naming_the_field(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    _, client = api
    good = {"url": "https://hooks.example.com/x", "event_types": ["inventory.*"]}
    for body, field in [({**good, "url": "ftp://x"}, "url"),
                        ({**good, "url": "not a url"}, "url"),
                        ({**good, "event_types": []}, "event_types"),
                        ({**good, "event_types": ["inventory.nope.v1"]}, "event_types[0]"),
                        ({**good, "event_types": ["inventory.*", "nope.*"]}, "event_types[1]"),
                        ({**good, "secret": "short"}, "secret"),
                        ({**good, "colour": "red"}, "colour")]:
        assert problem_fields(await client.post("/v1/webhooks/subscriptions", json=body)) == {
            field}, body
    assert (await client.get("/v1/webhooks/subscriptions")).json() == []  # nothing was made


async def test_only_admins_manage_subscriptions_and_secrets_are_shown_once(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = api
    made = await client.post("/v1/webhooks/subscriptions", json={
        "url": "https://hooks.example.com/x", "event_types": ["inventory.stock_changed.v1"],
        "description": "erp"})
    assert made.status_code == 201, made.text
    created = made.json()
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
    sid = created["id"]
    listed = (await client.get("/v1/webhooks/subscriptions")).json()
    one = (await client.get(f"/v1/webhooks/subscriptions/{sid}")).json()
    assert [s["id"] for s in listed] == [sid]
    assert "secret" not in listed[0] and "secret" not in one
    assert created["secret"] not in (await client.get("/v1/webhooks/subscriptions")).text

    merchandiser = {"Authorization": f"Bearer {app.state.tokens.mint(Role.MERCHANDISER)}"}
    for method, path in [("GET", "/v1/webhooks/subscriptions"),
                         ("POST", f"/v1/webhooks/subscriptions/{sid}/test"),
                         ("DELETE", f"/v1/webhooks/subscriptions/{sid}")]:
        refused = await client.request(method, path, headers=merchandiser)
        assert refused.status_code == 403 and refused.headers["content-type"].startswith(
            PROBLEM_JSON)

    patched = await client.patch(f"/v1/webhooks/subscriptions/{sid}",
                                 json={"active": False, "event_types": ["order.*"]})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["active"], patched.json()["event_types"]) == (False, ["order.*"])
    assert problem_fields(await client.patch(f"/v1/webhooks/subscriptions/{sid}",
                                             json={"active": None})) == {"active"}
    assert problem_fields(await client.patch(f"/v1/webhooks/subscriptions/{sid}",
                                             json={"url": "file:///etc/passwd"})) == {"url"}
    assert problem_fields(await client.patch(f"/v1/webhooks/subscriptions/{sid}",
                                             json={"secret": "x" * 20})) == {"secret"}
    assert (await client.post(f"/v1/webhooks/subscriptions/{sid}/test")).status_code == 409
    assert (await client.get(f"/v1/webhooks/subscriptions/{sid}/deliveries?status=lost")
            ).status_code == 422

    assert (await client.delete(f"/v1/webhooks/subscriptions/{sid}")).status_code == 204
    for response in [await client.get(f"/v1/webhooks/subscriptions/{sid}"),
                     await client.get(f"/v1/webhooks/subscriptions/{sid}/deliveries"),
                     await client.delete(f"/v1/webhooks/subscriptions/{sid}"),
                     await client.post(f"/v1/webhooks/deliveries/{new_id()}/redeliver")]:
        assert response.status_code == 404, response.text
