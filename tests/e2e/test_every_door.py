"""Every door checked (issue 20): every operation of the OpenAPI document the server serves,
called as anonymous, as each role, and as a customer acting on another customer's resource,
against the declared table (`instock/access.py`). Any answer the table does not allow fails the
test, and so does a route without an entry (or an entry without a route).

"Let in" means the answer is neither 401 nor 403 (with made-up ids and an empty body, most
doors then answer 404 or 422: what matters is that auth let the request reach the handler). A
customer is let in on its own resources; on another customer's it must get a 403 or a 404 and
change nothing. Server-Sent Events are read up to their status line only.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets

from instock.access import GRAPHQL, OWN, REST, WEBSOCKET, Door
from instock.app import graphql_schema
from instock.drops.bots import solve
from instock.platform.auth import Role
from tests.e2e.harness import (
    Database,
    ServerFactory,
    bearer,
    client,
    create_location,
    create_product,
    receive,
)
from tests.e2e.sandboxes import payments_and_api
from tests.graphql_doors import OWN_CUSTOMER, classify, operation, operations
from tests.support import BROWSER_HEADERS, backends, make_settings, migrated_database

# Who may pass a door is the access table's and the auth code's, not the database's.
pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

A, B = OWN_CUSTOMER, "door-cust-b"  # the customer asking, and the one it must not reach
IDENTITIES: list[Role | None] = [None, *Role]


@pytest.fixture(params=backends()[-1:])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """One backend (PostgreSQL when there is one): who may pass a door does not depend on it."""
    with migrated_database(request.param, tmp_path) as url:
        yield Database(request.param, url, tmp_path)


def as_(role: Role | None) -> dict[str, str]:
    if role is None:
        return {}
    return bearer(role, A if role is Role.CUSTOMER else None)


async def call(http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str],
               params: dict[str, str] | None = None, body: Any = None) -> int:
    """The status of one request; a stream is closed as soon as its status is known."""
    if path.startswith("/v1/stream/"):
        async with http.stream(method, path, params=params, headers=headers) as answer:
            return answer.status_code
    if path == "/v1/oauth/token":
        answer = await http.request(method, path, data=body or {}, headers=headers)
    elif method in ("POST", "PUT", "PATCH"):
        answer = await http.request(method, path, params=params, headers=headers,
                                    json=body if body is not None else {})
    else:
        answer = await http.request(method, path, params=params, headers=headers)
    return answer.status_code


def made_up(path: str) -> str:
    """The path with its parameters filled: the asking customer's id, else an id of nothing."""
    return re.sub(r"\{[^}]+\}", "nope", path.replace("{customer_id}", A))


def required_query(operation: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: (A if p["name"] == "customer_id" else "x")
            for p in operation.get("parameters", [])
            if p["in"] == "query" and p.get("required")}


