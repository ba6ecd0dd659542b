"""Drops in GraphQL on a real database, over real HTTP and WebSockets (the app under uvicorn in
this process): each field answers as its REST route (the same service method), refuses as it
does (the same problem type and field), and changes nothing when it refuses; the live standing
subscription pushes what the SSE stream pushes, from the same room."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import websockets
from fastapi import FastAPI

from instock.app import create_app
from instock.drops import store
from instock.drops.bots import solve
from instock.drops.model import TicketClaims
from instock.drops.service import DropsService
from instock.platform.auth import Role
from tests.integration.test_drop_room import READ_TIMEOUT, Stream, served
from tests.integration.test_drops import (
    PROBLEMS,
    PROOF_BITS,
    Http,
    auth,
    refused,
    schedule,
    stocked,
    ticket,
)
from tests.support import BROWSER_HEADERS, make_settings

DROP_FIELDS = ("id skus startsAt mode admitPerSecond perCustomerLimit channels endsAt "
               "entriesCloseAt drawWinners claimSeconds createdAt")
SCHEDULE = f"""mutation($input: DropInput!) {{ scheduleDrop(input: $input) {{ {DROP_FIELDS} }} }}"""
GET_DROP = f"""query($id: String!) {{ drop(id: $id) {{ {DROP_FIELDS} }} }}"""
TAKE = """mutation($drop: String!, $customer: String, $challenge: String, $solution: String) {
  takeDropTicket(dropId: $drop, customerId: $customer, challenge: $challenge,
                 solution: $solution) { ticket position } }"""
ENTER = """mutation($drop: String!, $customer: String, $challenge: String, $solution: String,
                  $fingerprint: String) {
  enterDraw(dropId: $drop, customerId: $customer, challenge: $challenge, solution: $solution,
            fingerprint: $fingerprint) { entry heldForReview } }"""
STANDING = """query($drop: String!, $ticket: String!) {
  dropTicket(dropId: $drop, ticket: $ticket) {
    position admitted dropPass soldOut waitSeconds heldForReview } }"""
FOLLOW = """subscription($drop: String!, $ticket: String!) {
  dropStanding(dropId: $drop, ticket: $ticket) {
    position admitted soldOut waitSeconds heldForReview waitlist { href method skus } } }"""


@pytest.fixture
async def live(database_url: str, tmp_path: Path) -> AsyncIterator[Http]:
    # Every tick told, as test_drop_room's: the test watches each move.
    app = create_app(make_settings(database_url, tmp_path, drop_proof_bits=PROOF_BITS,
                                   drop_room_tick_seconds=0.05, drop_room_push_seconds=0))
    async with served(app) as client:
        yield app, client


async def graph(http: Http, query: str, variables: dict[str, Any],
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    _, client = http
    answer = await client.post("/graphql", json={"query": query, "variables": variables},
                               headers=headers or {})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def problem_of(body: dict[str, Any], slug: str, field: str) -> dict[str, Any]:
    """The one error of a refused operation: REST's problem document in its extensions."""
    assert body.get("data") is None or not any(body["data"].values()), body
    [error] = body["errors"]
    extensions: dict[str, Any] = error["extensions"]
    assert extensions["type"] == PROBLEMS + slug, extensions
    assert extensions["code"] == slug.upper().replace("-", "_"), extensions
    assert extensions["errors"][0]["field"] == field and extensions["errors"][0]["reason"]
    return extensions


def camel(rest: dict[str, Any]) -> dict[str, Any]:
    """A REST drop with GraphQL's field names (datetimes compared as instants)."""
    def key(name: str) -> str:
        head, *rest_ = name.split("_")
        return head + "".join(part.title() for part in rest_)
    return {key(k): v for k, v in rest.items()}


def instants(drop: dict[str, Any]) -> dict[str, Any]:
    return {k: (datetime.fromisoformat(v) if isinstance(v, str) and k.endswith("At") else v)
            for k, v in drop.items()}


