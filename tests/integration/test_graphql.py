"""GraphQL through the ASGI app: the same services and rules as REST, errors that carry REST's
problem document, a statement count that does not grow with the page, per-field roles, and the
limits (depth, aliases through fragments, cost, persisted-only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from instock.app import create_app
from instock.platform.auth import Role
from instock.platform.graphql.persisted import operations
from instock.web import OPERATIONS
from tests.integration.helpers import counting
from tests.support import make_settings

PRODUCT_PAGE = next(op for op in operations(OPERATIONS.read_text())
                    if op.startswith("query ProductPage"))


class Graph:
    def __init__(self, app: Any, http: httpx.AsyncClient) -> None:
        self.app, self.http = app, http

    def token(self, role: Role, subject: str | None = None) -> str:
        return str(self.app.state.tokens.mint(role, subject or f"{role.value}-1"))

    async def post(self, query: str, role: Role | None = None, subject: str | None = None,
                   **variables: Any) -> dict[str, Any]:
        headers = {} if role is None else {"Authorization": f"Bearer {self.token(role, subject)}"}
        response = await self.http.post("/graphql", json={"query": query, "variables": variables},
                                        headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def rest(self, method: str, path: str, role: Role = Role.ADMIN,
                   **kwargs: Any) -> httpx.Response:
        return await self.http.request(method, path, headers={
            "Authorization": f"Bearer {self.token(role)}"}, **kwargs)

    async def product(self, product_id: str, variants: int) -> None:
        skus = [f"{product_id}-{i}" for i in range(variants)]
        made = await self.rest("POST", "/v1/products", json={
            "id": product_id, "title": product_id, "brand": "B", "category": "c",
            "price": "10", "variants": [{"sku": s, "attributes": {"size": str(i)}}
                                        for i, s in enumerate(skus)]})
        assert made.status_code == 201, made.text
        for sku in skus:
            got = await self.rest("POST", "/v1/inventory/adjustments", json={
                "sku": sku, "location": "wh", "kind": "receive", "quantity": 5})
            assert got.status_code == 200, got.text

    def counting(self) -> AbstractContextManager[list[str]]:
        """The SQL statements run inside the block."""
        return counting(self.app.state.catalog.db)


@pytest.fixture
async def graph(database_url: str, tmp_path: Path) -> AsyncIterator[Graph]:
    # Every answer read from the database: what a query costs in statements is what these tests
    # count (read copies and reused answers have tests of their own: test_read_copies.py).
    app = create_app(make_settings(database_url, tmp_path, read_cache_seconds=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        g = Graph(app, http)
        made = await g.rest("POST", "/v1/locations", json={"id": "wh", "name": "W",
                                                           "kind": "warehouse"})
        assert made.status_code == 201, made.text
        yield g
    await app.state.catalog.db.dispose()


def error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("errors"), body
    first: dict[str, Any] = body["errors"][0]["extensions"]
    return first


async def test_the_product_page_in_one_query_matches_rest(graph: Graph) -> None:
    await graph.product("tee", 3)
    body = await graph.post(PRODUCT_PAGE, id="tee", channel="web")
    product = body["data"]["product"]
    assert [v["size"] for v in product["variants"]] == ["0", "1", "2"]
    for variant in product["variants"]:
        rest = (await graph.rest("GET", f"/v1/inventory/{variant['sku']}?channel=web")).json()
        assert variant["stock"] == {"available": rest["available"], "soldOut": False,
                                    "low": False, "version": rest["version"]}
    assert body["extensions"]["cost"]["requested"] > 0


async def test_a_page_costs_the_same_statements_however_many_products_and_variants(
        graph: Graph) -> None:
    query = """query($n: Int!) { products(first: $n) { edges { node { id variants {
        sku stock(channel: "web") { available version } } } } } }"""

    async def statements(n: int) -> int:
        await graph.post(query, n=n)  # first: warms the per-process caches (channels, SKUs)
        counts = []
        # The least of three: a count can also hold the refresh of a per-process copy that
        # expired since the warm-up (the channel's lasts CHANNEL_CACHE_SECONDS, 1 s, which a
        # loaded machine can pass between two requests; this app runs no relay or consumers).
        # The page's own statements are in every count.
        for _ in range(3):
            with graph.counting() as seen:
                body = await graph.post(query, n=n)
            assert len(body["data"]["products"]["edges"]) == n, body
            counts.append(len(seen))
        return min(counts)

    await graph.product("p0", 2)
    small = await statements(1)
    for i in range(1, 6):
        await graph.product(f"p{i}", 6)
    assert await statements(6) == small


async def test_errors_carry_the_problem_document_and_a_refusal_changes_nothing(
        graph: Graph) -> None:
    await graph.product("tee", 1)
    missing = error(await graph.post('{ product(id: "nope") { id } }'))
    assert (missing["code"], missing["status"]) == ("NOT_FOUND", 404)
    assert missing["type"].endswith("/not-found")

    reserve = """mutation($q: Int!) { reserve(lines: [{sku: "tee-0", quantity: $q}]) {
        id status } }"""
    invalid = error(await graph.post(reserve, Role.CUSTOMER, q=0))
    assert (invalid["code"], invalid["status"]) == ("VALIDATION_ERROR", 422)
    assert invalid["errors"] == [{"field": "lines[0].quantity",
                                  "reason": "Input should be greater than or equal to 1"}]
    short = error(await graph.post(reserve, Role.CUSTOMER, q=6))
    assert short["status"] == 409 and short["type"].endswith("/insufficient-stock"), short
    assert (await graph.rest("GET", "/v1/inventory/tee-0")).json()["reserved"] == 0

    held = await graph.post(reserve, Role.CUSTOMER, "alice", q=2)
    reservation = held["data"]["reserve"]
    assert reservation["status"] == "ACTIVE"
    rest = await graph.rest("GET", f"/v1/reservations/{reservation['id']}")
    assert rest.json()["customer_id"] == "alice"
    assert (await graph.rest("GET", "/v1/inventory/tee-0")).json()["reserved"] == 2
    other = error(await graph.post(f'mutation {{ release(id: "{reservation["id"]}") {{ id }} }}',
                                   Role.CUSTOMER, "mallory"))
    assert other["code"] == "FORBIDDEN"


async def test_adjust_stock_compares_and_swaps_on_if_match(graph: Graph) -> None:
    await graph.product("tee", 1)
    adjust = """mutation($v: Int) { adjustStock(input: {sku: "tee-0", location: "wh",
        kind: "receive", quantity: 3}, ifMatch: $v) { version available } }"""
    stale = error(await graph.post(adjust, Role.INVENTORY, v=0))
    assert (stale["code"], stale["status"]) == ("PRECONDITION_FAILED", 412)
    done = await graph.post(adjust, Role.INVENTORY, v=1)
    assert done["data"]["adjustStock"] == {"version": 2, "available": 8}
    denied = error(await graph.post(adjust, Role.CUSTOMER, v=2))
    assert denied["code"] == "FORBIDDEN"


async def test_roles_apply_per_field(graph: Graph) -> None:
    await graph.product("tee", 1)
    lots = '{ product(id: "tee") { variants { stock { available lots { code } } } } }'
    for role in (None, Role.CUSTOMER):
        body = await graph.post(lots, role)
        assert error(body)["code"] in ("UNAUTHORIZED", "FORBIDDEN")
    staff = await graph.post(lots, Role.INVENTORY)
    assert "errors" not in staff and staff["data"]["product"]["variants"][0]["stock"]["lots"] == []
    ledger = '{ ledger(sku: "tee-0") { edges { node { version kind } } } }'
    assert error(await graph.post(ledger, Role.CUSTOMER))["code"] == "FORBIDDEN"
    entries = (await graph.post(ledger, Role.SUPPORT))["data"]["ledger"]["edges"]
    assert [e["node"]["version"] for e in entries] == [1]


async def test_an_idempotency_key_replays_a_mutation(graph: Graph) -> None:
    await graph.product("tee", 1)
    token = graph.token(Role.CUSTOMER, "bob")
    body = {"query": 'mutation { reserve(lines: [{sku: "tee-0", quantity: 1}]) { id } }'}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k-1"}
    first = await graph.http.post("/graphql", json=body, headers=headers)
    again = await graph.http.post("/graphql", json=body, headers=headers)
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert (await graph.rest("GET", "/v1/inventory/tee-0")).json()["reserved"] == 1


async def test_the_limits_refuse_deep_aliased_and_costly_queries(graph: Graph) -> None:
    await graph.product("tee", 1)
    fine = await graph.post('{ product(id: "tee") { variants { product { variants { sku } } } } }')
    assert "errors" not in fine and fine["extensions"]["cost"]["requested"] > 0

    deep = '{ product(id: "tee") { ' + "variants { product { " * 5 + "id" + " } }" * 5 + " } }"
    refused = error(await graph.post(deep))
    assert (refused["code"], refused["limit"], refused["found"]) == ("DEPTH_LIMIT", 10, 12)

    # Each spread of a fragment counts its aliases again (GHSA-fr49-mhgj-crfc): 4 x 6 = 24.
    bomb = """query { product(id: "tee") { ...Many ...Many ...Many ...Many } }
        fragment Many on Product { a: id b: id c: id d: id e: id f: id }"""
    aliases = error(await graph.post(bomb))
    assert (aliases["code"], aliases["found"]) == ("ALIAS_LIMIT", 24)
    nested = """query { product(id: "tee") { ...Twice } }
        fragment Twice on Product { ...Many ...Many ...Many ...Many }
        fragment Many on Product { a: id b: id c: id d: id e: id f: id }"""
    assert error(await graph.post(nested))["code"] == "ALIAS_LIMIT"

    costly = """{ products(first: 100) { edges { node { variants { product { variants {
        stock { available } } } } } } } }"""
    cost = error(await graph.post(costly))
    assert (cost["code"], cost["found"], cost["limit"]) == ("COST_LIMIT", 44301, 25000)


async def test_persisted_only_mode_runs_only_the_pages_queries(database_url: str,
                                                              tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path, graphql_persisted_only=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        unknown = await http.post("/graphql", json={"query": '{ product(id: "x") { id } }'})
        assert unknown.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        page = await http.post("/graphql", json={"query": PRODUCT_PAGE,
                                                 "variables": {"id": "x"}})
        assert page.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"  # it ran
        schema = await http.post("/graphql", json={"query": "{ __schema { types { name } } }"})
        assert schema.json()["errors"][0]["extensions"]["code"] in (
            "PERSISTED_QUERY_NOT_FOUND", "GRAPHQL_VALIDATION_FAILED")
    await app.state.catalog.db.dispose()


def test_every_page_operation_is_valid_against_the_schema() -> None:
    """The pages' operations file is also the persisted-query allowlist: each must run."""
    from graphql import parse, validate

    from instock.app import graphql_schema
    from instock.config import Settings

    schema = graphql_schema(Settings())._schema
    found = operations(OPERATIONS.read_text())
    assert len(found) >= 10
    for operation in found:
        assert validate(schema, parse(operation)) == [], operation


