"""Checkout end to end: an API process, the payment sandbox and saga workers as real processes.

A paid order; a decline (stock released); a provider that times out until the breaker opens
and then recovers; a saga worker SIGKILLed between (and inside) steps and finished after restart
with stock and payment consistent; a cancellation and a return with their refunds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from instock.platform.auth import Role
from tests.e2e.harness import (
    Database,
    Server,
    ServerFactory,
    assert_problem,
    client,
    create_location,
    create_product,
    eventually,
    receive,
    stock,
)
from tests.e2e.sandboxes import configure, payments_and_api, payments_env

pytestmark = pytest.mark.one_backend
SKU = "JKT-M"



async def shop(servers: ServerFactory, units: int = 5, **env: str) -> tuple[Server, Server]:
    sandbox, api = await payments_and_api(servers, lambda url: payments_env(url, **env))
    async with client(api.base_url, Role.ADMIN) as admin:
        await create_product(admin, "jacket", [SKU])
        await create_location(admin, "wh-1")
        await receive(admin, SKU, "wh-1", units)
    return api, sandbox


async def checkout(api: Server, quantity: int = 1, customer: str = "ann") -> httpx.Response:
    async with client(api.base_url, Role.CUSTOMER, customer) as buyer:
        cart = (await buyer.post("/v1/carts", json={})).json()
        added = await buyer.post(f"/v1/carts/{cart['id']}/items",
                                 json={"sku": SKU, "quantity": quantity})
        assert added.status_code == 200, added.text
        return await buyer.post("/v1/checkout", json={"cart_id": cart["id"]})


async def sandbox_intent(db: Database, sandbox: Server, order_id: str) -> dict[str, Any]:
    """The provider's own view of the order's one payment."""
    refs = await db.column("SELECT provider_ref FROM payments WHERE order_id = :o", o=order_id)
    assert len(refs) == 1, refs
    async with httpx.AsyncClient(base_url=sandbox.base_url) as http:
        body: dict[str, Any] = (await http.get(f"/_sandbox/payments/{refs[0]}")).json()
        return body


async def refunded(db: Database, sandbox: Server, order_id: str) -> int:
    """Minor units the provider gave back for the order."""
    return int((await sandbox_intent(db, sandbox, order_id))["charge"]["amount_refunded"])


async def sandbox_stats(sandbox: Server) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=sandbox.base_url) as http:
        body: dict[str, int] = (await http.get("/_sandbox/stats")).json()
        return body


async def available(api: Server) -> int:
    async with client(api.base_url, Role.ADMIN) as admin:
        return int((await stock(admin, SKU))["available"])


async def test_a_paid_order(servers: ServerFactory, database: Database) -> None:
    api, sandbox = await shop(servers)
    response = await checkout(api, quantity=2)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "paid" and order["saga"]["status"] == "completed"
    assert order["total"] == "119.8" and order["paid"] == "119.8"
    async with client(api.base_url, Role.ADMIN) as admin:
        level = await stock(admin, SKU)
    assert (level["available"], level["committed"], level["reserved"]) == (
        3, 2, 0)
    intent = await sandbox_intent(database, sandbox, order["id"])
    assert intent["status"] == "succeeded" and intent["amount_received"] == 11980
    types = await database.column("SELECT type FROM outbox WHERE subject = :o ORDER BY sequence",
                                  o=order["id"])
    assert types[:2] == ["order.placed.v1", "order.paid.v1"]
    assert "order.fulfilment_requested.v1" in types


async def test_a_declined_payment_releases_the_stock(servers: ServerFactory,
                                                     database: Database) -> None:
    api, sandbox = await shop(servers)
    await configure(sandbox, decline_next=1)
    problem = assert_problem(await checkout(api), 402, "payment-declined")
    order_id = problem["order_id"]
    async with client(api.base_url, Role.ADMIN) as admin:
        order = (await admin.get(f"/v1/orders/{order_id}")).json()
    assert order["status"] == "cancelled" and "payment_declined" in order["history"][-1]["reason"]
    assert order["saga"]["status"] == "compensated"
    assert await available(api) == 5
    statuses = await database.column("SELECT status FROM reservations")
    assert statuses == ["released"]
    # The next buyer is not declined, and gets the unit the first one could not pay for.
    assert (await checkout(api, quantity=5)).status_code == 201


async def test_timeouts_open_the_breaker_and_it_closes_again(servers: ServerFactory,
                                                             database: Database) -> None:
    api, sandbox = await shop(servers)
    await configure(sandbox, timeout_all=True, hang_seconds=3)
    slugs = []
    for _ in range(4):
        started = time.monotonic()
        response = await checkout(api)
        slugs.append((response.json()["type"].rsplit("/", 1)[-1], time.monotonic() - started))
        assert response.status_code == 503, response.text
        assert await available(api) == 5  # no stock is kept hostage
    # The breaker opens after 3 failed calls (2 tries per checkout): from then on no call is
    # made and the answer comes at once.
    assert slugs[0][0] == "payment-unavailable"
    assert slugs[-1][0] == "payment-circuit-open" and slugs[-1][1] < slugs[0][1]
    await configure(sandbox, timeout_all=False)
    await asyncio.sleep(1.2)  # the cooldown: the next call is a trial
    response = await checkout(api)
    assert response.status_code == 201, response.text
    assert await available(api) == 4
    cancelled = await database.scalar("SELECT count(*) FROM orders WHERE status = 'cancelled'")
    assert cancelled == 4


@pytest.mark.parametrize("kill", ["reserve", "authorise", "commit_stock", "capture",
                                  "inside-authorise"])
async def test_a_killed_saga_worker_finishes_after_restart(
        servers: ServerFactory, database: Database, kill: str) -> None:
    # The API only stores the checkout; a separate worker process runs its saga.
    api, sandbox = await shop(servers, INSTOCK_SAGA_INLINE="false", INSTOCK_RUN_SAGAS="false")
    saga_env = {**payments_env(sandbox), "INSTOCK_SAGA_LEASE_SECONDS": "1"}
    if kill == "inside-authorise":  # the provider is slow: kill while the call is in flight
        await configure(sandbox, latency_ms=1500)
        worker = servers.worker("worker", "sagas", "--poll", "0.1", **saga_env)
    else:
        worker = servers.worker("worker", "sagas", "--poll", "0.1",
                                INSTOCK_SAGA_KILL_AFTER=kill, **saga_env)
    response = await checkout(api, quantity=2)
    assert response.status_code == 202, response.text
    order_id = response.json()["id"]

    if kill == "inside-authorise":
        await eventually(lambda: database.scalar(
            "SELECT count(*) FROM payments WHERE order_id = :o", o=order_id), "authorising",
            timeout=30)
        await asyncio.sleep(0.3)
        worker.sigkill()
        await configure(sandbox, latency_ms=0)
    await eventually(lambda: asyncio.sleep(0, not worker.alive()), "the worker's death",
                     timeout=30)
    assert worker.process.returncode == -9, worker.log_tail()
    plan = await database.scalar("SELECT plan FROM sagas WHERE order_id = :o", o=order_id)
    assert plan, "the saga was not finished by the killed worker"

    servers.worker("worker", "sagas", "--poll", "0.1", **saga_env)

    async def paid() -> bool:
        return await database.scalar("SELECT status FROM orders WHERE id = :o",
                                     o=order_id) == "paid"

    await eventually(paid, "the order to be paid", timeout=30)
    assert await database.scalar("SELECT status FROM sagas WHERE order_id = :o",
                                 o=order_id) == "completed"
    # Stock: exactly the two units committed, once. Payment: one intent, captured once.
    async with client(api.base_url, Role.ADMIN) as admin:
        level = await stock(admin, SKU)
    assert (level["available"], level["committed"], level["reserved"]) == (
        3, 2, 0)
    assert await database.column("SELECT status FROM reservations") == ["committed"]
    intent = await sandbox_intent(database, sandbox, order_id)
    assert intent["status"] == "succeeded" and intent["amount_received"] == 11980
    stats = await sandbox_stats(sandbox)
    assert (stats["intents_created"], stats["captures"]) == (1, 1), stats


async def test_cancel_and_return_refund_through_the_provider(servers: ServerFactory,
                                                             database: Database) -> None:
    api, sandbox = await shop(servers)
    first = (await checkout(api, quantity=2)).json()
    second = (await checkout(api, quantity=1, customer="bob")).json()
    async with client(api.base_url, Role.CUSTOMER, "ann") as ann:
        cancelled = await ann.post(f"/v1/orders/{first['id']}/cancel", json={"reason": "oops"})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "refunded"
        refused = await ann.post(f"/v1/orders/{second['id']}/cancel", json={})
        assert refused.status_code == 403  # not hers
    assert (await refunded(database, sandbox, first["id"])) == 11980
    assert await available(api) == 4

    async with client(api.base_url, Role.ADMIN) as staff:
        for step in ("fulfil", "ship", "deliver"):
            moved = await staff.post(f"/v1/orders/{second['id']}/{step}", json={})
            assert moved.status_code == 200, moved.text
        returned = await staff.post(f"/v1/orders/{second['id']}/returns", json={
            "reason": "faulty zip",
            "lines": [{"sku": SKU, "quantity": 1, "location": "wh-1", "resellable": False}]})
        assert returned.status_code == 200, returned.text
        assert returned.json()["status"] == "refunded"
        level = await stock(staff, SKU)
    assert (level["on_hand"], level["unsellable"], level["available"]) == (
        5, 1, 4)
    assert (await refunded(database, sandbox, second["id"])) == 5990


@pytest.mark.parametrize("kill", ["authorise", "request_fulfilment"])
async def test_a_keyed_checkout_retried_after_a_crash_gets_its_order_not_another(
        servers: ServerFactory, database: Database, kill: str) -> None:
    """Issue 17, item 3: the API process dies in the middle of a keyed checkout (after its
    payment is authorised) or after its last step, before it answers. The client retries with
    the same key on another process at once: it gets that order (paid, or still going and
    then paid), never "in progress" until a timeout, and never a second order or payment."""
    lease = {"INSTOCK_SAGA_LEASE_SECONDS": "1"}
    sandbox, victim = await payments_and_api(servers, lambda url: payments_env(
        url, INSTOCK_SAGA_KILL_AFTER=kill, **lease))
    async with client(victim.base_url, Role.ADMIN) as admin:
        await create_product(admin, "jacket", [SKU])
        await create_location(admin, "wh-1")
        await receive(admin, SKU, "wh-1", 5)
    key = {"Idempotency-Key": f"checkout-{kill}"}
    async with client(victim.base_url, Role.CUSTOMER, "ann") as buyer:
        cart = (await buyer.post("/v1/carts", json={})).json()
        added = await buyer.post(f"/v1/carts/{cart['id']}/items",
                                 json={"sku": SKU, "quantity": 2})
        assert added.status_code == 200, added.text
        with pytest.raises(httpx.TransportError):
            await buyer.post("/v1/checkout", json={"cart_id": cart["id"]}, headers=key)
    victim.process.wait(timeout=30)
    assert victim.process.returncode == -9, victim.log_tail()
    [order_id] = await database.column("SELECT id FROM orders")

    survivor = await servers.start(**payments_env(sandbox, **lease))
    async with client(survivor.base_url, Role.CUSTOMER, "ann") as buyer:
        retried = await buyer.post("/v1/checkout", json={"cart_id": cart["id"]}, headers=key)
        assert retried.status_code in (201, 202), retried.text
        assert retried.json()["id"] == order_id

        async def paid() -> bool:  # a 202 says: poll the order
            polled = await buyer.get(f"/v1/orders/{order_id}")
            return bool(polled.json()["status"] == "paid")

        await eventually(paid, "the order to be paid", timeout=30)
    assert await database.column("SELECT id FROM orders") == [order_id]
    assert await available(survivor) == 3
    stats = await sandbox_stats(sandbox)
    assert (stats["intents_created"], stats["captures"]) == (1, 1), stats