async def stored_drops(app: FastAPI) -> int:
    drops: DropsService = app.state.drops
    async with drops.db.read() as conn:
        return int((await conn.execute(
            sa.select(sa.func.count()).select_from(store.drops))).scalar_one())


async def test_schedule_and_read_a_drop_as_rest_does_and_refusals_store_nothing(
        live: Http) -> None:
    app, client = live
    await stocked(live, "gq", {"gq-1": 5, "gq-2": 5})
    merch = auth(app, Role.MERCHANDISER)
    starts = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    made = await graph(live, SCHEDULE, {"input": {
        "skus": ["gq-1"], "startsAt": starts.isoformat(), "mode": "queue",
        "admitPerSecond": 5, "perCustomerLimit": 2}}, merch)
    assert "errors" not in made, made
    drop = made["data"]["scheduleDrop"]
    assert (drop["mode"], drop["skus"], drop["admitPerSecond"]) == ("queue", ["gq-1"], 5.0)

    # The drop field answers what GET /v1/drops/{id} answers.
    rest = await client.get(f"/v1/drops/{drop['id']}", headers=auth(app, Role.CUSTOMER, "c1"))
    assert rest.status_code == 200, rest.text
    got = await graph(live, GET_DROP, {"id": drop["id"]}, auth(app, Role.CUSTOMER, "c1"))
    assert instants(got["data"]["drop"]) == instants(camel(rest.json())) == instants(drop)
    missing = await graph(live, GET_DROP, {"id": "no-such-drop"}, merch)
    assert missing["errors"][0]["extensions"]["type"] == PROBLEMS + "not-found", missing

    # Refusals: each as REST refuses, and nothing stored.
    before = await stored_drops(app)
    customer = await graph(live, SCHEDULE, {"input": {
        "skus": ["gq-2"], "startsAt": starts.isoformat(), "mode": "queue",
        "admitPerSecond": 1}}, auth(app, Role.CUSTOMER, "c1"))
    assert customer["errors"][0]["extensions"]["code"] == "FORBIDDEN", customer
    anonymous = await graph(live, SCHEDULE, {"input": {
        "skus": ["gq-2"], "startsAt": starts.isoformat(), "mode": "queue"}})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHORIZED", anonymous
    bad = {"skus": ["gq-2"], "startsAt": starts.isoformat(), "mode": "draw"}
    via_graph = problem_of(await graph(live, SCHEDULE, {"input": bad}, merch),
                           "validation-error", "entries_close_at")
    via_rest = refused(await client.post("/v1/drops", headers=merch, json={
        "skus": ["gq-2"], "starts_at": starts.isoformat(), "mode": "draw"}), 422,
        "validation-error", "entries_close_at")
    assert via_graph["errors"] == via_rest["errors"]
    problem_of(await graph(live, SCHEDULE, {"input": {**bad, "mode": "lottery"}}, merch),
               "validation-error", "mode")
    problem_of(await graph(live, SCHEDULE, {"input": {**bad, "mode": "queue",
                                                      "startsAt": "2026-01-01T00:00:00"}},
                           merch), "validation-error", "starts_at")
    problem_of(await graph(live, SCHEDULE, {"input": {**bad, "mode": "queue", "skus": ["nope"],
                                                      "admitPerSecond": 1}}, merch),
               "validation-error", "skus")
    taken = await graph(live, SCHEDULE, {"input": {**bad, "mode": "queue", "skus": ["gq-1"],
                                                   "admitPerSecond": 1}}, merch)
    assert taken["errors"][0]["extensions"]["code"] == "CONFLICT", taken
    assert taken["errors"][0]["extensions"]["skus"] == ["gq-1"], taken
    assert await stored_drops(app) == before


