"""Outbound webhooks end to end: an API process (PostgreSQL when configured, else SQLite), a
real HTTP receiver in this test process, and stock changed through the API.

A receiver that is down while an event is queued gets it, signed, once it is up, exactly once;
a receiver that keeps failing gets a delivery dead-lettered after N attempts (by a separate
`instock worker webhooks` process), and a redelivery through the API brings it home.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from instock.platform.auth import Role
from tests.e2e.harness import (
    Database,
    ServerFactory,
    client,
    create_location,
    create_product,
    receive,
)
from tests.webhook_receiver import Receiver

# Small backoffs so a test waits fractions of a second between attempts, not minutes.
FAST = {"INSTOCK_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
        "INSTOCK_WEBHOOK_BACKOFF_MAX_SECONDS": "0.5",
        "INSTOCK_WEBHOOK_TIMEOUT_SECONDS": "5"}


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def subscribe(admin: httpx.AsyncClient, url: str, *types: str) -> dict[str, Any]:
    made = await admin.post("/v1/webhooks/subscriptions",
                            json={"url": url, "event_types": list(types)})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def deliveries(admin: httpx.AsyncClient, subscription_id: str,
                     status: str | None = None) -> list[dict[str, Any]]:
    query = f"?status={status}" if status else ""
    response = await admin.get(f"/v1/webhooks/subscriptions/{subscription_id}/deliveries{query}")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def test_a_receiver_that_is_down_then_up_gets_each_event_once_signed(
        servers: ServerFactory, database: Database) -> None:
    api = await servers.start(INSTOCK_WEBHOOK_ATTEMPTS="50", **FAST)
    receiver = Receiver()  # its port is chosen; nothing listens there yet: the receiver is down
    async with client(api.base_url, Role.ADMIN) as admin:
        subscription = await subscribe(admin, receiver.url(), "inventory.stock_changed.v1")
        receiver.secrets["/hook"] = subscription["secret"]
        await create_product(admin, "wh", ["WH-1"])
        await create_location(admin, "wh-1")
        await receive(admin, "WH-1", "wh-1", 5)

        async def failed_twice() -> list[dict[str, Any]]:
            log = await deliveries(admin, subscription["id"])
            return log if log and len(log[0]["attempt_log"]) >= 2 else []

        [while_down] = await wait_for(failed_twice, "two failed attempts while it is down")
        assert while_down["status"] == "pending" and while_down["delivered_at"] is None
        assert all(a["status_code"] is None and a["error"] for a in while_down["attempt_log"])

        await receiver.start()
        try:
            async def delivered() -> list[dict[str, Any]]:
                return await deliveries(admin, subscription["id"], "delivered")

            [first] = await wait_for(delivered, "the delivery once the receiver is up")
            # A second stock change, delivered after the first: had the first gone out twice,
            # the copy would have come before this one.
            await receive(admin, "WH-1", "wh-1", 2)
            await wait_for(lambda: _count(delivered, 2), "the second event's delivery")
        finally:
            await receiver.stop()

    first_event = first["event_id"]
    assert receiver.on("/hook")
    assert all(r.verified for r in receiver.on("/hook")), "every delivery's signature is valid"
    counts = receiver.event_counts("/hook")
    assert counts[first_event] == 1 and len(counts) == 2 and set(counts.values()) == {1}
    got = next(r for r in receiver.on("/hook") if r.headers["instock-event-id"] == first_event)
    assert got.headers["instock-event-type"] == "inventory.stock_changed.v1"
    assert got.headers["instock-delivery-id"] == first["id"]
    assert got.headers["content-type"] == "application/cloudevents+json"
    envelope = got.envelope
    assert (envelope["id"], envelope["type"], envelope["subject"]) == (
        first_event, "inventory.stock_changed.v1", "WH-1")
    assert envelope["data"]["sku"] == "WH-1" and envelope["data"]["totals"]["available"] == 5
    attempts = first["attempt_log"]
    assert attempts[-1]["status_code"] == 200 and len(attempts) >= 3
    assert all(a["status_code"] is None for a in attempts[:-1])
    assert first["attempts"] == len(attempts)
    assert await database.scalar("SELECT count(*) FROM webhook_deliveries") == 2


async def _count(fetch: Callable[[], Awaitable[list[Any]]], n: int) -> bool:
    return len(await fetch()) >= n


async def test_a_failing_receiver_is_dead_lettered_after_n_attempts_then_redelivered(
        servers: ServerFactory, database: Database) -> None:
    # The API process queues; a separate `instock worker webhooks` process delivers.
    env = {"INSTOCK_WEBHOOK_ATTEMPTS": "3", **FAST}
    api = await servers.start(INSTOCK_RUN_WEBHOOK_DELIVERY="false", **env)
    worker = servers.worker("worker", "webhooks", **env)
    receiver = await Receiver(answers={"/fail": 500}).start()
    try:
        async with client(api.base_url, Role.ADMIN) as admin:
            subscription = await subscribe(admin, receiver.url("/fail"), "inventory.*")
            receiver.secrets["/fail"] = subscription["secret"]
            await create_product(admin, "dl", ["DL-1"])
            await create_location(admin, "wh-1")
            await receive(admin, "DL-1", "wh-1", 1)

            async def dead() -> list[dict[str, Any]]:
                return [d for d in await deliveries(admin, subscription["id"], "dead")
                        if d["event_type"] == "inventory.stock_changed.v1"]

            [letter] = await wait_for(dead, "the delivery dead-lettered after 3 attempts")
            assert worker.alive(), worker.log_tail()
            assert letter["attempts"] == 3 and letter["last_status_code"] == 500
            assert [(a["number"], a["status_code"]) for a in letter["attempt_log"]] == [
                (1, 500), (2, 500), (3, 500)]
            tried = [r for r in receiver.on("/fail")
                     if r.headers["instock-delivery-id"] == letter["id"]]
            assert len(tried) == 3 and all(r.verified for r in tried)
            assert [r.headers["instock-attempt"] for r in tried] == ["1", "2", "3"]
            recorded = await database.column(
                "SELECT envelope FROM outbox WHERE type = 'webhook.dead_lettered.v1'")
            assert any(letter["id"] in str(envelope) for envelope in recorded)

            receiver.answers["/fail"] = 200  # the receiver is fixed
            redelivered = await admin.post(f"/v1/webhooks/deliveries/{letter['id']}/redeliver")
            assert redelivered.status_code == 202, redelivered.text
            assert (redelivered.json()["status"], redelivered.json()["attempts"]) in {
                ("pending", 0), ("pending", 1), ("delivered", 1)}  # the worker may be quick

            async def delivered() -> dict[str, Any] | None:
                response = await admin.get(f"/v1/webhooks/deliveries/{letter['id']}")
                body: dict[str, Any] = response.json()
                return body if body["status"] == "delivered" else None

            done = await wait_for(delivered, "the redelivered delivery")
            assert done["attempts"] == 1 and done["last_status_code"] == 200
            assert [a["status_code"] for a in done["attempt_log"]] == [500, 500, 500, 200]
    finally:
        await receiver.stop()
    assert receiver.event_counts("/fail")[letter["event_id"]] >= 1
    assert worker.alive(), worker.log_tail()
