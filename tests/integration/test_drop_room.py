"""The waiting room, live (issue 24, parts 2 and 5): a ticket holder's SSE stream over real HTTP
(the app under uvicorn in this process) shows its place moving up and then its admission; a
sell-out reaches every open stream with the waitlist offer; a bad ticket is a problem."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from instock.app import create_app
from instock.bench.local import free_port
from instock.drops.model import TicketClaims
from instock.drops.service import DropsService
from instock.platform.auth import Role
from tests.integration.test_drops import PROOF_BITS, auth, refused, schedule, stocked, ticket
from tests.support import make_settings

READ_TIMEOUT = 30.0  # a stream that says nothing this long has failed (not a timing claim)


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a port of its own (SSE needs a real connection), and a client of it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     timeout=READ_TIMEOUT) as client:
            yield client
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def room(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[FastAPI,
                                                                        httpx.AsyncClient]]:
    # Every tick told: the test watches each move (the default spreads them a few s apart).
    app = create_app(make_settings(database_url, tmp_path, drop_proof_bits=PROOF_BITS,
                                   drop_room_tick_seconds=0.05, drop_room_push_seconds=0))
    async with served(app) as client:
        yield app, client


class Stream:
    """One ticket's `standing` events, read as they come."""

    def __init__(self, client: httpx.AsyncClient, path: str) -> None:
        self.client, self.path = client, path
        self.seen: list[dict[str, Any]] = []
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None

    async def __aenter__(self) -> Stream:
        request = self.client.build_request("GET", self.path)
        self._response = await self.client.send(request, stream=True)
        assert self._response.status_code == 200, await self._response.aread()
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._lines = self._response.aiter_lines()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._response is not None
        await self._response.aclose()

    async def next(self) -> dict[str, Any]:
        assert self._lines is not None
        event = None
        async with asyncio.timeout(READ_TIMEOUT):
            async for line in self._lines:
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event == "standing":
                    body: dict[str, Any] = json.loads(line.partition(":")[2])
                    self.seen.append(body)
                    return body
        raise AssertionError(f"the stream ended; it said {self.seen}")

    async def until(self, done: Any) -> dict[str, Any]:
        while not done(body := await self.next()):
            pass
        return body