async def take(http: Http, drop_id: str, customer: str, headers: dict[str, str] | None = None,
               proof: bool = True) -> dict[str, Any]:
    """takeDropTicket as a person's browser calls it: the proof of work solved."""
    app, client = http
    variables: dict[str, Any] = {"drop": drop_id}
    if proof:
        issued = (await client.get(f"/v1/drops/{drop_id}/challenge",
                                   headers=auth(app, Role.CUSTOMER, customer))).json()
        variables |= {"challenge": issued["challenge"],
                      "solution": solve(issued["challenge"], issued["difficulty"])}
    return await graph(http, TAKE, variables, {**auth(app, Role.CUSTOMER, customer),
                                               **(BROWSER_HEADERS if headers is None
                                                  else headers)})


async def test_tickets_and_standings_as_rest_with_the_same_bot_scoring(live: Http) -> None:
    app, client = live
    await stocked(live, "tk", {"tk-1": 10})
    drop = await schedule(live, skus=["tk-1"], starts_at=datetime.now(UTC), mode="queue",
                          admit_per_second=1000)
    mine = await take(live, drop["id"], "ann")
    assert "errors" not in mine, mine
    first = mine["data"]["takeDropTicket"]
    assert first["position"] == 1
    again = (await take(live, drop["id"], "ann"))["data"]["takeDropTicket"]
    assert again["position"] == 1  # asking again keeps the place

    # The standing: what GET …/tickets/{ticket} answers (the pass is fresh each time).
    rest = await client.get(f"/v1/drops/{drop['id']}/tickets/{first['ticket']}",
                            headers=auth(app, Role.CUSTOMER, "ann"))
    assert rest.status_code == 200, rest.text
    standing = (await graph(live, STANDING, {"drop": drop["id"], "ticket": first["ticket"]},
                            auth(app, Role.CUSTOMER, "ann")))["data"]["dropTicket"]
    assert standing["admitted"] is True and standing["dropPass"]
    assert {k: v for k, v in standing.items() if k != "dropPass"} == {
        "position": rest.json()["position"], "admitted": rest.json()["admitted"],
        "soldOut": rest.json()["sold_out"], "waitSeconds": rest.json()["wait_seconds"],
        "heldForReview": rest.json()["held_for_review"]}

    # A scripted bot (an HTTP library's headers, no proof, many identities from one address)
    # is refused with the same verdict REST gives it, and takes no place.
    for n in range(6):
        refusal = await take(live, drop["id"], f"bot-{n}", headers={}, proof=False)
    extensions = problem_of(refusal, "drop-entry-refused", "challenge")
    rules = {r["rule"] for r in extensions["verdict"]["reasons"]}
    assert {"no-proof-of-work", "headless-browser", "browserless-headers"} <= rules, rules
    assert extensions["verdict"]["decision"] == "refuse"
    by_rest = await client.post(f"/v1/drops/{drop['id']}/tickets", json={},
                                headers=auth(app, Role.CUSTOMER, "bot-6"))
    assert by_rest.status_code == 403
    assert {r["rule"] for r in by_rest.json()["verdict"]["reasons"]} == rules
    assert (await client.get("/v1/drops", headers=auth(app, Role.SUPPORT))).json()[
        "drops"][0]["room"]["asks"] == 1  # only ann's

    # Staff act for a named customer only; a customer never for another.
    staff = await graph(live, TAKE, {"drop": drop["id"]}, auth(app, Role.SUPPORT))
    problem_of(staff, "validation-error", "customer_id")
    other = await graph(live, STANDING, {"drop": drop["id"], "ticket": first["ticket"]},
                        auth(app, Role.CUSTOMER, "bob"))
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN", other
    forged = await graph(live, STANDING, {"drop": drop["id"], "ticket": first["ticket"] + "x"},
                         auth(app, Role.CUSTOMER, "ann"))
    problem_of(forged, "drop-ticket-invalid", "ticket")
    problem_of(await graph(live, STANDING, {"drop": drop["id"], "ticket": "x" * 2001},
                           auth(app, Role.CUSTOMER, "ann")), "validation-error", "ticket")


