"""Live push over real HTTP: SSE (resumable, heartbeats), staff streams, WebSocket, waitlist."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from instock.platform.auth import Role
from tests.e2e.harness import (
    Database,
    ServerFactory,
    SseEvent,
    assert_problem,
    client,
    create_location,
    create_product,
    receive,
    sse_events,
    stock,
    token,
)

FAST = {"INSTOCK_LIVE_HEARTBEAT_SECONDS": "0.3", "INSTOCK_SWEEPER_INTERVAL_SECONDS": "0.2"}


async def setup(base_url: str, skus: list[str], units: int) -> None:
    async with client(base_url, Role.ADMIN) as admin:
        await create_product(admin, "live", skus)
        await create_location(admin, "wh-1")
        for sku in skus:
            if units:
                await receive(admin, sku, "wh-1", units)


async def adjust(api: httpx.AsyncClient, sku: str, kind: str, quantity: int) -> httpx.Response:
    return await api.post("/v1/inventory/adjustments", json={
        "sku": sku, "location": "wh-1", "kind": kind, "quantity": quantity})


async def read_until(events: Any, done: Any, timeout: float = 15.0) -> list[SseEvent]:
    seen: list[SseEvent] = []

    async def loop() -> None:
        async for event in events:
            seen.append(event)
            if done(seen):
                return

    await asyncio.wait_for(loop(), timeout)
    return seen


def latest(seen: list[SseEvent]) -> dict[str, dict[str, Any]]:
    return {e.data["sku"]: e.data for e in seen if e.event == "stock"}


async def test_sse_pushes_every_change_resumes_and_beats(servers: ServerFactory) -> None:
    server = await servers.start(**FAST)
    await setup(server.base_url, ["L-A", "L-B"], 5)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anon, \
            client(server.base_url, Role.INVENTORY) as inv:
        stream = sse_events(anon, "/v1/stream/inventory?skus=L-A,L-B", )
        first = await read_until(stream, lambda s: len(latest(s)) == 2)
        assert {k: v["available"] for k, v in latest(first).items()} == {"L-A": 5, "L-B": 5}
        assert (await adjust(inv, "L-A", "damage", 5)).status_code == 200
        seen = await read_until(stream, lambda s: latest(s).get("L-A", {}).get("available") == 0)
        update = latest(seen)["L-A"]
        assert update["sold_out"] is True
        assert update["version"] == (await stock(inv, "L-A"))["version"]
        cursor = seen[-1].id
        beat = await read_until(stream, lambda s: s[-1].event == ":", timeout=5)
        await stream.aclose()
        assert beat[-1].data.startswith(": ping")

        # Away for a while: only L-B changes. Resuming sends L-B alone, at its newest state.
        assert (await adjust(inv, "L-B", "receive", 3)).status_code == 200
        resumed = sse_events(anon, "/v1/stream/inventory?skus=L-A,L-B",
                             headers={"Last-Event-ID": cursor or ""})
        back = await read_until(resumed, lambda s: bool(latest(s)))
        await resumed.aclose()
        assert list(latest(back)) == ["L-B"] and latest(back)["L-B"]["available"] == 8


async def test_a_hot_sku_coalesces_to_its_final_state(servers: ServerFactory) -> None:
    server = await servers.start(**FAST)
    await setup(server.base_url, ["HOT-1"], 0)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anon, \
            client(server.base_url, Role.INVENTORY, connections=10) as inv:
        stream = sse_events(anon, "/v1/stream/inventory?skus=HOT-1")
        await read_until(stream, lambda s: bool(latest(s)))
        responses = await asyncio.gather(*(adjust(inv, "HOT-1", "receive", 1) for _ in range(60)))
        assert all(r.status_code == 200 for r in responses)
        truth = await stock(inv, "HOT-1")
        seen = await read_until(
            stream, lambda s: latest(s).get("HOT-1", {}).get("version") == truth["version"])
        await stream.aclose()
    versions = [e.data["version"] for e in seen if e.event == "stock"]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert latest(seen)["HOT-1"]["available"] == truth["available"] == 60


async def test_bad_stream_requests_get_problems(servers: ServerFactory) -> None:
    server = await servers.start()
    await setup(server.base_url, ["L-C"], 1)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as anon:
        assert_problem(await anon.get("/v1/stream/inventory?skus=NOPE"), 404, "not-found")
        assert_problem(await anon.get("/v1/stream/inventory?skus=bad%20sku"), 422,
                       "validation-error")
        assert_problem(await anon.get("/v1/stream/reservations"), 401, "unauthorized")
    async with client(server.base_url, Role.CUSTOMER, "c1") as customer:
        assert_problem(await customer.get("/v1/stream/ledger"), 403, "forbidden")


async def test_staff_stream_shows_reservations(servers: ServerFactory) -> None:
    server = await servers.start(**FAST)
    await setup(server.base_url, ["L-D"], 3)
    async with client(server.base_url, Role.SUPPORT) as staff, \
            client(server.base_url, Role.CUSTOMER, "cara") as cara:
        stream = sse_events(staff, "/v1/stream/reservations")
        reader = asyncio.create_task(read_until(
            stream, lambda s: any(e.event == "reservations"
                                  and e.data["type"] == "reservation.created.v1" for e in s)))
        await asyncio.sleep(0.5)
        made = await cara.post("/v1/reservations", json={
            "customer_id": "cara", "lines": [{"sku": "L-D", "quantity": 1}]})
        assert made.status_code == 201, made.text
        seen = await reader
        await stream.aclose()
    assert seen[-1].data["subject"] == made.json()["id"]


async def test_websocket_subscribe_unsubscribe_and_staff_streams(servers: ServerFactory) -> None:
    server = await servers.start(**FAST)
    await setup(server.base_url, ["W-A", "W-B"], 2)
    url = f"ws://127.0.0.1:{server.port}/v1/ws"

    async def next_topic(ws: Any, topic: str) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message.get("topic") == topic or "error" in message:
                return message  # type: ignore[no-any-return]

    async with websockets.connect(url) as ws, client(server.base_url, Role.INVENTORY) as inv:
        await ws.send(json.dumps({"op": "subscribe", "skus": ["W-A", "W-B"]}))
        firsts = [await next_topic(ws, "stock"), await next_topic(ws, "stock")]
        assert {m["key"]: m["data"]["available"] for m in firsts} == {"W-A": 2, "W-B": 2}
        await ws.send(json.dumps({"op": "unsubscribe", "skus": ["W-A"]}))
        await ws.send(json.dumps({"op": "subscribe", "skus": ["NOPE"]}))
        assert (await next_topic(ws, "stock"))["error"] == "not-found"
        await ws.send(json.dumps({"op": "subscribe", "stream": "ledger"}))
        assert (await next_topic(ws, "stock"))["field"] == "stream"  # anonymous: no staff stream
        await ws.send("not json")
        assert (await next_topic(ws, "stock"))["error"] == "invalid-command"
        assert (await adjust(inv, "W-A", "receive", 1)).status_code == 200
        assert (await adjust(inv, "W-B", "receive", 4)).status_code == 200
        update = await next_topic(ws, "stock")
        assert (update["key"], update["data"]["available"]) == ("W-B", 6)  # W-A is unsubscribed

    async with websockets.connect(f"{url}?token={token(Role.INVENTORY)}") as ws, \
            client(server.base_url, Role.INVENTORY) as inv:
        await ws.send(json.dumps({"op": "subscribe", "stream": "ledger"}))
        await asyncio.sleep(0.3)
        assert (await adjust(inv, "W-A", "damage", 1)).status_code == 200
        movement = await next_topic(ws, "ledger")
        assert movement["data"]["data"]["reason"] == "damage"


async def test_waitlist_notifies_each_subscriber_once(servers: ServerFactory,
                                                      database: Database) -> None:
    server = await servers.start(**FAST)
    await setup(server.base_url, ["WL-1"], 0)
    async with client(server.base_url, Role.INVENTORY) as inv:
        for customer in ("ann", "bob"):
            async with client(server.base_url, Role.CUSTOMER, customer) as shopper:
                joined = await shopper.post("/v1/waitlist", json={"sku": "WL-1"})
                assert joined.status_code == 201, joined.text
        async with client(server.base_url, Role.CUSTOMER, "ann") as ann:
            assert_problem(await ann.post("/v1/waitlist", json={"sku": "WL-1",
                                                                "customer_id": "bob"}),
                           403, "forbidden")
        for _ in range(2):  # back in stock, sold out, back again: still one notice each
            assert (await adjust(inv, "WL-1", "receive", 2)).status_code == 200
            assert (await adjust(inv, "WL-1", "damage", 2)).status_code == 200
        query = ("SELECT count(*) FROM outbox WHERE type = 'waitlist.notified.v1'")
        for _ in range(100):
            if await database.scalar(query) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # time for a wrong second round to show up
        subjects = await database.column(
            "SELECT subject FROM outbox WHERE type = 'waitlist.notified.v1' ORDER BY subject")
        assert subjects == ["ann", "bob"]
        async with client(server.base_url, Role.CUSTOMER, "bob") as bob:
            entries = (await bob.get("/v1/waitlist")).json()
        assert entries[0]["sku"] == "WL-1" and entries[0]["notified_at"] is not None


async def test_sse_subscriber_of_a_kit_sees_its_components_move_it(
        servers: ServerFactory) -> None:
    """A kit has no stock of its own: a reservation of one of its components moves it, and
    its subscriber sees that at once, in version order, ending on the kit's true state."""
    server = await servers.start(**FAST)
    async with client(server.base_url, Role.ADMIN) as admin:
        await create_product(admin, "kit-live", ["K-C", "K-D"], bundles={"K-KIT": {
            "K-C": 1, "K-D": 2}})
        await create_location(admin, "wh-1")
        await receive(admin, "K-C", "wh-1", 5)
        await receive(admin, "K-D", "wh-1", 6)  # 3 kits
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anon, \
            client(server.base_url, Role.SERVICE) as svc, \
            client(server.base_url, Role.INVENTORY) as inv:
        stream = sse_events(anon, "/v1/stream/inventory?skus=K-KIT")
        first = await read_until(stream, lambda s: bool(latest(s)))
        assert latest(first)["K-KIT"]["available"] == 3
        held = await svc.post("/v1/reservations", json={"lines": [{"sku": "K-D", "quantity": 5}]})
        assert held.status_code == 201, held.text
        seen = await read_until(stream, lambda s: latest(s)["K-KIT"]["available"] == 0)
        assert latest(seen)["K-KIT"]["sold_out"] is True
        truth = await stock(inv, "K-KIT")
        assert (truth["available"], latest(seen)["K-KIT"]["version"]) == (0, truth["version"])
        await stream.aclose()
    versions = [e.data["version"] for e in first + seen if e.event == "stock"]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
