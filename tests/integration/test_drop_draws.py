"""Draw drops over HTTP on a real database (issue 24, part 3): entries while the window is
open (one per customer and per fingerprint), one stored draw whose published seed and entries
re-compute its order, winners' passes admitting their reservations, unclaimed rights rolling
over once their window passes, and refusals that change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from instock.app import Container, build, create_app
from instock.drops import store
from instock.drops.bots import solve
from instock.drops.service import DropsService
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from instock.platform.ids import new_id
from tests.integration.helpers import counting
from tests.integration.test_drops import (
    PROOF_BITS,
    Http,
    auth,
    refused,
    reserve,
    schedule,
    soon,
    stock_of,
    stocked,
    until,
)
from tests.support import BROWSER_HEADERS, make_settings

BULK = 5_000
GRAPH = """query($drop: String!, $entry: String!) {
  drawEntry(dropId: $drop, entryId: $entry) { status rank dropPass claimUntil claimed }
  dropDraw(dropId: $drop) { seed winners algorithm }
}"""


@pytest.fixture
async def setup(database_url: str, tmp_path: Path
                ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Container]]:
    """The API, and a container on the same database for the workers' side (the consumers
    and the rollover announcer a worker would run)."""
    settings = make_settings(database_url, tmp_path, drop_proof_bits=PROOF_BITS)
    app = create_app(settings)
    worker = build(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield app, client, worker
    await worker.close()


async def enter(http: Http, drop_id: str, customer: str, **body: Any) -> httpx.Response:
    """An entry, taken as a person's browser does: the proof of work solved."""
    app, client = http
    headers = auth(app, Role.CUSTOMER, customer)
    issued = (await client.get(f"/v1/drops/{drop_id}/challenge", headers=headers)).json()
    proof = {"challenge": issued["challenge"],
             "solution": solve(issued["challenge"], issued["difficulty"])}
    return await client.post(f"/v1/drops/{drop_id}/entries", json={**proof, **body},
                             headers={**headers, **BROWSER_HEADERS})