async def enter_by_graph(http: Http, drop_id: str, customer: str, *, proof: bool = True,
                         headers: dict[str, str] | None = None,
                         **variables: Any) -> dict[str, Any]:
    """enterDraw as a person's browser calls it: the proof of work solved."""
    app, client = http
    variables["drop"] = drop_id
    if proof:
        issued = (await client.get(f"/v1/drops/{drop_id}/challenge",
                                   headers=auth(app, Role.CUSTOMER, customer))).json()
        variables |= {"challenge": issued["challenge"],
                      "solution": solve(issued["challenge"], issued["difficulty"])}
    return await graph(http, ENTER, variables, {**auth(app, Role.CUSTOMER, customer),
                                                **(BROWSER_HEADERS if headers is None
                                                   else headers)})


async def enter_by_rest(http: Http, drop_id: str, customer: str, *, proof: bool = True,
                        headers: dict[str, str] | None = None, **body: Any) -> Any:
    app, client = http
    if proof:
        issued = (await client.get(f"/v1/drops/{drop_id}/challenge",
                                   headers=auth(app, Role.CUSTOMER, customer))).json()
        body |= {"challenge": issued["challenge"],
                 "solution": solve(issued["challenge"], issued["difficulty"])}
    return await client.post(f"/v1/drops/{drop_id}/entries", json=body, headers={
        **auth(app, Role.CUSTOMER, customer),
        **(BROWSER_HEADERS if headers is None else headers)})


async def test_enter_draw_answers_and_refuses_as_rest_does(live: Http) -> None:
    app, _ = live
    await stocked(live, "dr", {"dr-1": 5, "dr-2": 5})
    closes = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    drop = await schedule(live, skus=["dr-1"], starts_at=closes, mode="draw",
                          entries_close_at=closes)
    card = "gq-card-0123456789"
    mine = await enter_by_graph(live, drop["id"], "ann", fingerprint=card)
    assert "errors" not in mine, mine
    entered = mine["data"]["enterDraw"]
    assert entered["heldForReview"] is False and entered["entry"]
    # Asking again, either way, gives the one entry.
    again = await enter_by_rest(live, drop["id"], "ann", fingerprint=card)
    assert again.status_code == 201, again.text
    assert again.json() == {"entry": entered["entry"], "held_for_review": False}
    assert (await enter_by_graph(live, drop["id"], "ann"))["data"]["enterDraw"] == entered
    standing = await graph(live, """query($drop: String!, $entry: String!) {
      drawEntry(dropId: $drop, entryId: $entry) { status } }""",
                           {"drop": drop["id"], "entry": entered["entry"]},
                           auth(app, Role.CUSTOMER, "ann"))
    assert standing["data"]["drawEntry"]["status"] == "waiting", standing

    # Another customer with ann's card: the same 409 as REST, and no entry.
    dup = problem_of(await enter_by_graph(live, drop["id"], "bob", fingerprint=card),
                     "drop-entry-duplicate", "fingerprint")
    by_rest = refused(await enter_by_rest(live, drop["id"], "bob", fingerprint=card), 409,
                      "drop-entry-duplicate", "fingerprint")
    assert dup["errors"] == by_rest["errors"] and dup["drop_id"] == drop["id"]
    # A scripted bot: refused with the verdict REST gives it.
    bot = problem_of(await enter_by_graph(live, drop["id"], "bot-1", proof=False, headers={}),
                     "drop-entry-refused", "challenge")
    bot_rest = refused(await enter_by_rest(live, drop["id"], "bot-2", proof=False, headers={}),
                       403, "drop-entry-refused", "challenge")
    assert bot["verdict"]["decision"] == bot_rest["verdict"]["decision"] == "refuse"
    assert ({r["rule"] for r in bot["verdict"]["reasons"]}
            == {r["rule"] for r in bot_rest["verdict"]["reasons"]}
            >= {"no-proof-of-work", "headless-browser", "browserless-headers"})
    # A browser without a proof: held, as REST holds it.
    held = await enter_by_graph(live, drop["id"], "old-page", proof=False)
    assert held["data"]["enterDraw"]["heldForReview"] is True, held
    # Bad input, as REST names it; staff must name the customer; a customer only itself.
    problem_of(await enter_by_graph(live, drop["id"], "cy", fingerprint="abc"),
               "validation-error", "fingerprint")
    problem_of(await graph(live, ENTER, {"drop": drop["id"]}, auth(app, Role.SUPPORT)),
               "validation-error", "customer_id")
    other = await graph(live, ENTER, {"drop": drop["id"], "customer": "zed"},
                        auth(app, Role.CUSTOMER, "ann"))
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN", other
    for_ann = await graph(live, ENTER, {"drop": drop["id"], "customer": "ann"},
                          auth(app, Role.SERVICE))
    assert for_ann["data"]["enterDraw"]["entry"] == entered["entry"], for_ann
    async with app.state.drops.db.read() as conn:
        rows = (await conn.execute(sa.select(store.drop_entries.c.customer_id).where(
            store.drop_entries.c.drop_id == drop["id"]))).scalars()
        assert sorted(rows) == ["ann", "old-page"]

    # Closed: a queue drop takes no entries, and a draw's window ends at its close.
    queue = await schedule(live, skus=["dr-2"], starts_at=datetime.now(UTC), mode="queue",
                           admit_per_second=10)
    closed = problem_of(await enter_by_graph(live, queue["id"], "ann"),
                        "drop-entries-closed", "entries_close_at")
    closed_rest = refused(await enter_by_rest(live, queue["id"], "ann"), 409,
                          "drop-entries-closed", "entries_close_at")
    assert closed["errors"] == closed_rest["errors"]


