"""Read copies for the pages shoppers look at: this process's commits age them at once, other
processes' through the events they publish; GraphQL reuses a completed product answer while
it was made of the very same copies; shoppers we know nothing of share one list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from instock.app import Container, build, create_app
from instock.catalog.model import ProductPatch
from instock.platform.auth import Role
from instock.platform.db import Database, after_commit
from instock.platform.graphql import Results
from tests.integration.helpers import counting, receive, stocked
from tests.support import make_settings


async def test_listeners_hear_what_a_transaction_committed_and_never_a_rollback(
        database_url: str) -> None:
    db = Database(database_url)
    heard: list[list[Any]] = []
    db.on_commit(heard.append)
    try:
        async with db.write() as conn:
            after_commit(conn, ["first"])
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                after_commit(conn, ["rolled back"])
                raise RuntimeError("refused")
        async with db.write() as conn:
            await conn.execute(sa.text("SELECT 1"))  # the same pooled connection, nothing added
        async with db.write() as conn:
            after_commit(conn, ["second", "third"])
    finally:
        await db.dispose()
    assert heard == [["first"], ["second", "third"]]


async def test_a_copy_is_served_until_a_commit_here_or_an_event_from_elsewhere_ages_it(
        container: Container, database_url: str, tmp_path: Path) -> None:
    await stocked(container, "RC-1", 5)
    inventory = container.inventory
    first = (await inventory.stocks(["RC-1"], "web", cached=True))["RC-1"]
    product = (await container.catalog.get_products(["p-RC-1"], cached=True))["p-RC-1"]
    with counting(container.db) as statements:
        again = (await inventory.stocks(["RC-1"], "web", cached=True))["RC-1"]
        assert (await container.catalog.get_products(["p-RC-1"], cached=True))[
            "p-RC-1"] is product
    assert again is first and statements == []  # copies, no read
    await receive(container, "RC-1", "wh", 2)  # committed here: heard at commit
    mine = (await inventory.stocks(["RC-1"], "web", cached=True))["RC-1"]
    assert (mine.available, mine.version) == (7, first.version + 1)

    # Another process on the same database: its commits reach us only as events (the bus).
    other = build(make_settings(database_url, tmp_path / "other"))
    published: list[list[Any]] = []
    other.db.on_commit(published.append)
    try:
        await receive(other, "RC-1", "wh", 3)
        await other.catalog.update_product("p-RC-1", ProductPatch(title="Renamed"))
    finally:
        await other.close()
    stale = (await inventory.stocks(["RC-1"], "web", cached=True))["RC-1"]
    assert stale is mine  # not heard yet: the copy stands (for at most its ttl)
    assert (await container.catalog.get_products(["p-RC-1"], cached=True))[
        "p-RC-1"] is product
    for envelopes in published:  # what the bus delivers to this process's hub
        container.inventory.heard(envelopes)
        container.catalog.heard(envelopes)
    fresh = (await inventory.stocks(["RC-1"], "web", cached=True))["RC-1"]
    assert (fresh.available, fresh.version) == (10, mine.version + 1)
    assert (await container.catalog.get_products(["p-RC-1"], cached=True))[
        "p-RC-1"].title == "Renamed"
    uncached = (await inventory.stocks(["RC-1"], "web"))["RC-1"]
    assert uncached is not fresh and uncached.version == fresh.version


PRODUCT = """query($id: ID!) { product(id: $id) { id title variants {
    sku size stock(channel: "web") { available soldOut version } } } }"""
LOTS = """query($id: ID!) { product(id: $id) { variants { sku stock(channel: "web") {
    available lots { code } } } } }"""


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(make_settings(database_url, tmp_path))
    admin = app.state.tokens.mint(Role.ADMIN, "admin-1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"Authorization": f"Bearer {admin}"}) as http:
        for path, body in [
                ("/v1/locations", {"id": "wh", "name": "W", "kind": "warehouse"}),
                ("/v1/products", {"id": "tee", "title": "Tee", "brand": "B", "category": "c",
                                  "price": "10", "variants": [
                                      {"sku": f"tee-{i}", "attributes": {"size": str(i)}}
                                      for i in range(3)]})]:
            assert (await http.post(path, json=body)).status_code == 201
        for i in range(3):
            assert (await http.post("/v1/inventory/adjustments", json={
                "sku": f"tee-{i}", "location": "wh", "kind": "receive",
                "quantity": 4})).status_code == 200
        yield app, http
    await app.state.catalog.db.dispose()


async def ask(http: httpx.AsyncClient, query: str, token: str | None = "admin",
              **variables: Any) -> dict[str, Any]:
    headers = {} if token == "admin" else {"Authorization": ""} if token is None else {
        "Authorization": f"Bearer {token}"}
    answer = await http.post("/graphql", json={"query": query, "variables": variables},
                             headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_product_answer_is_reused_until_its_stock_moves(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    app, http = api
    results: Results = app.state.graphql_results
    first = await ask(http, PRODUCT, id="tee")
    second = await ask(http, PRODUCT, id="tee")  # the copies it was made of are kept now
    hits = results.hits
    third = await ask(http, PRODUCT, id="tee")
    assert results.hits == hits + 1 and third == second == first
    assert first["data"]["product"]["variants"][0]["stock"]["available"] == 4

    assert (await http.post("/v1/inventory/adjustments", json={
        "sku": "tee-0", "location": "wh", "kind": "receive", "quantity": 1})).status_code == 200
    moved = await ask(http, PRODUCT, id="tee")
    assert results.hits == hits + 1  # not reused: one of its copies changed
    variant = moved["data"]["product"]["variants"][0]
    assert variant["stock"]["available"] == 5
    assert variant["stock"]["version"] == first["data"]["product"]["variants"][0]["stock"][
        "version"] + 1
    assert moved["data"]["product"]["variants"][1:] == first["data"]["product"]["variants"][1:]


async def test_an_answer_is_reused_only_for_the_same_selection_role_and_variables(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    app, http = api
    results: Results = app.state.graphql_results
    for _ in range(2):
        staff = await ask(http, LOTS, id="tee")
        anonymous = await ask(http, LOTS, token=None, id="tee")
    assert "errors" not in staff and staff["data"]["product"]["variants"][0]["stock"][
        "lots"] == []
    # A shopper may not see lots: that error is their answer, kept for no one.
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHORIZED"
    hits = results.hits
    assert "errors" in await ask(http, LOTS, token=None, id="tee")
    assert results.hits == hits
    missing = await ask(http, PRODUCT, id="nope")
    assert missing["errors"][0]["extensions"]["status"] == 404