async def test_a_watcher_sees_its_place_move_up_and_then_its_admission(
        room: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = room
    http = (app, client)
    await stocked(http, "live", {"live-1": 50})
    starts = datetime.now(UTC) + timedelta(seconds=1)
    drop = await schedule(http, skus=["live-1"], starts_at=starts, mode="queue",
                          admit_per_second=4)
    tickets = {c: await ticket(http, drop["id"], c) for c in ("c1", "c2", "c3", "c4", "c5")}
    # Positions before the start are provisional: read them once everyone has arrived.
    places = {c: (await client.get(f"/v1/drops/{drop['id']}/tickets/{t['ticket']}",
                                   headers=auth(app, Role.CUSTOMER, c))).json()["position"]
              for c, t in tickets.items()}
    last = max(places, key=lambda c: places[c])
    async with Stream(client, f"/v1/drops/{drop['id']}/tickets/"
                              f"{tickets[last]['ticket']}/events") as stream:
        first = await stream.next()
        assert first["admitted"] is False and first["position"] >= 1, first
        assert first["waitlist"] is None and "pass" not in first
        admitted = await stream.until(lambda s: s["admitted"])
    assert admitted == {"position": 0, "admitted": True, "sold_out": False,
                        "wait_seconds": 0.0, "held_for_review": False, "waitlist": None}
    waiting = [s["position"] for s in stream.seen if not s["admitted"]]
    assert waiting[0] <= 5 and len(set(waiting)) >= 2, stream.seen  # it moved up
    assert waiting == sorted(waiting, reverse=True), stream.seen  # and only up
    assert all(s["wait_seconds"] > 0 for s in stream.seen if not s["admitted"]), stream.seen
    # The pass is the authenticated GET's to give.
    standing = await client.get(f"/v1/drops/{drop['id']}/tickets/{tickets[last]['ticket']}",
                                headers=auth(app, Role.CUSTOMER, last))
    assert standing.json()["admitted"] is True and standing.json()["pass"]
    metrics = (await client.get("/metrics")).text
    for name in ("instock_drop_room_tickets", "instock_drop_room_queue_length",
                 "instock_drop_room_admitted", "instock_drop_room_admit_rate",
                 "instock_drop_room_wait_seconds_count", "instock_drop_room_watchers"):
        assert name in metrics, name
    assert f'instock_drop_room_tickets{{drop="{drop["id"]}"}} 5.0' in metrics


async def test_a_sell_out_reaches_every_open_stream_with_the_waitlist_offer(
        room: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = room
    http = (app, client)
    await stocked(http, "gone", {"gone-1": 2, "gone-2": 1})
    drop = await schedule(http, skus=["gone-1", "gone-2"], starts_at=datetime.now(UTC),
                          mode="queue", admit_per_second=0.001)  # none admitted for 17 min
    shoppers = ("w1", "w2", "w3")
    tickets = {c: await ticket(http, drop["id"], c) for c in shoppers}
    streams = [Stream(client, f"/v1/drops/{drop['id']}/tickets/{tickets[c]['ticket']}/events")
               for c in shoppers]
    for stream in streams:
        await stream.__aenter__()
    try:
        for stream in streams:
            assert (await stream.next())["sold_out"] is False
        admin = auth(app, Role.ADMIN)
        for sku, units in (("gone-1", 2), ("gone-2", 1)):
            damaged = await client.post("/v1/inventory/adjustments", headers=admin, json={
                "sku": sku, "location": "wh", "kind": "damage", "quantity": units,
                "reason": "the drop's stock is gone"})
            assert damaged.status_code == 200, damaged.text
        told = [await stream.until(lambda s: s["sold_out"]) for stream in streams]
    finally:
        for stream in streams:
            await stream.__aexit__()
    offer = {"href": "/v1/waitlist", "method": "POST", "skus": ["gone-1", "gone-2"]}
    assert [(s["admitted"], s["waitlist"]) for s in told] == [(False, offer)] * 3, told
    # The offer is one the waitlist takes.
    joined = await client.post(offer["href"], json={"sku": offer["skus"][0]},
                               headers=auth(app, Role.CUSTOMER, "w1"))
    assert joined.status_code == 201, joined.text


async def test_a_forged_or_expired_ticket_gets_no_stream(
        room: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = room
    http = (app, client)
    await stocked(http, "bad", {"bad-1": 1})
    drop = await schedule(http, skus=["bad-1"], starts_at=datetime.now(UTC), mode="queue",
                          admit_per_second=1)
    mine = await ticket(http, drop["id"], "c1")
    drops: DropsService = app.state.drops
    long_ago = datetime.now(UTC) - timedelta(days=3)
    claims = drops.tokens.read_ticket(mine["ticket"])
    expired = drops.tokens.ticket(TicketClaims(claims.drop_id, claims.customer_id,
                                               claims.ticket_id), long_ago)
    for token, reason in ((mine["ticket"] + "x", "not a genuine ticket"),
                          ("garbage", "not a genuine ticket"),
                          (expired, "the ticket has expired")):
        problem = refused(await client.get(f"/v1/drops/{drop['id']}/tickets/{token}/events"),
                          422, "drop-ticket-invalid", "ticket")
        assert problem["errors"][0]["reason"] == reason, problem
    # A genuine ticket of one drop says nothing about another.
    await stocked(http, "bad2", {"bad2-1": 1})
    other = await schedule(http, skus=["bad2-1"], starts_at=datetime.now(UTC), mode="queue",
                           admit_per_second=1)
    refused(await client.get(f"/v1/drops/{other['id']}/tickets/{mine['ticket']}/events"), 422,
            "drop-ticket-invalid", "ticket")
