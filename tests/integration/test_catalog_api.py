"""PATCH /v1/products/{id} through the ASGI app: validation, roles, If-Match, Idempotency-Key,
and the product.updated.v1 event written in the same transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from instock.app import create_app
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from instock.platform.bus.schemas import validate
from instock.platform.errors import PROBLEM_JSON
from tests.support import make_settings

PRODUCT = {"id": "hoodie", "title": "Drop hoodie", "brand": "North", "category": "tops",
           "tags": ["drop"], "attributes": {"fabric": "fleece"}, "price": "89.90",
           "variants": [{"sku": "hoodie-m"}, {"sku": "hoodie-kit",
                                               "components": [{"sku": "hoodie-m",
                                                               "quantity": 2}]}]}


class Api:
    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client

    def auth(self, role: Role, **headers: str) -> dict[str, str]:
        token = self.app.state.tokens.mint(role, f"{role.value}-1")
        return {"Authorization": f"Bearer {token}", **headers}

    async def patch(self, body: Any, role: Role = Role.MERCHANDISER,
                    product_id: str = "hoodie", **headers: str) -> httpx.Response:
        return await self.client.patch(f"/v1/products/{product_id}", json=body,
                                       headers=self.auth(role, **headers))

    async def events(self, event_type: str) -> list[dict[str, Any]]:
        async with self.app.state.catalog.db.read() as conn:
            rows = await conn.execute(sa.select(outbox.c.envelope).where(
                outbox.c.type == event_type).order_by(outbox.c.created_at))
            return [row.envelope for row in rows]


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    # No lifespan: no relay or consumers run, so the outbox keeps what the requests wrote.
    app = create_app(make_settings(database_url, tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        api = Api(app, client)
        created = await client.post("/v1/products", json=PRODUCT,
                                    headers=api.auth(Role.MERCHANDISER))
        assert created.status_code == 201, created.text
        assert created.headers["etag"] == '"1"' and created.json()["version"] == 1
        yield api
    await app.state.catalog.db.dispose()


def assert_problem(response: httpx.Response, status: int, slug: str,
                   field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    doc = response.json()
    assert doc["type"].endswith("/" + slug)
    if field is not None:
        assert [e["field"] for e in doc["errors"]] == [field], doc


async def test_patch_changes_product_fields_and_announces_the_new_state(api: Api) -> None:
    response = await api.patch({"title": " Heavy hoodie ", "price": "95.5",
                                "attributes": {"fabric": "loopback"}},
                               **{"X-Correlation-ID": "corr-42"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["title"], body["price"], body["attributes"], body["version"]) == (
        "Heavy hoodie", "95.5", {"fabric": "loopback"}, 2)
    assert (body["brand"], body["tags"]) == ("North", ["drop"])  # left out: kept
    assert [v["sku"] for v in body["variants"]] == ["hoodie-m", "hoodie-kit"]
    assert response.headers["etag"] == '"2"'
    fetched = await api.client.get("/v1/products/hoodie", headers=api.auth(Role.CUSTOMER))
    assert fetched.json() == body and fetched.headers["etag"] == '"2"'
    [event] = await api.events("product.updated.v1")
    validate(event)
    assert (event["subject"], event["sequence"]) == ("hoodie", 2)
    assert event["data"] == {
        "id": "hoodie", "version": 2, "title": "Heavy hoodie", "brand": "North",
        "category": "tops", "tags": ["drop"], "attributes": {"fabric": "loopback"},
        "price": "95.5", "currency": "EUR", "replenishable": False,
        "skus": ["hoodie-m", "hoodie-kit"], "changed": ["attributes", "price", "title"],
        "variants": [{"sku": "hoodie-m", "attributes": {}, "bundle": False},
                     {"sku": "hoodie-kit", "attributes": {}, "bundle": True}]}


async def test_if_match_makes_it_a_compare_and_swap(api: Api) -> None:
    stale = await api.patch({"title": "A"}, **{"If-Match": '"7"'})
    assert_problem(stale, 412, "precondition-failed")
    garbage = await api.patch({"title": "A"}, **{"If-Match": "yesterday"})
    assert_problem(garbage, 412, "precondition-failed")
    fresh = await api.patch({"title": "A"}, **{"If-Match": '"1"'})
    assert fresh.status_code == 200 and fresh.json()["version"] == 2
    again = await api.patch({"title": "B"}, **{"If-Match": '"1"'})
    assert_problem(again, 412, "precondition-failed")
    assert len(await api.events("product.updated.v1")) == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"price": "-1"}, "price"),
    ({"price": "1.23456"}, "price"),
    ({"currency": "euro"}, "currency"),
    ({"title": ""}, "title"),
    ({"title": None}, "title"),
    ({"tags": ["x"] * 51}, "tags"),
    ({"variants": [{"sku": "other"}]}, "variants"),
    ({"id": "renamed"}, "id"),
    ({}, "body"),
])
async def test_bad_input_is_a_422_naming_the_field_and_changes_nothing(
        api: Api, body: dict[str, Any], field: str) -> None:
    assert_problem(await api.patch(body), 422, "validation-error", field)
    product = (await api.client.get("/v1/products/hoodie",
                                    headers=api.auth(Role.MERCHANDISER))).json()
    assert (product["version"], product["title"]) == (1, "Drop hoodie")
    assert await api.events("product.updated.v1") == []


async def test_only_merchandisers_and_admins_may_patch(api: Api) -> None:
    for role in (Role.CUSTOMER, Role.INVENTORY, Role.SUPPORT):
        assert_problem(await api.patch({"title": "x"}, role), 403, "forbidden")
    unauthenticated = await api.client.patch("/v1/products/hoodie", json={"title": "x"})
    assert unauthenticated.status_code == 401
    admin = await api.patch({"title": "By admin"}, Role.ADMIN)
    assert admin.status_code == 200 and admin.json()["title"] == "By admin"


async def test_unknown_product_is_404(api: Api) -> None:
    assert_problem(await api.patch({"title": "x"}, product_id="nope"), 404, "not-found")


async def test_a_patch_that_changes_nothing_keeps_the_version_and_says_nothing(api: Api) -> None:
    same = await api.patch({"title": "Drop hoodie", "price": "89.9"})
    assert same.status_code == 200 and same.json()["version"] == 1
    assert await api.events("product.updated.v1") == []


async def test_idempotency_key_replays_the_first_response_and_emits_once(api: Api) -> None:
    first = await api.patch({"title": "Once"}, **{"Idempotency-Key": "patch-1"})
    replay = await api.patch({"title": "Once"}, **{"Idempotency-Key": "patch-1"})
    assert first.status_code == replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json() and replay.headers["etag"] == '"2"'
    reused = await api.patch({"title": "Twice"}, **{"Idempotency-Key": "patch-1"})
    assert_problem(reused, 422, "idempotency-key-reused")
    assert len(await api.events("product.updated.v1")) == 1
