"""GraphQL against a running server, through an outside client (`gql`): queries and mutations
over HTTP, subscriptions over WebSockets in both subprotocols, the token in `connection_init`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from instock.platform.auth import Role
from tests.e2e.harness import (
    ServerFactory,
    bearer,
    client,
    create_location,
    create_product,
    receive,
    token,
)

SKUS = ["GQ-S", "GQ-M"]
STOCK_CHANGED = """subscription($skus: [String!]!) {
    stockChanged(skus: $skus, channel: "web") { sku version available soldOut } }"""
TRANSPORT_WS, LEGACY_WS = "graphql-transport-ws", "graphql-ws"


async def prepared(servers: ServerFactory) -> str:
    server = await servers.start(INSTOCK_LIVE_HEARTBEAT_SECONDS="1")
    async with client(server.base_url) as admin:
        await create_product(admin, "gq", SKUS)
        await create_location(admin, "wh")
        for sku in SKUS:
            await receive(admin, sku, "wh", 3)
    return server.base_url


def http_client(base_url: str, role: Role | None = None, subject: str | None = None) -> Client:
    headers = bearer(role, subject) if role else {}
    return Client(transport=HTTPXAsyncTransport(url=f"{base_url}/graphql", headers=headers),
                  fetch_schema_from_transport=False)


def ws_client(base_url: str, protocol: str = TRANSPORT_WS, role: Role | None = None,
              subject: str | None = None) -> Client:
    url = base_url.replace("http://", "ws://") + "/graphql"
    payload = {"Authorization": f"Bearer {token(role, subject)}"} if role else {}
    return Client(transport=WebsocketsTransport(url=url, subprotocols=[protocol],
                                                init_payload=payload))


async def collect(session: Any, document: str, variables: dict[str, Any],
                  into: list[dict[str, Any]]) -> None:
    async for message in session.subscribe(GraphQLRequest(document, variable_values=variables)):
        into.append(message)


async def until(check: Any, what: str, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)
    assert check(), what


async def test_queries_and_mutations_through_an_outside_client(servers: ServerFactory) -> None:
    base_url = await prepared(servers)
    async with http_client(base_url) as anonymous:
        page = await anonymous.execute(GraphQLRequest("""query($id: ID!) { product(id: $id) {
            id title variants { sku size stock(channel: "web") { available soldOut version } }
            } }""", variable_values={"id": "gq"}))
    assert [(v["sku"], v["stock"]["available"]) for v in page["product"]["variants"]] == [
        ("GQ-S", 3), ("GQ-M", 3)]
    async with http_client(base_url, Role.CUSTOMER, "carol") as carol:
        held = await carol.execute(gql("""mutation { reserve(lines: [{sku: "GQ-S", quantity: 2}])
            { id status customerId } }"""))
        assert held["reserve"]["status"] == "ACTIVE" and held["reserve"]["customerId"] == "carol"
        with pytest.raises(TransportQueryError) as refused:
            await carol.execute(gql("""mutation { reserve(lines: [{sku: "GQ-S", quantity: 2}])
                { id } }"""))
        assert refused.value.errors[0]["extensions"]["status"] == 409
        again = await carol.execute(GraphQLRequest(
            "query($id: ID!) { reservation(id: $id) { status } }",
            variable_values={"id": held["reserve"]["id"]}))
        assert again["reservation"]["status"] == "ACTIVE"


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_stock_changed_sends_the_state_then_every_change(servers: ServerFactory,
                                                               protocol: str) -> None:
    base_url = await prepared(servers)
    seen: list[dict[str, Any]] = []
    async with ws_client(base_url, protocol) as session:
        task = asyncio.create_task(collect(session, STOCK_CHANGED, {"skus": SKUS}, seen))
        try:
            await until(lambda: len(seen) >= 2, "the current state of both SKUs")
            assert {m["stockChanged"]["sku"]: m["stockChanged"]["available"] for m in seen} == {
                "GQ-S": 3, "GQ-M": 3}
            async with client(base_url) as admin:
                await receive(admin, "GQ-M", "wh", 4)
            await until(lambda: seen[-1]["stockChanged"] == {
                "sku": "GQ-M", "version": 2, "available": 7, "soldOut": False}, "the change")
        finally:
            task.cancel()


async def test_staff_subscriptions_need_a_staff_token_in_connection_init(
        servers: ServerFactory) -> None:
    base_url = await prepared(servers)
    ledger = 'subscription { ledger(skus: ["GQ-S"]) { key type envelope } }'
    async with ws_client(base_url, role=Role.CUSTOMER) as customer:
        with pytest.raises(TransportQueryError) as refused:
            async for _ in customer.subscribe(gql(ledger)):
                break
        assert refused.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    seen: list[dict[str, Any]] = []
    async with ws_client(base_url, role=Role.INVENTORY) as staff:
        task = asyncio.create_task(collect(staff, ledger, {}, seen))
        try:
            await asyncio.sleep(0.5)  # subscribed before the change
            async with client(base_url) as admin:
                await receive(admin, "GQ-S", "wh", 1)
            await until(lambda: bool(seen), "a ledger entry")
            event = seen[0]["ledger"]
            assert event["type"] == "inventory.stock_changed.v1" and event["key"] == "GQ-S@wh"
        finally:
            task.cancel()


async def test_a_shopper_follows_its_own_reservation(servers: ServerFactory) -> None:
    base_url = await prepared(servers)
    async with http_client(base_url, Role.CUSTOMER, "frank") as frank:
        held = (await frank.execute(gql("""mutation { reserve(lines: [{sku: "GQ-M",
            quantity: 1}]) { id } }""")))["reserve"]["id"]
    follow = "subscription($id: ID!) { reservationChanged(id: $id) { key type } }"
    async with ws_client(base_url, role=Role.CUSTOMER, subject="grace") as grace:
        with pytest.raises(TransportQueryError) as refused:
            async for _ in grace.subscribe(GraphQLRequest(follow, variable_values={"id": held})):
                break
        assert refused.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    seen: list[dict[str, Any]] = []
    async with ws_client(base_url, role=Role.CUSTOMER, subject="frank") as session:
        task = asyncio.create_task(collect(session, follow, {"id": held}, seen))
        try:
            await asyncio.sleep(0.5)
            async with client(base_url, Role.CUSTOMER, "frank") as rest:
                released = await rest.post(f"/v1/reservations/{held}/release")
                assert released.status_code == 200, released.text
            await until(lambda: bool(seen), "the release")
            assert seen[-1]["reservationChanged"] == {
                "key": held, "type": "reservation.released.v1"}
        finally:
            task.cancel()


async def test_queries_over_one_websocket_see_each_change(servers: ServerFactory) -> None:
    """A WebSocket keeps one context while it stays open: its loaders must not remember."""
    base_url = await prepared(servers)
    page = GraphQLRequest('query { product(id: "gq") { variants { sku stock { available } } } }')

    def available(result: dict[str, Any]) -> dict[str, int]:
        return {v["sku"]: v["stock"]["available"] for v in result["product"]["variants"]}

    async with ws_client(base_url) as session:
        assert available(await session.execute(page)) == {"GQ-S": 3, "GQ-M": 3}
        async with client(base_url) as admin:
            await receive(admin, "GQ-S", "wh", 2)
        assert available(await session.execute(page)) == {"GQ-S": 5, "GQ-M": 3}