async def test_enter_draw_after_the_close_is_refused_as_rest_refuses_it(live: Http) -> None:
    await stocked(live, "late", {"late-1": 5})
    closes = datetime.now(UTC) + timedelta(seconds=1)
    drop = await schedule(live, skus=["late-1"], starts_at=closes, mode="draw",
                          entries_close_at=closes.isoformat())
    await asyncio.sleep(max(0.0, (closes - datetime.now(UTC)).total_seconds()) + 0.1)
    closed = problem_of(await enter_by_graph(live, drop["id"], "late"),
                        "drop-entries-closed", "entries_close_at")
    closed_rest = refused(await enter_by_rest(live, drop["id"], "late"), 409,
                          "drop-entries-closed", "entries_close_at")
    assert closed["errors"] == closed_rest["errors"]


class Subscription:
    """One graphql-transport-ws subscription of dropStanding, read as it comes."""

    def __init__(self, url: str, drop_id: str, token: str) -> None:
        self.url, self.variables = url, {"drop": drop_id, "ticket": token}
        self.seen: list[dict[str, Any]] = []
        self.socket: Any = None

    async def __aenter__(self) -> Subscription:
        self.socket = await websockets.connect(self.url, subprotocols=["graphql-transport-ws"])
        await self.socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await self.socket.recv())["type"] == "connection_ack"
        await self.socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": FOLLOW, "variables": self.variables}}))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.socket.close()

    async def message(self) -> dict[str, Any]:
        async with asyncio.timeout(READ_TIMEOUT):
            found: dict[str, Any] = json.loads(await self.socket.recv())
            return found

    async def next(self) -> dict[str, Any]:
        message = await self.message()
        assert message["type"] == "next" and "errors" not in message["payload"], message
        body: dict[str, Any] = message["payload"]["data"]["dropStanding"]
        self.seen.append(body)
        return body

    async def until(self, done: Any) -> dict[str, Any]:
        while not done(body := await self.next()):
            pass
        return body


