"""Payment webhooks end to end: an API process (relay and the payment-events consumer inside it)
and the payment sandbox as real processes, for both providers' verification (platform
signatures for `sandbox`, the Stripe SDK's `construct_event` for `stripe`).

A forged or unsigned delivery and a replay outside the tolerance are refused with a
`webhook-signature` problem and leave nothing behind; a duplicate is acknowledged and processed
once; the sandbox's events, sent twice each and in reverse order, leave the payment where its
life ended (a late `succeeded` does not undo a refund).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from instock.platform.auth import Role
from instock.platform.signatures import sign
from tests.e2e.harness import (
    Database,
    Server,
    ServerFactory,
    assert_problem,
    client,
    create_location,
    create_product,
    receive,
)
from tests.e2e.sandboxes import configure, payments_and_api, payments_env

# Verifying and applying a provider's events does not depend on the database behind them
# (the payments context's integration tests run on both).
pytestmark = pytest.mark.one_backend

T = TypeVar("T")
SECRET = "whsec_e2e_payments"
SKU = "CAP-1"
WAIT = 60.0


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Poll until `done(probe())`; the deadline only bounds a broken run."""
    deadline = time.monotonic() + WAIT
    while True:
        value = await probe()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r}"
        await asyncio.sleep(0.1)


async def shop(servers: ServerFactory, provider: str) -> tuple[Server, Server, str]:
    sandbox, api = await payments_and_api(servers, lambda url: payments_env(
        url, INSTOCK_PAYMENT_PROVIDER=provider, INSTOCK_PAYMENTS_WEBHOOK_SECRET=SECRET,
        INSTOCK_PAYMENTS_WEBHOOK_TOLERANCE_SECONDS="300"))
    hook = f"{api.base_url}/v1/webhooks/payments/{provider}"
    await configure(sandbox, webhook_url=hook, webhook_secret=SECRET)
    return api, sandbox, hook


async def paid_order(api: Server) -> dict[str, Any]:
    async with client(api.base_url, Role.ADMIN) as admin:
        await create_product(admin, "cap", [SKU])
        await create_location(admin, "wh-1")
        await receive(admin, SKU, "wh-1", 3)
    async with client(api.base_url, Role.CUSTOMER, "bea") as buyer:
        cart = (await buyer.post("/v1/carts", json={})).json()
        added = await buyer.post(f"/v1/carts/{cart['id']}/items",
                                 json={"sku": SKU, "quantity": 1})
        assert added.status_code == 200, added.text
        response = await buyer.post("/v1/checkout", json={"cart_id": cart["id"]})
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


