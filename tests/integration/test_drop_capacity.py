"""Admission by measured checkout capacity (issue 24): a capacity drop whose admitted shoppers
get through checkout quickly is given a higher rate than one whose shoppers stall in it; two
containers on one database (each with its own pool, as two processes have) measuring at once
store one rate per moment and count the same admissions; bad input is refused and stores
nothing. The shoppers are real: tickets with the proof of work, passes, reservations through
the gate, commits; inventory's events reach the drops consumer as a worker hands them over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from instock.app import Container, build, create_app
from instock.drops import model, store
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from instock.workers import worker_duties
from tests.integration.helpers import counting
from tests.integration.test_drops import (
    PROBLEMS,
    PROOF_BITS,
    auth,
    reserve,
    schedule,
    soon,
    standing,
    stocked,
    ticket,
    until,
)
from tests.support import make_settings

PERIOD = 0.5  # seconds between a capacity drop's possible changes of rate
TICK = 0.25  # the rooms' tick: a change is written max(1 s, 2 ticks) ahead of its moment
SHOPPERS = 6
Setup = tuple[FastAPI, httpx.AsyncClient, Container, Container]


@pytest.fixture
async def setup(database_url: str, tmp_path: Path) -> AsyncIterator[Setup]:
    settings = make_settings(database_url, tmp_path, drop_proof_bits=PROOF_BITS,
                             drop_capacity_seconds=PERIOD, drop_room_tick_seconds=TICK)
    app = create_app(settings)
    workers = build(settings), build(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield app, client, *workers
    for worker in workers:
        await worker.close()


async def hand_over(worker: Container, seen: set[str]) -> None:
    """Inventory's reservation events not handed over yet, to the drops-checkouts consumer."""
    async with worker.db.read() as conn:
        found = await conn.execute(sa.select(outbox.c.envelope).order_by(
            outbox.c.created_at, outbox.c.id))
        fresh = [e for e in found.scalars()
                 if e["type"].startswith("reservation.") and e["id"] not in seen]
    seen.update(e["id"] for e in fresh)
    if fresh:
        await worker.consumer("drops-checkouts").handle_batch(fresh)


async def segments(worker: Container, drop_id: str) -> list[Any]:
    async with worker.db.read() as conn:
        return list(await conn.execute(sa.select(store.drop_rate_segments).where(
            store.drop_rate_segments.c.drop_id == drop_id)))


