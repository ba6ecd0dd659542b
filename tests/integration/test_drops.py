"""Drops over HTTP on a real database (issue 24, first slice): scheduling (bad input is 422
naming the field, and stores nothing), the gate on reservations of a drop's SKUs before and
after the start, the waiting room's order and its passes, and refusals that reserve nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from instock.app import create_app
from instock.drops.bots import solve
from instock.drops.model import PassClaims
from instock.drops.service import DropsService
from instock.platform.auth import Role
from tests.support import BROWSER_HEADERS, make_settings

PROBLEMS = "https://instock.dev/problems/"
RESERVE = """mutation($pass: String) {
  reserve(lines: [{sku: "hype-1", quantity: 1}], dropPass: $pass) { id lines { sku quantity } }
}"""
Http = tuple[FastAPI, httpx.AsyncClient]
PROOF_BITS = 8  # the proof of work these tests' shoppers solve: a few hundred hashes


def auth(app: FastAPI, role: Role, subject: str = "someone") -> dict[str, str]:
    return {"Authorization": "Bearer " + app.state.tokens.mint(role, subject)}


@contextlib.asynccontextmanager
async def drops_app(database_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Http]:
    """The API in-process (proof of work at PROOF_BITS unless told), and a client of it."""
    app = create_app(make_settings(database_url, tmp_path,
                                   **{"drop_proof_bits": PROOF_BITS, **settings}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield app, client


@pytest.fixture
async def http(database_url: str, tmp_path: Path) -> AsyncIterator[Http]:
    async with drops_app(database_url, tmp_path) as http:
        yield http


@pytest.fixture
async def slow_refresh(database_url: str, tmp_path: Path) -> AsyncIterator[Http]:
    """An app whose copy of the drops' SKUs would wait a minute to look again by itself."""
    async with drops_app(database_url, tmp_path, drop_gate_refresh_seconds=60.0) as http:
        yield http


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.05)


async def stocked(http: Http, product: str, units: dict[str, int]) -> None:
    app, client = http
    admin = auth(app, Role.ADMIN)
    made = await client.post("/v1/products", headers=admin, json={
        "id": product, "title": product, "brand": "Drop", "category": "apparel",
        "price": "59.90", "variants": [{"sku": sku, "attributes": {"size": f"S{i}"}}
                                       for i, sku in enumerate(units)]})
    assert made.status_code == 201, made.text
    located = await client.post("/v1/locations", headers=admin,
                                json={"id": "wh", "name": "wh", "kind": "warehouse"})
    assert located.status_code in (201, 409), located.text
    for sku, quantity in units.items():
        received = await client.post("/v1/inventory/adjustments", headers=admin, json={
            "sku": sku, "location": "wh", "kind": "receive", "quantity": quantity,
            "reason": "drop stock"})
        assert received.status_code == 200, received.text


async def stock_of(http: Http, sku: str) -> dict[str, Any]:
    app, client = http
    got = await client.get(f"/v1/inventory/{sku}", headers=auth(app, Role.ADMIN))
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def schedule(http: Http, **body: Any) -> dict[str, Any]:
    app, client = http
    if isinstance(body.get("starts_at"), datetime):
        body["starts_at"] = body["starts_at"].isoformat()
    made = await client.post("/v1/drops", json=body, headers=auth(app, Role.MERCHANDISER))
    assert made.status_code == 201, made.text
    drop: dict[str, Any] = made.json()
    return drop


async def reserve(http: Http, customer: str, sku: str,
                  drop_pass: str | None = None) -> httpx.Response:
    app, client = http
    headers = auth(app, Role.CUSTOMER, customer)
    if drop_pass is not None:
        headers["Drop-Pass"] = drop_pass
    return await client.post("/v1/reservations", headers=headers,
                             json={"lines": [{"sku": sku, "quantity": 1}]})


async def ticket(http: Http, drop_id: str, customer: str) -> dict[str, Any]:
    """A place, taken as a person's browser does: the proof of work solved (drops/bots.py)."""
    app, client = http
    headers = auth(app, Role.CUSTOMER, customer)
    issued = await client.get(f"/v1/drops/{drop_id}/challenge", headers=headers)
    assert issued.status_code == 200, issued.text
    proof = {"challenge": issued.json()["challenge"],
             "solution": solve(issued.json()["challenge"], issued.json()["difficulty"])}
    taken = await client.post(f"/v1/drops/{drop_id}/tickets", json=proof,
                              headers={**headers, **BROWSER_HEADERS})
    assert taken.status_code == 201, taken.text
    body: dict[str, Any] = taken.json()
    return body


