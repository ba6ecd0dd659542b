"""Customers' behaviour summary (issue 19, item 1): views recorded through `POST /v1/events`,
products through the catalogue and a paid order, each reaching the summary through the real
consumer from the event the outbox holds; shown in `GET /v1/customers/{id}`; exported and
erased."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from instock.app import Container, create_app
from instock.customers.store import PERSONAL_TABLES, customer_behaviour
from instock.orders.events import OrderLineData, OrderPaid
from instock.platform.auth import Role
from instock.platform.bus.envelope import envelope
from instock.platform.bus.outbox import outbox
from tests.support import make_settings


def auth(app: FastAPI, role: Role, subject: str = "someone") -> dict[str, str]:
    return {"Authorization": "Bearer " + app.state.tokens.mint(role, subject)}


@pytest.fixture
async def http(database_url: str,
               tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_settings(database_url, tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield app, client


async def product(app: FastAPI, client: httpx.AsyncClient, product_id: str, brand: str,
                  category: str) -> None:
    response = await client.post("/v1/products", headers=auth(app, Role.ADMIN), json={
        "id": product_id, "title": product_id, "brand": brand, "category": category,
        "price": "20", "variants": [{"sku": f"{product_id}-M", "attributes": {"size": "M"}}]})
    assert response.status_code == 201, response.text


async def consume_outbox(container: Container) -> None:
    """Hand every event the outbox holds to the customers' behaviour consumer, in order."""
    async with container.db.read() as conn:
        envelopes = list((await conn.execute(sa.select(outbox.c.envelope).order_by(
            outbox.c.created_at, outbox.c.id))).scalars())
    consumer = container.consumer("customers-behaviour")
    for event in envelopes:
        await consumer.handle(event)


def paid(customer_id: str, order_id: str, *skus: str) -> dict[str, Any]:
    return envelope(OrderPaid(
        order_id=order_id, version=3, channel="web", customer_id=customer_id, external_id=None,
        status="paid", currency="EUR", total=Decimal("40"), reason="",
        lines=[OrderLineData(sku=s, quantity=1, unit_price=Decimal("20")) for s in skus]),
        None, time=datetime(2026, 12, 5, 12, tzinfo=UTC).isoformat())


async def test_views_and_a_purchase_show_up_in_the_profile(
        http: tuple[FastAPI, httpx.AsyncClient], container: Container) -> None:
    app, client = http
    await product(app, client, "hood", "Acme", "hoodies")
    await product(app, client, "kick", "Nova", "sneakers")
    await product(app, client, "cap", "Nova", "caps")
    ann = auth(app, Role.CUSTOMER, "cus-b")
    assert (await client.put("/v1/customers/cus-b", headers=ann,
                             json={"sizes": {"tops": "M"}})).status_code == 200
    assert (await client.get("/v1/customers/cus-b", headers=ann)).json()["behaviour"] is None
    views = [{"type": "view", "customer_id": "cus-b", "product_id": p}
             for p in ("hood", "kick", "hood", "cap")]
    views.append({"type": "view", "session_id": "anonymous", "product_id": "kick"})
    recorded = await client.post("/v1/events", json={"events": views},
                                 headers=auth(app, Role.SERVICE))
    assert recorded.status_code == 202, recorded.text
    await consume_outbox(container)
    consumer = container.consumer("customers-behaviour")
    assert await consumer.handle(paid("cus-b", "ord-1", "kick-M")) == "applied"
    profile = (await client.get("/v1/customers/cus-b", headers=ann)).json()
    assert profile["sizes"] == {"tops": "M"} and profile["version"] == 1  # as it was
    summary = profile["behaviour"]
    assert [v["product_id"] for v in summary["recent_views"]] == ["cap", "hood", "kick"]
    assert [(p["order_id"], p["sku"], p["product_id"], p["quantity"])
            for p in summary["recent_purchases"]] == [("ord-1", "kick-M", "kick", 1)]
    assert summary["brands"] == {"Acme": 2, "Nova": 5}  # a view 1, a bought line 3
    assert summary["favourite_brands"] == ["Nova", "Acme"]
    assert summary["favourite_categories"] == ["sneakers", "hoodies", "caps"]
    other = auth(app, Role.CUSTOMER, "cus-other")
    assert (await client.get("/v1/customers/cus-b", headers=other)).status_code == 403

    exported = await container.customers.export_behaviour("cus-b")
    assert exported["purchases"][0]["order_id"] == "ord-1" and len(exported["views"]) == 3
    assert "customer_behaviour" in PERSONAL_TABLES
    await container.customers.erase_behaviour("cus-b")
    await container.customers.erase_behaviour("cus-b")  # idempotent
    assert await container.customers.export_behaviour("cus-b") == {}
    async with container.db.read() as conn:
        assert list(await conn.execute(sa.select(customer_behaviour))) == []


async def test_a_batch_of_events_folds_as_one_by_one_in_a_few_statements(
        http: tuple[FastAPI, httpx.AsyncClient], container: Container) -> None:
    """The consumer takes events in batches: views, products and purchases of two customers
    arriving together give each the summary one by one gives, read and written once."""
    from tests.integration.helpers import counting

    app, client = http
    await product(app, client, "hood", "Acme", "hoodies")
    await product(app, client, "kick", "Nova", "sneakers")
    await product(app, client, "cap", "Nova", "caps")
    views = [{"type": "view", "customer_id": c, "product_id": p}
             for c, p in (("cus-b", "hood"), ("cus-c", "cap"), ("cus-b", "kick"),
                          ("cus-b", "hood"), ("cus-b", "cap"))]
    recorded = await client.post("/v1/events", json={"events": views},
                                 headers=auth(app, Role.SERVICE))
    assert recorded.status_code == 202, recorded.text
    async with container.db.read() as conn:
        envelopes = list((await conn.execute(sa.select(outbox.c.envelope).order_by(
            outbox.c.created_at, outbox.c.id))).scalars())
    envelopes += [paid("cus-b", "ord-1", "kick-M"), paid("cus-c", "ord-2", "hood-M")]
    consumer = container.consumer("customers-behaviour")
    with counting(container.db) as statements:
        assert "dead" not in await consumer.handle_batch(envelopes)
    behaviour_statements = [s for s in statements if "customer_behaviour" in s]
    assert len(behaviour_statements) == 2  # one read, one write, for both customers
    ann = (await container.customers.behaviour_of("cus-b"))
    assert ann is not None and ann.brands == {"Acme": 2, "Nova": 5}
    assert sorted(v["product_id"] for v in ann.views) == ["cap", "hood", "kick"]
    cid = await container.customers.behaviour_of("cus-c")
    assert cid is not None and cid.brands == {"Nova": 1, "Acme": 3}
    assert [p["order_id"] for p in cid.purchases] == ["ord-2"]