async def test_shoppers_who_get_through_raise_the_rate_and_two_processes_agree(
        setup: Setup) -> None:
    app, client, one, two = setup
    http = (app, client)
    await stocked(http, "cap", {"cap-fast": 100, "cap-slow": 100})
    starts = soon(4.0)
    drops = {sku: await schedule(http, skus=[sku], starts_at=starts.isoformat(), mode="queue",
                                 admission="capacity", admit_per_second=4.0,
                                 max_admit_per_second=40.0)
             for sku in ("cap-fast", "cap-slow")}
    assert drops["cap-fast"]["admission"] == "capacity"
    assert drops["cap-fast"]["max_admit_per_second"] == 40.0
    assert drops["cap-fast"]["current_admit_per_second"] == 4.0
    tickets = {sku: {f"{sku}-{i}": (await ticket(http, drop["id"], f"{sku}-{i}"))["ticket"]
                     for i in range(SHOPPERS)} for sku, drop in drops.items()}
    await until(starts)

    # Two processes measure at once, again and again, while the shoppers go through: those
    # of cap-fast commit their reservation at once, those of cap-slow leave it open.
    seen: set[str] = set()
    reserved: set[str] = set()
    written = 0
    deadline = starts + timedelta(seconds=PERIOD * 3)
    while datetime.now(UTC) < deadline:
        for sku, by_customer in tickets.items():
            for customer, token in by_customer.items():
                if customer in reserved:
                    continue
                got = (await standing(http, drops[sku]["id"], token, customer)).json()
                if not got["admitted"]:
                    continue
                made = await reserve(http, customer, sku, got["pass"])
                assert made.status_code == 201, made.text
                reserved.add(customer)
                if sku == "cap-fast":
                    done = await client.post(f"/v1/reservations/{made.json()['id']}/commit",
                                             headers=auth(app, Role.CUSTOMER, customer))
                    assert done.status_code == 200, done.text
        await hand_over(one, seen)
        written += sum(await asyncio.gather(one.drops.capacity.recompute(),
                                            two.drops.capacity.recompute()))
        await asyncio.sleep(PERIOD / 4)

    fast = await segments(one, drops["cap-fast"]["id"])
    slow = await segments(one, drops["cap-slow"]["id"])
    assert fast and slow, "each capacity drop had its rate measured"
    assert written == len(fast) + len(slow)  # one segment per drop and moment, whoever wrote
    assert all(row.from_at > row.written_at for row in [*fast, *slow])  # never in the past
    # Stalled: the floor, a tenth of the start. Got through: 1.5 x what did, above the floor
    # (how far above depends on how fast this test's shoppers were: the rule's numbers are
    # the unit tests').
    assert all(row.rate == pytest.approx(0.4) for row in slow)
    assert all(row.through > 0 for row in fast)
    assert min(row.rate for row in fast) > 0.4

    # Both processes read the same segments: the same admissions at any moment; and the API
    # shows the rate once its first change has come.
    first = max(min(row.from_at for row in fast), min(row.from_at for row in slow))
    await until(first)
    for drop in drops.values():
        read = [await worker.drops.get(drop["id"]) for worker in (one, two)]
        for moment in (first, first + timedelta(seconds=7.3), first + timedelta(minutes=5)):
            assert model.admitted_through(read[0], moment) == model.admitted_through(
                read[1], moment)
    rates = {sku: (await client.get(f"/v1/drops/{drop['id']}", headers=auth(
        app, Role.MERCHANDISER))).json()["current_admit_per_second"]
        for sku, drop in drops.items()}
    assert rates["cap-fast"] > rates["cap-slow"] == pytest.approx(0.4)
    later = max(row.from_at for row in [*fast, *slow]) + timedelta(minutes=2)
    fast_drop = await one.drops.get(drops["cap-fast"]["id"])
    slow_drop = await one.drops.get(drops["cap-slow"]["id"])
    assert model.admitted_through(fast_drop, later) > model.admitted_through(slow_drop, later)


async def test_a_fixed_rate_drop_is_never_measured_and_keeps_its_interface(
        setup: Setup) -> None:
    app, client, one, _ = setup
    http = (app, client)
    await stocked(http, "fix", {"fix-1": 10})
    drop = await schedule(http, skus=["fix-1"], starts_at=soon(-5).isoformat(), mode="queue",
                          admit_per_second=3.0)
    # It answers as a drop always has: no admission fields.
    assert not {"admission", "max_admit_per_second", "current_admit_per_second"} & set(drop)
    assert await one.drops.capacity.recompute() == 0
    assert await segments(one, drop["id"]) == []


@pytest.mark.parametrize(("body", "field"), [
    ({"mode": "queue", "admission": "measured", "admit_per_second": 2}, "admission"),
    ({"mode": "first_come", "admission": "capacity"}, "admission"),
    ({"mode": "queue", "admission": "capacity", "admit_per_second": 5,
      "max_admit_per_second": 2}, "max_admit_per_second"),
    ({"mode": "queue", "admit_per_second": 5, "max_admit_per_second": 20},
     "max_admit_per_second"),
    ({"mode": "queue", "admission": "capacity", "admit_per_second": 5,
      "max_admit_per_second": 0}, "max_admit_per_second"),
    ({"mode": "queue", "admission": "capacity", "admit_per_second": 5,
      "max_admit_per_second": 1e9}, "max_admit_per_second"),
])
async def test_bad_capacity_drops_are_422_naming_the_field_and_store_nothing(
        setup: Setup, body: dict[str, Any], field: str) -> None:
    app, client, one, _ = setup
    await stocked((app, client), "bad", {"bad-1": 1})
    answer = await client.post("/v1/drops", headers=auth(app, Role.MERCHANDISER), json={
        "skus": ["bad-1"], "starts_at": soon(60).isoformat(), **body})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"].startswith(PROBLEMS)
    assert field in answer.text
    async with one.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(
            store.drops))).scalar_one() == 0