@pytest.fixture
async def served(servers: ServerFactory) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A server (with a payment provider, so B can have an order) and B's resources."""
    _, server = await payments_and_api(servers, lambda url: {"INSTOCK_PAYMENTS_URL": url})
    async with client(server.base_url, Role.ADMIN) as admin:
        await create_product(admin, "door", ["door-1", "door-2"])
        await create_location(admin, "wh-door")
        await receive(admin, "door-1", "wh-door", 20)
        await receive(admin, "door-2", "wh-door", 20)
        await create_product(admin, "door-drop", ["door-d1"])
        drop = (await admin.post("/v1/drops", json={
            "skus": ["door-d1"], "starts_at": "2026-01-01T00:00:00Z", "mode": "queue",
            "admit_per_second": 1})).json()
        await create_product(admin, "door-draw", ["door-e1"])
        now = datetime.now(UTC)
        draw = (await admin.post("/v1/drops", json={
            "skus": ["door-e1"], "mode": "draw", "starts_at": (now + timedelta(days=1)).isoformat(),
            "entries_close_at": (now + timedelta(hours=1)).isoformat()})).json()
    async with client(server.base_url, Role.CUSTOMER, B) as b:
        line = {"sku": "door-1", "quantity": 1}
        reservation = (await b.post("/v1/reservations", json={"lines": [line]})).json()
        cart = (await b.post("/v1/carts", json={})).json()
        assert (await b.post(f"/v1/carts/{cart['id']}/items", json=line)).status_code == 200
        order = (await b.post("/v1/checkout", json={"lines": [line]})).json()
        assert order["status"] in ("paid", "fulfilment_requested", "pending_fulfilment"), order
        assert (await b.post("/v1/waitlist", json={"sku": "door-2"})).status_code == 201
        assert (await b.put(f"/v1/customers/{B}", json={"name": "Bee"})).status_code == 200
        # A place taken as a person's browser takes it: the proof of work solved.
        issued = (await b.get(f"/v1/drops/{drop['id']}/challenge")).json()
        proof = {"challenge": issued["challenge"],
                 "solution": solve(issued["challenge"], issued["difficulty"])}
        ticket = (await b.post(f"/v1/drops/{drop['id']}/tickets", json=proof,
                               headers=BROWSER_HEADERS)).json()
        issued = (await b.get(f"/v1/drops/{draw['id']}/challenge")).json()
        proof = {"challenge": issued["challenge"],
                 "solution": solve(issued["challenge"], issued["difficulty"])}
        entry = (await b.post(f"/v1/drops/{draw['id']}/entries", json=proof,
                              headers=BROWSER_HEADERS)).json()
    yield server.base_url, {"reservation": reservation["id"], "cart": cart["id"],
                            "order": order["id"], "order_status": order["status"],
                            "drop": drop["id"], "ticket": ticket["ticket"],
                            "draw": draw["id"], "entry": entry["entry"]}


async def test_every_rest_door_lets_in_whom_the_table_says(
        served: tuple[str, dict[str, Any]]) -> None:
    base, _ = served
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        document = (await http.get("/openapi.json")).json()
        operations = {f"{method.upper()} {path}": op
                      for path, item in document["paths"].items()
                      for method, op in item.items()}
        assert sorted(set(operations) - set(REST)) == [], "routes without an entry in access.py"
        assert sorted(set(REST) - set(operations)) == [], "entries in access.py without a route"
        wrong: list[str] = []
        for name, operation in operations.items():
            method, path = name.split(" ", 1)
            door: Door = REST[name]
            for role in IDENTITIES:
                status = await call(http, method, made_up(path), as_(role),
                                    required_query(operation))
                assert status < 500, (name, role, status)
                let_in = status not in (401, 403)
                if let_in != door.lets_in(role):
                    wrong.append(f"{name} as {role.value if role else 'anonymous'}: {status}")
                elif not let_in:  # refused the right way: no token 401, a token 403
                    assert status == (401 if role is None else 403), (name, role, status)
        assert wrong == [], "answers the table does not allow:\n" + "\n".join(wrong)


