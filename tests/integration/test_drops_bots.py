"""Bot scoring in a drop's waiting room over HTTP on a real database (issue 24): a person's
browser that solved its proof of work takes a place; a scripted bot (fast, one address for
many identities, an HTTP library's headers, no proof of work) is refused with its reasons and
takes none; a doubtful ask is held for review, keeps its place and is never admitted; a
payment method or address fingerprint many shoppers give is held with its reasons; and a
challenge is its shopper's and its drop's alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from instock.drops import bots, store
from instock.drops.bots import solve
from instock.drops.service import DropsService
from instock.platform.auth import Role
from instock.platform.ids import new_id
from tests.integration.test_drops import (
    PROBLEMS,
    Http,
    auth,
    drops_app,
    schedule,
    soon,
    standing,
    stocked,
    until,
)
from tests.support import BROWSER_HEADERS as BROWSER

BITS = 10  # the proof of work in these tests: ~1,000 hashes, a millisecond or so


@pytest.fixture
async def http(database_url: str, tmp_path: Path) -> AsyncIterator[Http]:
    async with drops_app(database_url, tmp_path, drop_proof_bits=BITS) as http:
        yield http


async def challenge(http: Http, drop_id: str, customer: str) -> dict[str, Any]:
    app, client = http
    got = await client.get(f"/v1/drops/{drop_id}/challenge",
                           headers=auth(app, Role.CUSTOMER, customer))
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    assert body["difficulty"] == BITS
    return body


async def ask(http: Http, drop_id: str, customer: str, *, headers: dict[str, str],
              proof: dict[str, str] | None) -> httpx.Response:
    app, client = http
    return await client.post(f"/v1/drops/{drop_id}/tickets", json=proof or {},
                             headers={**auth(app, Role.CUSTOMER, customer), **headers})


async def solved(http: Http, drop_id: str, customer: str) -> dict[str, str]:
    issued = await challenge(http, drop_id, customer)
    return {"challenge": issued["challenge"],
            "solution": solve(issued["challenge"], issued["difficulty"])}


async def queue_drop(http: Http, seconds: float = 60) -> dict[str, Any]:
    await stocked(http, "hype", {"hype-1": 10})
    return await schedule(http, skus=["hype-1"], starts_at=soon(seconds), mode="queue",
                          admit_per_second=1000)


async def test_a_person_gets_through_and_a_scripted_bot_is_refused_with_its_reasons(
        http: Http) -> None:
    drop = await queue_drop(http)
    person = await ask(http, drop["id"], "person", headers=BROWSER,
                       proof=await solved(http, drop["id"], "person"))
    assert person.status_code == 201, person.text
    assert person.json()["position"] == 1

    # The bot: an HTTP library's headers, no proof of work, twelve identities from one
    # address, asking again and again.
    refusals = []
    for n in range(12):
        for _ in range(3):
            answer = await ask(http, drop["id"], f"bot-{n}", headers={}, proof=None)
            assert answer.status_code == 403, answer.text
            refusals.append(answer.json())
    problem = refusals[-1]
    assert problem["type"] == PROBLEMS + "drop-entry-refused", problem
    assert problem["errors"][0]["field"] == "challenge", problem
    rules = {r["rule"] for r in problem["verdict"]["reasons"]}
    assert {"no-proof-of-work", "headless-browser", "browserless-headers"} <= rules, rules
    assert problem["verdict"]["decision"] == "refuse"
    reasons = problem["verdict"]["reasons"]
    assert problem["verdict"]["score"] == sum(r["weight"] for r in reasons)

    # No bot took a place: with the next person the room holds two (before the start their
    # order is a shuffle, so which is first is not ours to say).
    later = await ask(http, drop["id"], "person-2", headers=BROWSER,
                      proof=await solved(http, drop["id"], "person-2"))
    assert later.status_code == 201, later.text
    first = (await standing(http, drop["id"], person.json()["ticket"], "person")).json()
    assert sorted([first["position"], later.json()["position"]]) == [1, 2]


async def test_a_doubtful_ask_is_held_its_place_kept_and_never_admitted(http: Http) -> None:
    drop = await queue_drop(http, seconds=1.0)
    # A browser without a proof (an old page, say): held for review, not refused.
    held = await ask(http, drop["id"], "old-page", headers=BROWSER, proof=None)
    assert held.status_code == 201, held.text
    fine = await ask(http, drop["id"], "fine", headers=BROWSER,
                     proof=await solved(http, drop["id"], "fine"))
    assert fine.status_code == 201, fine.text
    await until(soon(1.2))
    kept = (await standing(http, drop["id"], held.json()["ticket"], "old-page")).json()
    assert kept["held_for_review"] and not kept["admitted"] and kept["pass"] is None, kept
    let_in = (await standing(http, drop["id"], fine.json()["ticket"], "fine")).json()
    assert let_in["admitted"] and let_in["pass"] and not let_in["held_for_review"], let_in
    assert {kept["position"], let_in["position"]} == {1, 2}  # the held place still counts


async def test_a_challenge_is_its_shoppers_and_its_drops_alone(http: Http) -> None:
    drop = await queue_drop(http)
    mine = await solved(http, drop["id"], "alice")
    # Bob sends Alice's solved challenge: it is not his, so it counts as an invalid proof.
    bob = await ask(http, drop["id"], "bob", headers=BROWSER, proof=mine)
    assert bob.status_code == 201, bob.text  # a browser with a bad proof is held, not refused
    state = (await standing(http, drop["id"], bob.json()["ticket"], "bob")).json()
    assert state["held_for_review"], state
    # A forged challenge with an HTTP library's headers: refused.
    forged = {"challenge": mine["challenge"][:-3] + "abc", "solution": mine["solution"]}
    answer = await ask(http, drop["id"], "carol", headers={}, proof=forged)
    assert answer.status_code == 403, answer.text
    assert "bad-proof-of-work" in {r["rule"] for r in answer.json()["verdict"]["reasons"]}
    # Alice's own: admitted to the room.
    alice = await ask(http, drop["id"], "alice", headers=BROWSER, proof=mine)
    assert alice.status_code == 201, alice.text


async def test_a_malformed_proof_is_422_naming_the_field(http: Http) -> None:
    drop = await queue_drop(http)
    answer = await ask(http, drop["id"], "dan", headers=BROWSER,
                       proof={"challenge": "x", "solution": "9" * 65})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "solution" in answer.text


async def test_staff_see_held_asks_with_their_reasons_and_decide_each_once(http: Http) -> None:
    app, client = http
    drop = await queue_drop(http, seconds=1.0)
    staff = auth(app, Role.SUPPORT, "sam")
    asks = {name: await ask(http, drop["id"], name, headers=BROWSER, proof=None)
            for name in ("old-page", "bot-ish")}
    assert all(a.status_code == 201 for a in asks.values())
    fine = await ask(http, drop["id"], "fine", headers=BROWSER,
                     proof=await solved(http, drop["id"], "fine"))
    assert fine.status_code == 201, fine.text

    async def positions() -> list[int]:
        tickets = (("old-page", asks["old-page"]), ("fine", fine))
        return [(await standing(http, drop["id"], a.json()["ticket"], name)).json()["position"]
                for name, a in tickets]

    async def room() -> dict[str, Any]:
        live = await client.get("/v1/drops", headers=staff)
        assert live.status_code == 200, live.text
        (mine,) = [d for d in live.json()["drops"] if d["id"] == drop["id"]]
        figures: dict[str, Any] = mine["room"]
        return figures

    assert await room() == {"asks": 3, "held": 2, "refused": 0, "reached": 0, "waiting": 3,
                            "sold_out": False}
    before = await positions()
    listed = await client.get(f"/v1/drops/{drop['id']}/held", headers=staff)
    assert listed.status_code == 200, listed.text
    held = listed.json()["held"]
    assert [h["customer_id"] for h in held] == ["old-page", "bot-ish"]  # oldest first
    assert {h["kind"] for h in held} == {"ticket"}
    assert {r["rule"] for r in held[0]["verdict"]["reasons"]} == {"no-proof-of-work"}

    # A shopper may not list or decide; a bad decision changes nothing.
    shopper = auth(app, Role.CUSTOMER, "fine")
    assert (await client.get(f"/v1/drops/{drop['id']}/held", headers=shopper)).status_code == 403
    bad = await client.post(f"/v1/drops/{drop['id']}/held/old-page", headers=staff,
                            json={"decision": "maybe"})
    assert bad.status_code == 422 and "decision" in bad.text, bad.text

    admitted = await client.post(f"/v1/drops/{drop['id']}/held/old-page", headers=staff,
                                 json={"decision": "admit"})
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["verdict"]["review"]["by"] == "support:sam"
    refused = await client.post(f"/v1/drops/{drop['id']}/held/bot-ish", headers=staff,
                                json={"decision": "refuse"})
    assert refused.status_code == 200, refused.text
    again = await client.post(f"/v1/drops/{drop['id']}/held/bot-ish", headers=staff,
                              json={"decision": "admit"})
    assert again.status_code == 409, again.text  # decided once: the refusal stands
    nobody = await client.post(f"/v1/drops/{drop['id']}/held/nobody", headers=staff,
                               json={"decision": "admit"})
    assert nobody.status_code == 404, nobody.text
    assert (await client.get(f"/v1/drops/{drop['id']}/held", headers=staff)).json() == {
        "held": []}

    await until(soon(1.6))  # the room has reached every place
    let_in = (await standing(http, drop["id"], asks["old-page"].json()["ticket"],
                             "old-page")).json()
    assert let_in["admitted"] and let_in["pass"] and not let_in["held_for_review"], let_in
    out = await standing(http, drop["id"], asks["bot-ish"].json()["ticket"], "bot-ish")
    assert out.status_code == 403 and out.json()["type"].endswith("drop-entry-refused"), out.text
    assert await positions() == before  # a decision moves nobody's place
    assert await room() == {"asks": 3, "held": 0, "refused": 1, "reached": 3, "waiting": 0,
                            "sold_out": False}
    shopper_view = await client.get("/v1/drops", headers=auth(app, Role.CUSTOMER, "fine"))
    assert shopper_view.status_code == 403, shopper_view.text


async def test_a_fingerprint_many_shoppers_give_across_drops_is_held_with_its_reasons(
        http: Http) -> None:
    """Tickets and entries alike count the shoppers on a fingerprint, in every drop of the
    last 30 days: a household's few score, a farm's many are held for staff with the reasons
    named; a person with a fresh fingerprint gets through; the fingerprint is kept keyed."""
    app, client = http
    card = "farm-card-" + new_id()  # unique: the count spans every drop in the database
    room = await queue_drop(http)
    answers = [await ask(http, room["id"], f"farm-{n}", headers=BROWSER,
                         proof={**await solved(http, room["id"], f"farm-{n}"),
                                "fingerprint": card})
               for n in range(4)]
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    staff = auth(app, Role.SUPPORT, "sam")
    # Four on one card score (the third and fourth) but hold no one: a household's share.
    assert (await client.get(f"/v1/drops/{room['id']}/held", headers=staff)).json() == {
        "held": []}
    async with app.state.drops.db.read() as conn:
        kept = dict((await conn.execute(sa.select(
            store.drop_tickets.c.customer_id, store.drop_tickets.c.verdict).where(
            store.drop_tickets.c.drop_id == room["id"]))).all())
        keys = set((await conn.execute(sa.select(store.drop_tickets.c.fingerprint))).scalars())
    assert [r["rule"] for r in kept["farm-3"]["reasons"]] == ["shared-identity"], kept
    assert kept["farm-1"]["reasons"] == [], kept
    assert keys == {app.state.drops.tokens.fingerprint_key(card)}  # never the raw value

    # The fifth shopper on the card, in another drop (a draw): held for review, and staff
    # see why.
    await stocked(http, "raffle", {"raffle-1": 5})
    closes = soon(60).isoformat()
    draw = await schedule(http, skus=["raffle-1"], starts_at=closes, mode="draw",
                          entries_close_at=closes)
    fifth = await enter(http, draw["id"], "farm-4", card)
    assert fifth.status_code == 201 and fifth.json()["held_for_review"] is True, fifth.text
    listed = (await client.get(f"/v1/drops/{draw['id']}/held", headers=staff)).json()["held"]
    assert [(h["kind"], h["customer_id"]) for h in listed] == [("entry", "farm-4")]
    verdict = listed[0]["verdict"]
    assert (verdict["score"], verdict["decision"]) == (50, "review"), verdict
    assert verdict["reasons"] == [
        {"rule": "shared-identity", "weight": 20, "why": "a payment method or address 3 or "
                                                         "more shoppers gave in the last 30 days"},
        {"rule": "repeated-identity", "weight": 30, "why": "a payment method or address 5 or "
                                                           "more shoppers gave in the last 30 "
                                                           "days"}]
    # The sixth, with a headless browser besides: refused, and no ticket taken.
    headless = {**BROWSER, "User-Agent": BROWSER["User-Agent"].replace("Chrome/",
                                                                       "HeadlessChrome/")}
    sixth = await ask(http, room["id"], "farm-5", headers=headless,
                      proof={**await solved(http, room["id"], "farm-5"), "fingerprint": card})
    assert sixth.status_code == 403, sixth.text
    assert {"shared-identity", "repeated-identity", "headless-browser"} == {
        r["rule"] for r in sixth.json()["verdict"]["reasons"]}

    # A person with a fresh fingerprint gets through, in either drop.
    fresh = "card-" + new_id()
    person = await enter(http, draw["id"], "person", fresh)
    assert person.status_code == 201 and person.json()["held_for_review"] is False, person.text
    again = await ask(http, room["id"], "person", headers=BROWSER,
                      proof={**await solved(http, room["id"], "person"), "fingerprint": fresh})
    assert again.status_code == 201, again.text
    async with app.state.drops.db.read() as conn:
        (ticket_verdict,) = (await conn.execute(sa.select(store.drop_tickets.c.verdict).where(
            store.drop_tickets.c.customer_id == "person"))).scalars()
    assert ticket_verdict["reasons"] == []  # two asks by one person are one shopper


async def test_shoppers_on_a_fingerprint_older_than_the_window_do_not_count(
        http: Http) -> None:
    app, _ = http
    card = "old-card-" + new_id()
    drops: DropsService = app.state.drops
    long_ago = drops.clock() - bots.FINGERPRINT_WINDOW - timedelta(hours=1)
    async with drops.db.write() as conn:  # ten shoppers on it, a month and more ago
        await conn.execute(store.drop_tickets.insert(), [
            {"drop_id": "old-drop", "customer_id": f"old-{n}", "ticket_id": new_id(),
             "lane": 1, "place_key": f"{n:04x}", "arrived_at": long_ago,
             "fingerprint": drops.tokens.fingerprint_key(card)} for n in range(10)])
    room = await queue_drop(http)
    now = await ask(http, room["id"], "new-owner", headers=BROWSER,
                    proof={**await solved(http, room["id"], "new-owner"), "fingerprint": card})
    assert now.status_code == 201, now.text
    async with drops.db.read() as conn:
        (verdict,) = (await conn.execute(sa.select(store.drop_tickets.c.verdict).where(
            store.drop_tickets.c.customer_id == "new-owner"))).scalars()
    assert verdict["reasons"] == [], verdict


async def test_the_shoppers_on_a_fingerprint_are_counted_once_each_up_to_the_cap(
        http: Http) -> None:
    app, _ = http
    drops: DropsService = app.state.drops
    key, now = drops.tokens.fingerprint_key("shared-" + new_id()), drops.clock()
    # 30 shoppers with a ticket, 10 of them (and 5 more) with an entry besides, in draws of
    # their own (a draw takes one entry per fingerprint).
    async with drops.db.write() as conn:
        await conn.execute(store.drop_tickets.insert(), [
            {"drop_id": "room", "customer_id": f"s-{n:02d}", "ticket_id": new_id(), "lane": 1,
             "place_key": f"{n:04x}", "arrived_at": now, "fingerprint": key}
            for n in range(30)])
        await conn.execute(store.drop_entries.insert(), [
            {"entry_id": new_id(), "drop_id": f"draw-{n}", "customer_id": f"s-{n:02d}",
             "arrived_at": now, "fingerprint": key} for n in range(20, 35)])

    async def others(customer: str, at_most: int) -> int:
        async with drops.db.read() as conn:
            return await store.shoppers_on_fingerprint(conn, key, customer,
                                                       now - bots.FINGERPRINT_WINDOW, at_most)

    assert await others("someone", 100) == 35
    assert await others("s-00", 100) == 34  # never the shopper asking
    assert await others("someone", 19) == await others("s-34", 19) == 19


async def test_a_fingerprint_is_checked_as_the_entries_is(http: Http) -> None:
    room = await queue_drop(http)
    short = await ask(http, room["id"], "eve", headers=BROWSER,
                      proof={**await solved(http, room["id"], "eve"), "fingerprint": "abc"})
    assert short.status_code == 422 and "fingerprint" in short.text, short.text


async def enter(http: Http, drop_id: str, customer: str, fingerprint: str) -> httpx.Response:
    app, client = http
    return await client.post(f"/v1/drops/{drop_id}/entries", json={
        **await solved(http, drop_id, customer), "fingerprint": fingerprint},
        headers={**auth(app, Role.CUSTOMER, customer), **BROWSER})