async def test_carts_waitlist_and_events_through_graphql(graph: Graph) -> None:
    await graph.product("tee", 2)
    add = """mutation($cart: ID) { addToCart(sku: "tee-0", quantity: 2, cartId: $cart) {
        id customerId items { sku quantity } } }"""
    cart = (await graph.post(add, Role.CUSTOMER, "dana", cart=None))["data"]["addToCart"]
    assert cart["customerId"] == "dana" and cart["items"] == [{"sku": "tee-0", "quantity": 2}]
    assert error(await graph.post(add, Role.CUSTOMER, "eve", cart=cart["id"]))["code"] == \
        "FORBIDDEN"
    seen = await graph.post('query($id: ID!) { cart(id: $id) { items { sku } } }',
                            Role.CUSTOMER, "dana", id=cart["id"])
    assert seen["data"]["cart"]["items"] == [{"sku": "tee-0"}]
    removed = await graph.post('mutation($id: ID!) { removeFromCart(cartId: $id, sku: "tee-0") '
                               "{ items { sku } } }", Role.CUSTOMER, "dana", id=cart["id"])
    assert removed["data"]["removeFromCart"]["items"] == []
    assert (await graph.rest("GET", "/v1/inventory/tee-0")).json()["reserved"] == 0

    joined = await graph.post('mutation { joinWaitlist(sku: "tee-1") { sku customerId } }',
                              Role.CUSTOMER, "dana")
    assert joined["data"]["joinWaitlist"] == {"sku": "tee-1", "customerId": "dana"}
    staff = error(await graph.post('mutation { joinWaitlist(sku: "tee-1") { sku } }',
                                   Role.SUPPORT))
    assert staff["errors"] == [{"field": "customer_id", "reason": "staff must name the customer"}]

    record = """mutation($events: [BehaviourInput!]!) { recordEvents(events: $events) {
        accepted } }"""
    events = [{"type": "view", "sessionId": "s-9", "productId": "tee"}]
    assert error(await graph.post(record, events=events))["code"] == "UNAUTHORIZED"
    done = await graph.post(record, Role.SERVICE, events=events)
    assert done["data"]["recordEvents"]["accepted"] == 1
    bad = error(await graph.post(record, Role.SERVICE, events=[{"type": "view",
                                                                "sessionId": "s-9"}]))
    assert bad["code"] == "VALIDATION_ERROR"
    listed = await graph.post('{ recommendations(sessionId: "s-9", limit: 5) { items { sku } } }')
    assert "errors" not in listed
    private = error(await graph.post('{ recommendations(customerId: "dana") { items { sku } } }'))
    assert private["code"] == "UNAUTHORIZED"