def on_b(resources: dict[str, Any]) -> dict[str, tuple[str, dict[str, str] | None, Any]]:
    """Customer A acting on B's resources, through every door customers may use on their own:
    (path, query, body). Bodies are valid, so only the ownership check can stop them."""
    reservation, cart, order = resources["reservation"], resources["cart"], resources["order"]
    line = {"sku": "door-1", "quantity": 1}
    return {
        "POST /v1/reservations": ("/v1/reservations", None,
                                  {"lines": [line], "customer_id": B}),
        "GET /v1/reservations/{reservation_id}": (f"/v1/reservations/{reservation}", None,
                                                  None),
        "POST /v1/reservations/{reservation_id}/commit": (
            f"/v1/reservations/{reservation}/commit", None, {}),
        "POST /v1/reservations/{reservation_id}/release": (
            f"/v1/reservations/{reservation}/release", None, {}),
        "POST /v1/reservations/{reservation_id}/extend": (
            f"/v1/reservations/{reservation}/extend", None, {"ttl_seconds": 600}),
        "POST /v1/carts": ("/v1/carts", None, {"customer_id": B}),
        "GET /v1/carts/{cart_id}": (f"/v1/carts/{cart}", None, None),
        "POST /v1/carts/{cart_id}/items": (f"/v1/carts/{cart}/items", None, line),
        "DELETE /v1/carts/{cart_id}/items/{sku}": (f"/v1/carts/{cart}/items/door-1", None,
                                                   None),
        "POST /v1/carts/{cart_id}/touch": (f"/v1/carts/{cart}/touch", None, {}),
        "POST /v1/checkout": ("/v1/checkout", None, {"cart_id": cart}),
        "GET /v1/orders/{order_id}": (f"/v1/orders/{order}", None, None),
        "GET /v1/orders": ("/v1/orders", {"customer_id": B}, None),
        "POST /v1/orders/{order_id}/cancel": (f"/v1/orders/{order}/cancel", None, {}),
        "PUT /v1/customers/{customer_id}": (f"/v1/customers/{B}", None, {"name": "Mallory"}),
        "GET /v1/customers/{customer_id}": (f"/v1/customers/{B}", None, None),
        "GET /v1/customers/{customer_id}/export": (f"/v1/customers/{B}/export", None, None),
        "POST /v1/customers/{customer_id}/erase": (f"/v1/customers/{B}/erase", None, {}),
        "POST /v1/waitlist": ("/v1/waitlist", None, {"sku": "door-1", "customer_id": B}),
        "GET /v1/waitlist": ("/v1/waitlist", {"customer_id": B}, None),
        "DELETE /v1/waitlist/{sku}": ("/v1/waitlist/door-2", {"customer_id": B}, None),
        "GET /v1/drops/{drop_id}/challenge": (f"/v1/drops/{resources['drop']}/challenge",
                                              {"customer_id": B}, None),
        "POST /v1/drops/{drop_id}/tickets": (f"/v1/drops/{resources['drop']}/tickets", None,
                                             {"customer_id": B}),
        "GET /v1/drops/{drop_id}/tickets/{ticket}": (
            f"/v1/drops/{resources['drop']}/tickets/{resources['ticket']}", None, None),
        "POST /v1/drops/{drop_id}/entries": (f"/v1/drops/{resources['draw']}/entries", None,
                                             {"customer_id": B}),
        "GET /v1/drops/{drop_id}/entries/{entry_id}": (
            f"/v1/drops/{resources['draw']}/entries/{resources['entry']}", None, None),
        "GET /v1/polls/next": ("/v1/polls/next", {"session_id": "s-1", "context": "product_page",
                                                  "customer_id": B}, None),
        "POST /v1/polls/{poll_id}/answers": ("/v1/polls/nope/answers", None, {
            "customer_id": B, "answers": [{"question_id": "q", "option_id": "o"}]}),
        "POST /v1/events": ("/v1/events", None, {"events": [
            {"type": "view", "customer_id": B, "product_id": "door"}]}),
        "GET /v1/recommendations": ("/v1/recommendations", {"customer_id": B}, None),
    }


async def test_a_customer_cannot_reach_another_customers_resources(
        served: tuple[str, dict[str, Any]]) -> None:
    base, resources = served
    calls = on_b(resources)
    own_doors = {name for name, door in REST.items() if door.customers is OWN}
    assert sorted(own_doors - set(calls)) == [], "customer-owned doors without a check here"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        reached = []
        for name, (path, params, body) in calls.items():
            method = name.split(" ", 1)[0]
            status = await call(http, method, path, as_(Role.CUSTOMER), params, body)
            if status not in (403, 404):
                reached.append(f"{name}: {status}")
        assert reached == [], "a customer reached another's resources:\n" + "\n".join(reached)
        # And nothing of B's changed.
        staff = bearer(Role.SUPPORT)
        held = (await http.get(f"/v1/reservations/{resources['reservation']}",
                               headers=staff)).json()
        assert held["status"] == "active", held
        order = (await http.get(f"/v1/orders/{resources['order']}", headers=staff)).json()
        assert order["status"] == resources["order_status"], order
        cart = (await http.get(f"/v1/carts/{resources['cart']}", headers=staff)).json()
        assert [item["sku"] for item in cart["items"]] == ["door-1"], cart
        profile = (await http.get(f"/v1/customers/{B}", headers=staff)).json()
        assert profile["name"] == "Bee", profile
        waiting = (await http.get("/v1/waitlist", params={"customer_id": B},
                                  headers=staff)).json()
        assert [entry["sku"] for entry in waiting] == ["door-2"], waiting


def schema_fields(tmp_path: Any) -> Any:
    return graphql_schema(make_settings("sqlite+aiosqlite://", tmp_path))._schema


