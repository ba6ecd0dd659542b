"""Services that run apart, from one code base: an inventory process (serving gRPC) and an
orders process that calls it over gRPC, as real processes; and Recommend over gRPC.

- each serves only its own routes (`/openapi.json` says so);
- a checkout on the orders process reserves and commits stock in the inventory process, pays
  through the sandbox, and the stock is right;
- inventory killed mid-way: the orders process answers 503 (no stock held hostage), and once
  inventory is back the next checkout goes through;
- a storefront backend gets the same recommendations over gRPC as over REST.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from instock.bench.local import free_port
from instock.platform.auth import Role
from instock.rpc import recommendations_pb2 as recs_pb
from instock.rpc import recommendations_pb2_grpc as recs_grpc
from tests.e2e.harness import (
    Server,
    ServerFactory,
    bearer,
    client,
    create_location,
    create_product,
    eventually,
    receive,
    stock,
)
from tests.e2e.sandboxes import payments_and_api, payments_env

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]
SKU = "HOOD-M"



async def paths(server: Server) -> list[str]:
    async with client(server.base_url, Role.ADMIN) as admin:
        return list((await admin.get("/openapi.json")).json()["paths"])


async def checkout(orders: Server, quantity: int = 1) -> tuple[int, dict[str, object]]:
    async with client(orders.base_url, Role.CUSTOMER, "ann") as buyer:
        response = await buyer.post("/v1/checkout", json={
            "lines": [{"sku": SKU, "quantity": quantity}]})
        return response.status_code, response.json()


async def test_serve_services_mounts_only_those(servers: ServerFactory) -> None:
    inventory = await servers.start("--services", "inventory")
    served = await paths(inventory)
    assert served and all(p.startswith(("/v1/inventory", "/v1/reservations", "/v1/locations",
                                        "/v1/channels", "/v1/ledger", "/v1/skus"))
                          or "inventory" in p for p in served), served
    assert not any(p.startswith(("/v1/orders", "/v1/recommendations")) for p in served)
    async with client(inventory.base_url, Role.ADMIN) as admin:
        assert (await admin.get("/v1/orders")).status_code == 404
        assert (await admin.get("/")).status_code == 404  # no pages: `web` is not served
        assert (await admin.get("/readyz")).status_code == 200


async def test_orders_call_inventory_in_another_process(servers: ServerFactory) -> None:
    grpc_port = free_port()
    inventory_env = {"INSTOCK_SERVICES": "inventory,catalog,live",
                     "INSTOCK_GRPC_PORT": str(grpc_port)}
    inventory = await servers.start(**inventory_env)
    _, orders = await payments_and_api(servers, lambda url: payments_env(
        url, INSTOCK_SERVICES="orders,payments",
        INSTOCK_INVENTORY_URL=f"grpc://127.0.0.1:{grpc_port}",
        INSTOCK_GRPC_DEADLINE_SECONDS="1", INSTOCK_GRPC_ATTEMPTS="2"))

    served = await paths(inventory)
    assert any(p.startswith("/v1/inventory") for p in served)
    assert not any(p.startswith(("/v1/orders", "/v1/checkout", "/v1/recommendations"))
                   for p in served)
    served = await paths(orders)
    assert "/v1/checkout" in served and not any(p.startswith("/v1/inventory") for p in served)

    async with client(inventory.base_url, Role.ADMIN) as admin:
        await create_product(admin, "hoodie", [SKU])
        await create_location(admin, "wh-1")
        await receive(admin, SKU, "wh-1", 5)
    status, order = await checkout(orders, 2)
    assert status == 201, order
    assert order["status"] == "paid"
    async with client(inventory.base_url, Role.ADMIN) as admin:
        level = await stock(admin, SKU)
    assert (level["available"], level["committed"], level["reserved"]) == (3, 2, 0)

    # Inventory down: the orders process cannot reserve; it says so, and holds nothing.
    inventory.process.kill()  # SIGKILL: no goodbye to its callers
    inventory.process.wait(timeout=15)
    status, problem = await checkout(orders)
    assert status == 503, problem
    assert str(problem["type"]).endswith("/dependency-unavailable"), problem
    inventory = await servers.restart(inventory, **inventory_env)

    async def paid() -> dict[str, object] | None:  # the client reconnects within seconds
        status, order = await checkout(orders)
        assert status in (201, 503), order
        if status == 503:
            await asyncio.sleep(0.5)
        return order if status == 201 else None

    order = await eventually(paid, "a checkout once inventory is back", timeout=20)
    assert order["status"] == "paid", order
    async with client(inventory.base_url, Role.ADMIN) as admin:
        level = await stock(admin, SKU)
    assert (level["available"], level["committed"], level["reserved"]) == (2, 3, 0)


async def test_recommend_over_grpc_is_the_rest_answer(servers: ServerFactory) -> None:
    grpc_port = free_port()
    recs = await servers.start(INSTOCK_SERVICES="recommendations,experiments,catalog,inventory",
                               INSTOCK_GRPC_PORT=str(grpc_port))
    async with client(recs.base_url, Role.ADMIN) as admin:
        for product in ("tee", "cap", "bag"):
            await create_product(admin, product, [f"{product}-1"])
        await create_location(admin, "wh-1")
        for product in ("tee", "cap", "bag"):
            await receive(admin, f"{product}-1", "wh-1", 3)
        rest = (await admin.get("/v1/recommendations", params={
            "session_id": "s-1", "context": "home", "limit": 5})).json()
    metadata = (("authorization", bearer(Role.SERVICE, "storefront")["Authorization"]),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = recs_grpc.RecommendationsStub(channel)
        answer = await stub.Recommend(recs_pb.RecommendRequest(
            session_id="s-1", context="home", limit=5), metadata=metadata, timeout=10)
        assert [(i.product_id, i.sku) for i in answer.items] == [
            (i["product_id"], i["sku"]) for i in rest["items"]]
        assert answer.context == "home" and answer.items, answer
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.Recommend(recs_pb.RecommendRequest(session_id="s-1", limit=500),
                                 metadata=metadata, timeout=10)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "limit" in (bad.value.details() or "")