async def test_staff_lists_need_their_roles(graph: Graph) -> None:
    experiments = "{ experiments { id name results { name exposed } } }"
    assert error(await graph.post(experiments, Role.INVENTORY))["code"] == "FORBIDDEN"
    assert (await graph.post(experiments, Role.MERCHANDISER))["data"] == {"experiments": []}
    deliveries = "{ webhookDeliveries(status: DEAD) { id status } }"
    assert error(await graph.post(deliveries, Role.MERCHANDISER))["code"] == "FORBIDDEN"
    assert (await graph.post(deliveries, Role.ADMIN))["data"] == {"webhookDeliveries": []}
    audit = await graph.post("{ audit { ok entries } }", Role.SUPPORT)
    assert audit["data"]["audit"] == {"ok": True, "entries": 0}


async def test_control_characters_are_refused_before_anything_runs(graph: Graph) -> None:
    literal = error(await graph.post('{ cart(id: "\\u0000") { id } }', Role.CUSTOMER))
    assert (literal["code"], literal["errors"]) == (
        "VALIDATION_ERROR", [{"field": "id", "reason": "control characters are not allowed"}])
    variable = error(await graph.post("query($id: ID!) { order(id: $id) { id } }",
                                      Role.CUSTOMER, id="a\x00b"))
    assert variable["errors"][0]["field"] == "id"
    nested = error(await graph.post(
        "mutation($l: [LineInput!]!) { reserve(lines: $l) { id } }", Role.CUSTOMER,
        l=[{"sku": "x\x01", "quantity": 1}]))
    assert nested["errors"][0]["field"] == "l[0].sku"