def sse_form(event: dict[str, Any]) -> dict[str, Any]:
    """A subscription's standing in the SSE stream's JSON shape."""
    return {"position": event["position"], "admitted": event["admitted"],
            "sold_out": event["soldOut"], "wait_seconds": event["waitSeconds"],
            "held_for_review": event["heldForReview"], "waitlist": event["waitlist"]}


async def test_the_subscription_pushes_what_the_sse_stream_does_from_one_room(
        live: Http) -> None:
    app, client = live
    url = str(client.base_url).replace("http://", "ws://") + "/graphql"
    await stocked(live, "sub", {"sub-1": 50})
    starts = datetime.now(UTC) + timedelta(seconds=1)
    drop = await schedule(live, skus=["sub-1"], starts_at=starts, mode="queue",
                          admit_per_second=4)
    tickets = {c: await ticket(live, drop["id"], c) for c in ("s1", "s2", "s3", "s4", "s5")}
    places = {c: (await client.get(f"/v1/drops/{drop['id']}/tickets/{t['ticket']}",
                                   headers=auth(app, Role.CUSTOMER, c))).json()["position"]
              for c, t in tickets.items()}
    last = max(places, key=lambda c: places[c])
    token = tickets[last]["ticket"]
    drops: DropsService = app.state.drops
    async with (Subscription(url, drop["id"], token) as subscription,
                Stream(client, f"/v1/drops/{drop['id']}/tickets/{token}/events") as stream):
        first, sse_first = await subscription.next(), await stream.next()
        assert first["admitted"] is False and first["position"] >= 1, first
        assert first["waitlist"] is None
        # One room (one ticker) for the drop in this process, watched by both.
        assert list(drops.rooms._rooms) == [drop["id"]]
        assert len(drops.rooms._rooms[drop["id"]].watchers) == 2
        admitted = await subscription.until(lambda s: s["admitted"])
        sse_admitted = await stream.until(lambda s: s["admitted"])
    assert sse_form(admitted) == sse_admitted == {
        "position": 0, "admitted": True, "sold_out": False, "wait_seconds": 0.0,
        "held_for_review": False, "waitlist": None}
    assert sse_form(first)["admitted"] == sse_first["admitted"]
    waiting = [s["position"] for s in subscription.seen if not s["admitted"]]
    assert len(set(waiting)) >= 2 and waiting == sorted(waiting, reverse=True), waiting
    # Gone: the room forgets both watchers (and closes with the last).
    async with asyncio.timeout(READ_TIMEOUT):
        while drop["id"] in drops.rooms._rooms:
            await asyncio.sleep(0.05)


async def test_a_sell_out_reaches_subscribers_with_the_waitlist_offer(live: Http) -> None:
    app, client = live
    url = str(client.base_url).replace("http://", "ws://") + "/graphql"
    await stocked(live, "out", {"out-1": 1})
    drop = await schedule(live, skus=["out-1"], starts_at=datetime.now(UTC), mode="queue",
                          admit_per_second=0.001)  # none admitted for 17 minutes
    mine = await ticket(live, drop["id"], "w1")
    async with Subscription(url, drop["id"], mine["ticket"]) as subscription:
        assert (await subscription.next())["soldOut"] is False
        damaged = await client.post("/v1/inventory/adjustments", headers=auth(app, Role.ADMIN),
                                    json={"sku": "out-1", "location": "wh", "kind": "damage",
                                          "quantity": 1, "reason": "gone"})
        assert damaged.status_code == 200, damaged.text
        told = await subscription.until(lambda s: s["soldOut"])
    assert (told["admitted"], told["waitlist"]) == (
        False, {"href": "/v1/waitlist", "method": "POST", "skus": ["out-1"]})