async def test_schedule_drop_in_graphql_takes_capacity_admission(setup: Setup) -> None:
    app, client, _, _ = setup
    await stocked((app, client), "gql", {"gql-1": 1})
    query = """mutation($input: DropInput!) { scheduleDrop(input: $input) {
      id admission maxAdmitPerSecond currentAdmitPerSecond admitPerSecond } }"""
    given = {"skus": ["gql-1"], "startsAt": soon(60).isoformat(), "mode": "queue",
             "admitPerSecond": 2.0, "admission": "capacity", "maxAdmitPerSecond": 8.0}
    answer = await client.post("/graphql", headers=auth(app, Role.MERCHANDISER),
                               json={"query": query, "variables": {"input": given}})
    assert answer.status_code == 200, answer.text
    made = answer.json()["data"]["scheduleDrop"]
    assert (made["admission"], made["maxAdmitPerSecond"], made["currentAdmitPerSecond"]) == (
        "capacity", 8.0, 2.0)
    given["maxAdmitPerSecond"] = 1.0
    refused = (await client.post("/graphql", headers=auth(app, Role.MERCHANDISER),
                                 json={"query": query, "variables": {"input": given}})).json()
    assert refused["data"] is None
    assert "max_admit_per_second" in str(refused["errors"])


async def test_the_workers_measure_only_when_their_setting_says(
        database_url: str, tmp_path: Path) -> None:
    for on in (False, True):
        worker = build(make_settings(database_url, tmp_path, run_drop_capacity=on))
        duties = worker_duties(worker)
        names = {duty.cr_code.co_name for duty in duties}
        for duty in duties:
            duty.close()  # none started
        await worker.close()
        assert ("run_drop_capacity" in names) is on


async def test_a_batch_of_reservations_reads_the_capacity_drops_once(setup: Setup) -> None:
    """The drops-checkouts consumer reads the admitting drops once for a batch of inventory's
    events, not once an event, and still picks each event's drop by its SKUs and moment:
    the admitted shopper's checkout is counted, the others' reservations (of no drop) not."""
    app, client, one, _ = setup
    http = (app, client)
    await stocked(http, "capb", {"capb-drop": 10, "capb-plain": 10})
    starts = soon(2.0)
    drop = await schedule(http, skus=["capb-drop"], starts_at=starts.isoformat(), mode="queue",
                          admission="capacity", admit_per_second=4.0)
    token = (await ticket(http, drop["id"], "capb-0"))["ticket"]
    await until(starts)
    while not (got := (await standing(http, drop["id"], token, "capb-0")).json())["admitted"]:
        await asyncio.sleep(0.1)
    assert (await reserve(http, "capb-0", "capb-drop", got["pass"])).status_code == 201
    for i in range(4):
        assert (await reserve(http, f"capb-plain-{i}", "capb-plain")).status_code == 201
    async with one.db.read() as conn:
        found = await conn.execute(sa.select(outbox.c.envelope))
        batch = [e for e in found.scalars() if e["type"] == "reservation.created.v1"]
    assert len(batch) == 5
    with counting(one.db) as seen:
        await one.consumer("drops-checkouts").handle_batch(batch)
    assert len([s for s in seen if " FROM drops" in " ".join(s.split())]) == 1
    async with one.db.read() as conn:
        counted = list(await conn.execute(sa.select(store.drop_checkouts)))
    assert [(row.drop_id, row.ended_at) for row in counted] == [(drop["id"], None)]