async def standing(http: Http, drop_id: str, token: str, customer: str) -> httpx.Response:
    app, client = http
    return await client.get(f"/v1/drops/{drop_id}/tickets/{token}",
                            headers=auth(app, Role.CUSTOMER, customer))


def refused(response: httpx.Response, status: int, slug: str, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"] == PROBLEMS + slug, problem
    assert problem["errors"][0]["field"] == field and problem["errors"][0]["reason"], problem
    return problem


async def test_a_queue_drop_gates_reservations_and_admits_through_its_room(http: Http) -> None:
    app, client = http
    await stocked(http, "hype", {"hype-1": 10, "plain-1": 5})
    starts = soon(1.5)
    drop = await schedule(http, skus=["hype-1"], starts_at=starts, mode="queue",
                          admit_per_second=1000)
    read = await client.get(f"/v1/drops/{drop['id']}", headers=auth(app, Role.CUSTOMER, "c1"))
    assert read.status_code == 200 and read.json()["skus"] == ["hype-1"]
    assert read.json()["mode"] == "queue"

    # Before the start: nobody reserves a drop SKU; other SKUs are as ever.
    early = refused(await reserve(http, "c1", "hype-1"), 409, "drop-not-started", "lines.sku")
    assert early["drop_id"] == drop["id"]
    assert (await reserve(http, "c1", "plain-1")).status_code == 201

    # Four arrive before the start (their order is shuffled at the start), two after it.
    before = {c: await ticket(http, drop["id"], c) for c in ("c1", "c2", "c3", "c4")}
    again = await ticket(http, drop["id"], "c1")  # asking again keeps the place
    assert again["position"] == (await standing(http, drop["id"], before["c1"]["ticket"],
                                                "c1")).json()["position"]
    await until(starts)
    after = {c: await ticket(http, drop["id"], c) for c in ("c5", "c6")}
    assert [after["c5"]["position"], after["c6"]["position"]] == [5, 6]
    tickets = before | after
    states = {c: (await standing(http, drop["id"], t["ticket"], c)).json()
              for c, t in tickets.items()}
    assert sorted(s["position"] for s in states.values()) == [1, 2, 3, 4, 5, 6]
    assert {states[c]["position"] for c in before} == {1, 2, 3, 4}
    assert all(s["admitted"] and s["pass"] for s in states.values()), states

    # Without a pass, refused; with one's own pass, reserved.
    refused(await reserve(http, "c1", "hype-1"), 403, "drop-pass-required", "Drop-Pass")
    assert (await reserve(http, "c1", "hype-1", states["c1"]["pass"])).status_code == 201

    # Another's pass, a forged one, an expired one: refused, and nothing more is reserved.
    other = refused(await reserve(http, "c3", "hype-1", states["c2"]["pass"]), 403,
                    "drop-pass-invalid", "Drop-Pass")
    assert "another customer" in other["errors"][0]["reason"]
    head, body, signature = states["c3"]["pass"].split(".")
    forged = f"{head}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    refused(await reserve(http, "c3", "hype-1", forged), 403, "drop-pass-invalid", "Drop-Pass")
    refused(await reserve(http, "c3", "hype-1", "not-a-pass"), 403, "drop-pass-invalid",
            "Drop-Pass")
    drops: DropsService = app.state.drops
    then = datetime.now(UTC) - timedelta(minutes=5)
    expired = drops.tokens.admission_pass(
        PassClaims(drop["id"], "c4", then + timedelta(seconds=120)), then)
    late = refused(await reserve(http, "c4", "hype-1", expired), 403, "drop-pass-invalid",
                   "Drop-Pass")
    assert "expired" in late["errors"][0]["reason"]
    stock = await stock_of(http, "hype-1")
    assert (stock["reserved"], stock["available"]) == (1, 9)
    assert (await stock_of(http, "plain-1"))["reserved"] == 1

    # GraphQL's reserve is the same door: no pass, refused; its own pass, reserved.
    async def graph(customer: str, drop_pass: str | None) -> dict[str, Any]:
        answer = await client.post("/graphql", headers=auth(app, Role.CUSTOMER, customer),
                                   json={"query": RESERVE, "variables": {"pass": drop_pass}})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    bare = await graph("c5", None)
    assert bare["errors"][0]["extensions"]["type"] == PROBLEMS + "drop-pass-required", bare
    held = await graph("c5", states["c5"]["pass"])
    assert "errors" not in held and held["data"]["reserve"]["lines"] == [
        {"sku": "hype-1", "quantity": 1}], held
    assert (await stock_of(http, "hype-1"))["reserved"] == 2


async def test_tickets_are_tamper_proof_and_a_customers_own(http: Http) -> None:
    app, client = http
    await stocked(http, "tix", {"tix-1": 3})
    drop = await schedule(http, skus=["tix-1"], starts_at=soon(0), mode="queue",
                          admit_per_second=0.001)  # the room admits no one for ~17 minutes
    mine = await ticket(http, drop["id"], "c1")
    assert mine["position"] == 1
    waiting = await standing(http, drop["id"], mine["ticket"], "c1")
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["admitted"] is False and waiting.json()["pass"] is None
    assert waiting.json()["wait_seconds"] > 900
    refused(await standing(http, drop["id"], mine["ticket"] + "x", "c1"), 422,
            "drop-ticket-invalid", "ticket")
    refused(await standing(http, drop["id"], "garbage", "c1"), 422, "drop-ticket-invalid",
            "ticket")
    # Someone else's ticket is not theirs to read; staff may read it.
    assert (await standing(http, drop["id"], mine["ticket"], "c2")).status_code == 403
    staff = await client.get(f"/v1/drops/{drop['id']}/tickets/{mine['ticket']}",
                             headers=auth(app, Role.SUPPORT))
    assert staff.status_code == 200 and staff.json()["position"] == 1
    # A ticket of one drop says nothing about another.
    await stocked(http, "tix2", {"tix2-1": 3})
    second = await schedule(http, skus=["tix2-1"], starts_at=soon(0), mode="queue",
                            admit_per_second=1)
    refused(await standing(http, second["id"], mine["ticket"], "c1"), 422,
            "drop-ticket-invalid", "ticket")
    # A customer takes a ticket for itself only; staff name the customer.
    assert (await client.post(f"/v1/drops/{drop['id']}/tickets", json={"customer_id": "c9"},
                              headers=auth(app, Role.CUSTOMER, "c1"))).status_code == 403
    for_c9 = await client.post(f"/v1/drops/{drop['id']}/tickets", json={"customer_id": "c9"},
                               headers=auth(app, Role.SERVICE))
    assert for_c9.status_code == 201 and for_c9.json()["position"] == 2


async def test_a_pass_admits_to_its_own_drop_only_and_the_room_stops_at_sold_out(
        http: Http) -> None:
    await stocked(http, "two", {"two-a": 1, "two-b": 5})
    a = await schedule(http, skus=["two-a"], starts_at=soon(0), mode="queue",
                       admit_per_second=1000)
    b = await schedule(http, skus=["two-b"], starts_at=soon(0), mode="queue",
                       admit_per_second=1000)
    await asyncio.sleep(0.05)
    first = await ticket(http, a["id"], "c1")
    second = await ticket(http, a["id"], "c2")
    pass_a = (await standing(http, a["id"], first["ticket"], "c1")).json()["pass"]
    wrong = refused(await reserve(http, "c1", "two-b", pass_a), 403, "drop-pass-invalid",
                    "Drop-Pass")
    assert "another drop" in wrong["errors"][0]["reason"] and wrong["drop_id"] == b["id"]
    assert (await reserve(http, "c1", "two-a", pass_a)).status_code == 201
    # The one unit is held: the room admits no one any more, and says so.
    after = (await standing(http, a["id"], second["ticket"], "c2")).json()
    assert after["sold_out"] is True and after["admitted"] is False and after["pass"] is None


async def test_a_first_come_drop_opens_to_anyone_at_its_start(http: Http) -> None:
    app, client = http
    await stocked(http, "fc", {"fc-1": 5})
    starts = soon(1.0)
    drop = await schedule(http, skus=["fc-1"], starts_at=starts, mode="first_come")
    refused(await reserve(http, "c1", "fc-1"), 409, "drop-not-started", "lines.sku")
    no_room = await client.post(f"/v1/drops/{drop['id']}/tickets",
                                headers=auth(app, Role.CUSTOMER, "c1"))
    assert no_room.status_code == 409, no_room.text
    await until(starts)
    assert (await reserve(http, "c1", "fc-1")).status_code == 201
    assert (await stock_of(http, "fc-1"))["reserved"] == 1


async def test_a_new_drop_gates_at_once_in_the_process_that_scheduled_it(
        slow_refresh: Http) -> None:
    http = slow_refresh
    await stocked(http, "new", {"new-1": 5, "new-2": 5})
    assert (await reserve(http, "c1", "new-1")).status_code == 201  # the gate's copy is made
    await schedule(http, skus=["new-1"], starts_at=soon(60), mode="queue", admit_per_second=5)
    # Its own drop.scheduled.v1, at commit, made the copy old: no minute-long window.
    refused(await reserve(http, "c1", "new-1"), 409, "drop-not-started", "lines.sku")
    assert (await reserve(http, "c1", "new-2")).status_code == 201


async def test_a_drops_per_customer_limit_holds_beside_the_skus_own(http: Http) -> None:
    await stocked(http, "lim", {"lim-1": 10, "lim-2": 10})
    await schedule(http, skus=["lim-1"], starts_at=soon(0), mode="first_come",
                   per_customer_limit=1)
    await asyncio.sleep(0.05)
    assert (await reserve(http, "c1", "lim-1")).status_code == 201
    second = await reserve(http, "c1", "lim-1")
    assert second.status_code == 409 and second.json()["type"].endswith(
        "customer-limit-exceeded"), second.text
    assert (await reserve(http, "c2", "lim-1")).status_code == 201
    # A SKU in no drop keeps no limit it did not have.
    assert [(await reserve(http, "c1", "lim-2")).status_code for _ in range(2)] == [201, 201]
    assert (await stock_of(http, "lim-1"))["reserved"] == 2


@pytest.mark.parametrize(("change", "field"), [
    ({"skus": []}, "skus"),
    ({"skus": ["no-such-sku"]}, "skus"),
    ({"mode": "raffle"}, "mode"),
    ({"starts_at": "next tuesday"}, "starts_at"),
    ({"starts_at": "2026-12-07T12:00:00"}, "starts_at"),  # no offset
    ({"admit_per_second": -1}, "admit_per_second"),
    ({"admit_per_second": 0}, "admit_per_second"),  # a queue that admits no one
    ({"ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),
])
async def test_bad_drops_are_422_naming_the_field_and_store_nothing(
        http: Http, change: dict[str, Any], field: str) -> None:
    app, client = http
    await stocked(http, "bad", {"bad-1": 1})
    body = {"skus": ["bad-1"], "starts_at": soon(60).isoformat(), "mode": "queue",
            "admit_per_second": 5, **change}
    answer = await client.post("/v1/drops", json=body, headers=auth(app, Role.MERCHANDISER))
    refused(answer, 422, "validation-error", field)
    # Nothing was scheduled: the SKU is as reservable as ever.
    assert (await reserve(http, "c1", "bad-1")).status_code == 201


async def test_only_merchandisers_schedule_and_a_sku_is_in_one_drop(http: Http) -> None:
    app, client = http
    await stocked(http, "own", {"own-1": 1})
    body = {"skus": ["own-1"], "starts_at": soon(60).isoformat(), "mode": "first_come"}
    assert (await client.post("/v1/drops", json=body,
                              headers=auth(app, Role.CUSTOMER, "c1"))).status_code == 403
    assert (await client.post("/v1/drops", json=body)).status_code == 401
    await schedule(http, **body)
    twice = await client.post("/v1/drops", json=body, headers=auth(app, Role.MERCHANDISER))
    assert twice.status_code == 409, twice.text
    missing = await client.get("/v1/drops/nope", headers=auth(app, Role.MERCHANDISER))
    assert missing.status_code == 404


async def test_the_pass_carries_through_a_cart_and_checkout_refuses_without_one(
        http: Http) -> None:
    app, client = http
    await stocked(http, "cart", {"cart-1": 5})
    drop = await schedule(http, skus=["cart-1"], starts_at=soon(0), mode="queue",
                          admit_per_second=1000)
    await asyncio.sleep(0.05)
    mine = await ticket(http, drop["id"], "c1")
    drop_pass = (await standing(http, drop["id"], mine["ticket"], "c1")).json()["pass"]
    headers = auth(app, Role.CUSTOMER, "c1")
    cart = (await client.post("/v1/carts", json={}, headers=headers)).json()
    add = f"/v1/carts/{cart['id']}/items"
    line = {"sku": "cart-1", "quantity": 1}
    refused(await client.post(add, json=line, headers=headers), 403, "drop-pass-required",
            "Drop-Pass")
    held = await client.post(add, json=line, headers={**headers, "Drop-Pass": drop_pass})
    assert held.status_code == 200 and [i["sku"] for i in held.json()["items"]] == ["cart-1"]
    assert (await stock_of(http, "cart-1"))["reserved"] == 1
    # A checkout of lines reserves them in its saga: without the pass, refused at once (not
    # retried: the saga gives up) with the gate's own problem, naming the cancelled order.
    bare = await client.post("/v1/checkout", json={"lines": [line]},
                             headers=auth(app, Role.CUSTOMER, "c2"))
    problem = refused(bare, 403, "drop-pass-required", "Drop-Pass")
    order = await client.get(f"/v1/orders/{problem['order_id']}",
                             headers=auth(app, Role.CUSTOMER, "c2"))
    assert order.json()["status"] == "cancelled", order.text
    assert (await stock_of(http, "cart-1"))["reserved"] == 1