# Fields of types that check roles themselves, and a query that reaches each one.
TYPE_FIELDS = {
    "Stock.lots": '{ product(id: "door") { variants { stock { lots { code } } } } }',
    "Stock.detail": '{ product(id: "door") { variants { stock { detail { sku } } } } }',
}


async def test_every_graphql_field_lets_in_whom_the_table_says(
        served: tuple[str, dict[str, Any]], tmp_path: Any) -> None:
    base, _ = served
    schema = schema_fields(tmp_path)
    made = operations(schema)
    subscriptions = [f"Subscription.{name}" for name in schema.subscription_type.fields]
    declared = {name for name, _, _ in made} | set(TYPE_FIELDS) | set(subscriptions)
    assert sorted(declared - set(GRAPHQL)) == [], "GraphQL fields without an entry"
    assert sorted(set(GRAPHQL) - declared) == [], "entries without a GraphQL field"
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for name, query, variables in made + [(n, q, {}) for n, q in TYPE_FIELDS.items()]:
            for role in IDENTITIES:
                answer = await http.post("/graphql", headers=as_(role),
                                         json={"query": query, "variables": variables})
                assert answer.status_code < 500, (name, role, answer.text)
                seen = classify(answer)
                expected = GRAPHQL[name].lets_in(role)
                if (seen == "Y") != expected or (seen == "-") != (
                        not expected and role is None):
                    wrong.append(f"{name} as {role.value if role else 'anonymous'}: {seen} "
                                 f"{answer.text[:160]}")
    ws = base.replace("http://", "ws://") + "/graphql"
    for name in subscriptions:
        field = schema.subscription_type.fields[name.split(".")[1]]
        query, variables = operation("subscription", name.split(".")[1], field)
        if name == "Subscription.stockChanged":
            variables["skus"] = ["door-1"]
        for role in IDENTITIES:
            seen = await subscribe(ws, as_(role), query, variables)
            if (seen == "Y") != GRAPHQL[name].lets_in(role):
                wrong.append(f"{name} as {role.value if role else 'anonymous'}: {seen}")
    assert wrong == [], "answers the table does not allow:\n" + "\n".join(wrong)


async def subscribe(url: str, headers: dict[str, str], query: str,
                    variables: dict[str, Any]) -> str:
    """One subscription over graphql-transport-ws, the token in connection_init: '-' or 'x'
    when it is refused for want of a token or for its role, 'Y' otherwise (its first event,
    another error, or nothing for a second: it is listening)."""
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": headers}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": query, "variables": variables}}))
        try:
            message = json.loads(await asyncio.wait_for(socket.recv(), 1.0))
        except TimeoutError:
            return "Y"
        errors = (message.get("payload") if message["type"] == "error" else
                  (message.get("payload") or {}).get("errors")) or []
        codes = {e.get("extensions", {}).get("code") for e in errors}
        return "-" if "UNAUTHORIZED" in codes else "x" if "FORBIDDEN" in codes else "Y"


async def test_the_rest_websocket_streams_let_in_whom_the_table_says(
        served: tuple[str, dict[str, Any]]) -> None:
    base, _ = served
    url = base.replace("http://", "ws://") + "/v1/ws"
    commands = {"WS /v1/ws stock": {"op": "subscribe", "skus": ["door-1"]},
                "WS /v1/ws stream:reservations": {"op": "subscribe", "stream": "reservations"},
                "WS /v1/ws stream:ledger": {"op": "subscribe", "stream": "ledger"}}
    assert set(commands) == set(WEBSOCKET)
    wrong = []
    for name, command in commands.items():
        for role in IDENTITIES:
            token = as_(role).get("Authorization", "").removeprefix("Bearer ")
            async with websockets.connect(url + (f"?token={token}" if token else "")) as socket:
                await socket.send(json.dumps(command))
                try:  # a refusal comes at once; a stream that let us in may stay quiet
                    first = json.loads(await asyncio.wait_for(socket.recv(), 1.0))
                except TimeoutError:
                    first = {"listening": True}
            refused = first.get("error") == "forbidden"
            if refused == WEBSOCKET[name].lets_in(role):
                wrong.append(f"{name} as {role.value if role else 'anonymous'}: {first}")
    assert wrong == [], "answers the table does not allow:\n" + "\n".join(wrong)