async def sandbox_get(sandbox: Server, path: str, **params: str) -> Any:
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=30) as http:
        response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def post_hook(hook: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(hook, content=body, headers=headers)


async def payment_row(db: Database, order_id: str) -> dict[str, Any]:
    rows = await db.rows("SELECT * FROM payments WHERE order_id = :o", o=order_id)
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("provider", ["sandbox", "stripe"])
async def test_forged_replayed_and_duplicate_deliveries(
        servers: ServerFactory, database: Database, provider: str) -> None:
    api, sandbox, hook = await shop(servers, provider)
    order = await paid_order(api)
    # Let the sandbox's own deliveries of this payment land first (each is processed once).
    events = await sandbox_get(sandbox, "/_sandbox/events")
    await eventually(lambda: database.scalar("SELECT count(*) FROM webhook_receipts"),
                     lambda n: n == len(events))
    receipts = await database.scalar("SELECT count(*) FROM webhook_receipts")

    # A new event, as the provider would send it (a refund made on its dashboard).
    async with httpx.AsyncClient(base_url=sandbox.base_url,
                                 headers={"Authorization": "Bearer sk_test_e2e"}) as http:
        intent = (await payment_row(database, order["id"]))["provider_ref"]
        await configure(sandbox, webhook_url=None)  # this one we deliver by hand
        refunded = await http.post("/v1/refunds", data={"payment_intent": intent,
                                                        "amount": "500"})
        assert refunded.status_code == 200, refunded.text
    event = (await sandbox_get(sandbox, "/_sandbox/events", type="charge.refunded"))[-1]
    body = json.dumps(event).encode()

    for signature in (None, "t=1,v1=deadbeef", sign(body, "whsec_not_ours"),
                      sign(body.replace(b"500", b"900"), SECRET)):
        problem = assert_problem(await post_hook(hook, body, signature), 400,
                                 "webhook-signature")
        assert problem["errors"][0]["field"] == "Stripe-Signature"
    # A true signature from an hour ago: a replay, refused.
    old = sign(body, SECRET, int(time.time()) - 3600)
    assert_problem(await post_hook(hook, body, old), 400, "webhook-signature")
    assert await database.scalar("SELECT count(*) FROM webhook_receipts") == receipts

    first = await post_hook(hook, body, sign(body, SECRET))
    again = await post_hook(hook, body, sign(body, SECRET))  # the provider's retry
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert await database.scalar("SELECT count(*) FROM webhook_receipts") == receipts + 1
    envelopes = [json.loads(e) if isinstance(e, str) else e for e in await database.column(
        "SELECT envelope FROM outbox WHERE type = 'payment.provider_event.v1'")]
    assert [e["data"]["event_id"] for e in envelopes].count(event["id"]) == 1
    row = await eventually(lambda: payment_row(database, order["id"]),
                           lambda r: r["status"] == "partially_refunded")
    assert str(row["amount_refunded"]) in ("5", "5.0000")

    unknown = await post_hook(hook.replace(provider, "paypal"), body, sign(body, SECRET))
    assert_problem(unknown, 404, "not-found")


@pytest.mark.parametrize("provider", ["sandbox", "stripe"])
async def test_events_twice_and_in_reverse_end_where_the_payment_ended(
        servers: ServerFactory, database: Database, provider: str) -> None:
    api, sandbox, _ = await shop(servers, provider)
    await configure(sandbox, webhook_hold=True, webhook_duplicates=True)
    order = await paid_order(api)  # authorised, captured: two events held
    intent = (await payment_row(database, order["id"]))["provider_ref"]
    async with httpx.AsyncClient(base_url=sandbox.base_url,
                                 headers={"Authorization": "Bearer sk_test_e2e"}) as http:
        for amount in ("1000", None):  # refunded at the provider, in two parts
            data = {"payment_intent": intent, **({"amount": amount} if amount else {})}
            assert (await http.post("/v1/refunds", data=data)).status_code == 200
    held = await sandbox_get(sandbox, "/_sandbox/events")
    assert [e["type"] for e in held] == [
        "payment_intent.amount_capturable_updated", "payment_intent.succeeded",
        "charge.refunded", "charge.refunded"]

    async with httpx.AsyncClient(base_url=sandbox.base_url) as http:
        flushed = await http.post("/_sandbox/webhooks/flush", json={"order": "reverse"})
    assert flushed.json() == {"queued": 4}
    await eventually(lambda: sandbox_get(sandbox, "/_sandbox/stats"),
                     lambda s: s.get("webhooks_sent", 0) == 8)
    # Every event processed once by the consumer, whatever it arrived after.
    await eventually(lambda: database.scalar(
        "SELECT count(*) FROM inbox WHERE consumer = 'payment-events'"), lambda n: n == 4)
    assert await database.scalar("SELECT count(*) FROM webhook_receipts") == 4
    row = await payment_row(database, order["id"])
    provider_view = await sandbox_get(sandbox, f"/_sandbox/payments/{intent}")
    assert provider_view["charge"]["amount_refunded"] == provider_view["amount_received"]
    assert row["status"] == "refunded"
    assert str(row["amount_refunded"]) == str(row["amount_captured"])