async def test_a_customer_reads_and_changes_its_own_profile_and_support_anyones(
        graph: Graph) -> None:
    update = """mutation($id: String!, $email: String) { updateCustomer(id: $id, input: {
        email: $email, name: "Ann Smith", sizes: [{category: "shoes", size: "38"}],
        consents: [{purpose: "back_in_stock_email", granted: true}]}) {
        id email name sizes { category size } consents { purpose granted source } version } }"""
    made = (await graph.post(update, Role.CUSTOMER, "cus-1", id="cus-1",
                             email="Ann@Example.com"))["data"]["updateCustomer"]
    assert made == {"id": "cus-1", "email": "ann@example.com", "name": "Ann Smith",
                    "sizes": [{"category": "shoes", "size": "38"}], "version": 1,
                    "consents": [{"purpose": "back_in_stock_email", "granted": True,
                                  "source": "customer:cus-1"}]}
    rest = (await graph.rest("GET", "/v1/customers/cus-1", Role.SUPPORT)).json()
    assert (rest["email"], rest["sizes"]) == ("ann@example.com", {"shoes": "38"})
    read = '{ customer(id: "cus-1") { email erased behaviour } }'
    assert (await graph.post(read, Role.SUPPORT))["data"]["customer"] == {
        "email": "ann@example.com", "erased": False, "behaviour": None}  # no event yet
    assert error(await graph.post(read, Role.CUSTOMER, "cus-2"))["code"] == "FORBIDDEN"
    assert error(await graph.post(read, Role.MERCHANDISER))["code"] == "FORBIDDEN"
    bad = error(await graph.post(update, Role.CUSTOMER, "cus-1", id="cus-1", email="nope"))
    assert (bad["status"], bad["errors"]) == (422, [{"field": "email",
                                                    "reason": "not a valid email address"}])
    keyed = await graph.http.post("/graphql", json={"query": read}, headers={
        "Authorization": f"Bearer {graph.token(Role.SUPPORT)}", "Idempotency-Key": "k"})
    assert error(keyed.json())["errors"][0]["field"] == "Idempotency-Key"
    assert "ann@example.com" not in keyed.text