async def entered(http: Http, drop_id: str, customer: str, **body: Any) -> str:
    answer = await enter(http, drop_id, customer, **body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["held_for_review"] is False
    entry: str = answer.json()["entry"]
    return entry


async def standing(http: Http, drop_id: str, entry: str, customer: str) -> dict[str, Any]:
    app, client = http
    got = await client.get(f"/v1/drops/{drop_id}/entries/{entry}",
                           headers=auth(app, Role.CUSTOMER, customer))
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def draw(http: Http, drop_id: str) -> httpx.Response:
    app, client = http
    return await client.post(f"/v1/drops/{drop_id}/draw",
                             headers=auth(app, Role.MERCHANDISER))


async def bulk_entries(drops: DropsService, drop_id: str, count: int) -> None:
    """Many entries in one statement, into the store's table: the test is about the draw over
    them, not about taking them one by one (the HTTP entries beside them are)."""
    now = drops.clock()
    async with drops.db.write() as conn:
        await conn.execute(store.drop_entries.insert(), [
            {"entry_id": new_id(), "drop_id": drop_id, "customer_id": f"bulk-{i:05d}",
             "arrived_at": now, "decision": "admit"} for i in range(count)])


async def events(worker: Container, kind: str) -> list[dict[str, Any]]:
    async with worker.db.read() as conn:
        found = await conn.execute(sa.select(outbox.c.envelope).order_by(
            outbox.c.created_at, outbox.c.id))
        return [e for e in found.scalars() if e["type"] == kind]


async def test_a_draw_is_stored_once_and_re_computable_from_its_published_seed(
        setup: tuple[FastAPI, httpx.AsyncClient, Container]) -> None:
    app, client, _ = setup
    http = (app, client)
    await stocked(http, "raffle", {"raffle-1": 40})
    closes = soon(3.0)
    drop = await schedule(http, skus=["raffle-1"], starts_at=closes.isoformat(), mode="draw",
                          entries_close_at=closes.isoformat())
    assert drop["entries_close_at"] and drop["draw_winners"] is None
    await bulk_entries(app.state.drops, drop["id"], BULK - 2)
    mine = await entered(http, drop["id"], "c1")
    assert await entered(http, drop["id"], "c1") == mine  # asking again: the same entry
    await entered(http, drop["id"], "c2")

    # Before the close: no draw, no seed, and an early draw changes nothing.
    early = refused(await draw(http, drop["id"]), 409, "drop-not-drawn", "draw")
    assert "entries are open" in early["detail"]
    refused(await client.get(f"/v1/drops/{drop['id']}/draw",
                             headers=auth(app, Role.CUSTOMER, "c1")), 409, "drop-not-drawn",
            "draw")
    assert (await standing(http, drop["id"], mine, "c1"))["status"] == "waiting"

    await until(closes)
    late = refused(await enter(http, drop["id"], "c3"), 409, "drop-entries-closed",
                   "entries_close_at")
    assert "closed" in late["errors"][0]["reason"]

    # Two staff draw at once: one stored draw, the same answer to both, and to asking again.
    first, second = await asyncio.gather(draw(http, drop["id"]), draw(http, drop["id"]))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json() == second.json() == (await draw(http, drop["id"])).json()
    published = (await client.get(f"/v1/drops/{drop['id']}/draw",
                                  headers=auth(app, Role.CUSTOMER, "c9"))).json()
    assert published == first.json()

    # Anyone re-computes the order from the published seed and entries alone.
    seed, entries = published["seed"], published["entries"]
    assert len(entries) == len(set(entries)) == BULK and mine in entries
    assert published["algorithm"].startswith("hmac-sha256-sort-v1")
    recomputed = sorted(entries, key=lambda e: (hmac.new(
        seed.encode(), e.encode(), hashlib.sha256).hexdigest(), e))
    assert published["order"] == recomputed
    assert published["slots"] == 40  # the units available at the draw
    assert published["winners"] == recomputed[:40]
    assert (await stock_of(http, "raffle-1"))["reserved"] == 0  # a draw reserves nothing


async def test_winners_passes_admit_and_an_unclaimed_right_rolls_over(
        setup: tuple[FastAPI, httpx.AsyncClient, Container]) -> None:
    app, client, worker = setup
    http = (app, client)
    await stocked(http, "roll", {"roll-1": 2})
    closes = soon(1.0)
    drop = await schedule(http, skus=["roll-1"], starts_at=closes.isoformat(), mode="draw",
                          entries_close_at=closes.isoformat(), claim_seconds=1.5)
    customers = [f"r{i}" for i in range(5)]
    by_entry = {await entered(http, drop["id"], c): c for c in customers}
    await until(closes)
    drawn = await draw(http, drop["id"])
    assert drawn.status_code == 200, drawn.text
    order = drawn.json()["order"]
    assert drawn.json()["winners"] == order[:2]
    first, second, third, fourth = (by_entry[e] for e in order[:4])
    states = {c: await standing(http, drop["id"], e, c) for e, c in by_entry.items()}
    assert states[first]["status"] == "won" and states[first]["pass"]
    assert states[first]["rank"] == 1 and states[first]["claim_until"]
    assert states[third]["status"] == "waiting" and states[third]["pass"] is None

    # GraphQL answers the same: the entry's standing with its pass, the published draw.
    graph = await client.post("/graphql", headers=auth(app, Role.CUSTOMER, first), json={
        "query": GRAPH, "variables": {"drop": drop["id"], "entry": order[0]}})
    assert graph.status_code == 200 and "errors" not in graph.json(), graph.text
    mine = graph.json()["data"]["drawEntry"]
    assert (mine["status"], mine["rank"], mine["claimed"]) == ("won", 1, False)
    assert mine["dropPass"] and mine["claimUntil"]
    assert graph.json()["data"]["dropDraw"]["seed"] == drawn.json()["seed"]
    assert graph.json()["data"]["dropDraw"]["winners"] == order[:2]

    # The winner's pass lets their reservation through; no pass, or another's, does not.
    assert (await reserve(http, first, "roll-1", states[first]["pass"])).status_code == 201
    refused(await reserve(http, third, "roll-1"), 403, "drop-pass-required", "Drop-Pass")
    refused(await reserve(http, third, "roll-1", states[second]["pass"]), 403,
            "drop-pass-invalid", "Drop-Pass")
    assert (await stock_of(http, "roll-1"))["reserved"] == 1

    # The drop hears inventory's reservation (its claims consumer, as a worker runs it).
    consumer = worker.consumer("drops-claims")
    await consumer.handle_batch(await events(worker, "reservation.created.v1"))

    # The second winner lets the window pass: their right rolls over to the third drawn.
    await until(soon(1.6))
    now = {c: await standing(http, drop["id"], e, c) for e, c in by_entry.items()}
    assert now[first]["status"] == "won" and now[first]["claimed"] is True
    assert now[second]["status"] == "expired" and now[second]["pass"] is None
    assert now[third]["status"] == "won" and now[third]["rank"] == 3 and now[third]["pass"]
    assert now[fourth]["status"] == "waiting"  # the third may yet let it lapse
    refused(await reserve(http, second, "roll-1", states[second]["pass"]), 403,
            "drop-pass-invalid", "Drop-Pass")
    assert (await reserve(http, third, "roll-1", now[third]["pass"])).status_code == 201

    # Winners are told: two at the draw, one on the rollover (once, however often asked).
    assert await worker.drops.draws.announce(drop["id"]) == 1
    assert await worker.drops.draws.announce() == 0
    won = [e["data"] for e in await events(worker, "drop.won.v1")]
    assert sorted((w["entry_id"], w["rolled_over"], w["rank"]) for w in won) == sorted(
        [(order[0], False, 1), (order[1], False, 2), (order[2], True, 3)])
    notify = worker.consumer("notifications")
    await notify.handle_batch(await events(worker, "drop.won.v1"))
    async with worker.db.read() as conn:
        told = (await conn.execute(sa.text(
            "SELECT recipient FROM notifications WHERE reason = 'drop_won'"))).scalars()
        assert sorted(told) == sorted([first, second, third])


async def test_one_entry_per_identity_and_bad_input_changes_nothing(
        setup: tuple[FastAPI, httpx.AsyncClient, Container]) -> None:
    app, client, _ = setup
    http = (app, client)
    await stocked(http, "dup", {"dup-1": 3, "dup-2": 3})
    closes = soon(30)
    drop = await schedule(http, skus=["dup-1"], starts_at=closes.isoformat(), mode="draw",
                          entries_close_at=closes.isoformat(), draw_winners=1)
    card = "card-fp-0123456789"
    mine = await entered(http, drop["id"], "d1", fingerprint=card)
    assert await entered(http, drop["id"], "d1", fingerprint=card) == mine
    dup = refused(await enter(http, drop["id"], "d2", fingerprint=card), 409,
                  "drop-entry-duplicate", "fingerprint")
    assert dup["drop_id"] == drop["id"]
    other = await entered(http, drop["id"], "d2", fingerprint="card-fp-9876543210")
    # Staff (the storefront's service) enter for a customer; the same customer: same entry.
    for_d1 = await client.post(f"/v1/drops/{drop['id']}/entries", json={"customer_id": "d1"},
                               headers=auth(app, Role.SERVICE))
    assert for_d1.status_code == 201 and for_d1.json()["entry"] == mine
    # No proof of work: held for review, kept out of the draw, and it says so.
    bare = await client.post(f"/v1/drops/{drop['id']}/entries", json={},
                             headers={**auth(app, Role.CUSTOMER, "d3"), **BROWSER_HEADERS})
    assert bare.status_code == 201 and bare.json()["held_for_review"] is True, bare.text
    assert (await standing(http, drop["id"], bare.json()["entry"], "d3"))["status"] == "held"
    # Staff see it with its reasons, and refuse it: it says so, and stays out of the draw.
    staff = auth(app, Role.MERCHANDISER)
    held = (await client.get(f"/v1/drops/{drop['id']}/held", headers=staff)).json()["held"]
    assert [(h["kind"], h["id"], h["customer_id"]) for h in held] == [
        ("entry", bare.json()["entry"], "d3")]
    decided = await client.post(f"/v1/drops/{drop['id']}/held/d3", json={"decision": "refuse"},
                                headers=staff)
    assert decided.status_code == 200 and decided.json()["decision"] == "refuse", decided.text
    assert (await standing(http, drop["id"], bare.json()["entry"], "d3"))["status"] == "refused"
    # A customer enters for itself only.
    assert (await client.post(f"/v1/drops/{drop['id']}/entries", json={"customer_id": "d9"},
                              headers=auth(app, Role.CUSTOMER, "d1"))).status_code == 403

    # A forged entry id, another's entry, a draw before the close: clear refusals.
    refused(await client.get(f"/v1/drops/{drop['id']}/entries/{new_id()}",
                             headers=auth(app, Role.CUSTOMER, "d1")), 404,
            "drop-entry-unknown", "entry")
    assert (await client.get(f"/v1/drops/{drop['id']}/entries/{other}",
                             headers=auth(app, Role.CUSTOMER, "d1"))).status_code == 403
    refused(await draw(http, drop["id"]), 409, "drop-not-drawn", "draw")
    assert (await draw(http, drop["id"])).status_code == 409  # still nothing stored
    # A drop of another mode takes no entries.
    fc = await schedule(http, skus=["dup-2"], starts_at=soon(30).isoformat(),
                        mode="first_come")
    refused(await enter(http, fc["id"], "d1"), 409, "drop-entries-closed", "entries_close_at")
    async with app.state.drops.db.read() as conn:
        rows = (await conn.execute(sa.select(store.drop_entries.c.customer_id))).scalars()
        assert sorted(rows) == ["d1", "d2", "d3"]


@pytest.mark.parametrize(("change", "field"), [
    ({"entries_close_at": None}, "entries_close_at"),
    ({"entries_close_at": "+1"}, "entries_close_at"),  # after the start
    ({"draw_winners": 0}, "draw_winners"),
    ({"claim_seconds": 0}, "claim_seconds"),
    ({"mode": "queue", "admit_per_second": 5}, "entries_close_at"),  # entries for a queue
])
async def test_bad_draw_drops_are_422_naming_the_field(
        setup: tuple[FastAPI, httpx.AsyncClient, Container], change: dict[str, Any],
        field: str) -> None:
    app, client, _ = setup
    http = (app, client)
    await stocked(http, "bad", {"bad-1": 1})
    starts = soon(60)
    body = {"skus": ["bad-1"], "starts_at": starts.isoformat(), "mode": "draw",
            "entries_close_at": soon(30).isoformat(), **change}
    if body.get("entries_close_at") == "+1":
        body["entries_close_at"] = soon(61).isoformat()
    answer = await client.post("/v1/drops", json=body, headers=auth(app, Role.MERCHANDISER))
    refused(answer, 422, "validation-error", field)
    assert (await reserve(http, "c1", "bad-1")).status_code == 201  # nothing was scheduled


async def test_a_batch_of_reservations_reads_the_drawn_drops_once(
        setup: tuple[FastAPI, httpx.AsyncClient, Container]) -> None:
    """The drops-claims consumer reads the drawn drops once for a batch of inventory's
    reservations, not once a reservation (most are of no drop)."""
    app, client, worker = setup
    http = (app, client)
    await stocked(http, "few", {"few-1": 10})
    for i in range(3):
        assert (await reserve(http, f"few-{i}", "few-1")).status_code == 201
    batch = await events(worker, "reservation.created.v1")
    assert len(batch) == 3
    with counting(worker.db) as seen:
        await worker.consumer("drops-claims").handle_batch(batch)
    assert len([s for s in seen if " FROM drops" in " ".join(s.split())]) == 1