async def test_a_forged_or_expired_ticket_gets_no_subscription(live: Http) -> None:
    app, client = live
    url = str(client.base_url).replace("http://", "ws://") + "/graphql"
    await stocked(live, "forge", {"forge-1": 1})
    drop = await schedule(live, skus=["forge-1"], starts_at=datetime.now(UTC), mode="queue",
                          admit_per_second=1)
    mine = await ticket(live, drop["id"], "c1")
    drops: DropsService = app.state.drops
    claims = drops.tokens.read_ticket(mine["ticket"])
    expired = drops.tokens.ticket(TicketClaims(claims.drop_id, claims.customer_id,
                                               claims.ticket_id),
                                  datetime.now(UTC) - timedelta(days=3))
    await stocked(live, "forge2", {"forge2-1": 1})
    other = await schedule(live, skus=["forge2-1"], starts_at=datetime.now(UTC), mode="queue",
                           admit_per_second=1)
    for drop_id, token, reason in (
            (drop["id"], mine["ticket"] + "x", "not a genuine ticket"),
            (drop["id"], "garbage", "not a genuine ticket"),
            (drop["id"], expired, "the ticket has expired"),
            (other["id"], mine["ticket"], "the ticket is for another drop")):
        async with Subscription(url, drop_id, token) as subscription:
            message = await subscription.message()
        errors = (message["payload"] if message["type"] == "error"
                  else message["payload"]["errors"])
        extensions = errors[0]["extensions"]
        assert extensions["type"] == PROBLEMS + "drop-ticket-invalid", message
        assert extensions["errors"] == [{"field": "ticket", "reason": reason}], message
    assert drops.rooms._rooms == {}  # no watcher was made for any of them


async def over_websocket(url: str, token: str, headers: dict[str, str], query: str,
                         variables: dict[str, Any]) -> dict[str, Any]:
    """One operation over graphql-transport-ws, the token in connection_init, `headers` on the
    handshake (what a browser's WebSocket sends): its one result."""
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"],
                                  additional_headers=headers) as socket:
        await socket.send(json.dumps({"type": "connection_init",
                                      "payload": {"Authorization": f"Bearer {token}"}}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": query, "variables": variables}}))
        async with asyncio.timeout(READ_TIMEOUT):
            message: dict[str, Any] = json.loads(await socket.recv())
        payload: dict[str, Any] = ({"errors": message["payload"]} if message["type"] == "error"
                                   else message["payload"])
        return payload


async def test_a_ticket_over_a_websocket_is_scored_from_its_handshake(live: Http) -> None:
    app, client = live
    url = str(client.base_url).replace("http://", "ws://") + "/graphql"
    await stocked(live, "ws", {"ws-1": 3})
    drop = await schedule(live, skus=["ws-1"], starts_at=datetime.now(UTC), mode="queue",
                          admit_per_second=1000)
    token = app.state.tokens.mint(Role.CUSTOMER, "wendy")
    issued = (await client.get(f"/v1/drops/{drop['id']}/challenge",
                               headers=auth(app, Role.CUSTOMER, "wendy"))).json()
    proof = {"challenge": issued["challenge"],
             "solution": solve(issued["challenge"], issued["difficulty"])}
    person = await over_websocket(url, token, BROWSER_HEADERS, TAKE, {"drop": drop["id"], **proof})
    assert "errors" not in person, person
    assert person["data"]["takeDropTicket"]["position"] == 1
    # A client with an HTTP library's handshake and no proof: refused as REST refuses it.
    bot = await over_websocket(url, app.state.tokens.mint(Role.CUSTOMER, "wbot"),
                               {"User-Agent": "python-httpx/0.28"}, TAKE, {"drop": drop["id"]})
    extensions = problem_of(bot, "drop-entry-refused", "challenge")
    assert "headless-browser" in {r["rule"] for r in extensions["verdict"]["reasons"]}
    assert (await client.get("/v1/drops", headers=auth(app, Role.SUPPORT))).json()[
        "drops"][0]["room"]["asks"] == 1  # only wendy's
