"""Experiments against the real database: a started experiment assigns shoppers and logs their
first exposure, another process sees a start or stop within its refresh, conversions after
exposure are attributed through the real consumer (and those before are not), results count
them; the routes validate, authorise and change nothing on a bad request."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from instock.app import Container, create_app
from instock.experiments import model, store
from instock.experiments.model import Kind, Status, Unit, Variant
from instock.experiments.service import ExperimentsService
from instock.orders.events import OrderLineData, OrderPaid
from instock.platform.auth import Role
from instock.platform.bus.envelope import envelope
from instock.platform.bus.outbox import outbox
from instock.platform.db import Database, utcnow
from instock.platform.errors import PROBLEM_JSON, Conflict, NotFound, ValidationFailed
from instock.recommendations.events import BehaviourRecorded
from tests.integration.helpers import counting
from tests.support import make_settings

HALVES = [Variant("control", 0.5), Variant("hybrid", 0.5, {"model": "hybrid"})]


async def started(c: Container, variants: list[Variant] | None = None,
                  name: str = "recs") -> str:
    experiment = await c.experiments.create(name, Unit.CUSTOMER, variants or HALVES)
    await c.experiments.start(experiment.id)
    return experiment.id


def behaviour(kind: str, at: datetime, customer: str | None = None,
              session: str | None = None) -> dict[str, Any]:
    return envelope(BehaviourRecorded(
        event_id=f"{kind}-{customer}-{session}-{at.timestamp()}", kind=kind,  # type: ignore[arg-type]
        session_id=session, customer_id=customer, product_id="p1", sku=None, query=None,
        attribute=None, value=None, occurred_at=at), None)


def paid(customer: str | None, at: datetime) -> dict[str, Any]:
    return envelope(OrderPaid(
        order_id=f"o-{customer}-{at.timestamp()}", version=2, channel="web",
        customer_id=customer, external_id=None, status="paid", currency="EUR",
        total=Decimal("10"), reason="", lines=[OrderLineData(sku="s", quantity=1,
                                                              unit_price=Decimal("10"))]),
        None, time=at.isoformat())


async def exposures(c: Container, experiment_id: str) -> dict[str, tuple[str, datetime]]:
    async with c.db.read() as conn:
        rows = await conn.execute(sa.select(store.exposures)
                                  .where(store.exposures.c.experiment_id == experiment_id))
        return {r.subject: (r.variant, r.exposed_at) for r in rows}


async def conversions(c: Container, experiment_id: str) -> set[tuple[str, str, str]]:
    async with c.db.read() as conn:
        rows = await conn.execute(sa.select(store.conversions)
                                  .where(store.conversions.c.experiment_id == experiment_id))
        return {(r.subject, r.kind, r.variant) for r in rows}


# -- assignment and exposures ----------------------------------------------------------------


async def test_nothing_is_assigned_until_an_experiment_runs(container: Container) -> None:
    draft = await container.experiments.create("draft", Unit.SESSION, HALVES)
    assert await container.experiments.assign("s1") is None
    await container.experiments.start(draft.id)
    got = await container.experiments.assign("s1")
    assert got is not None and got.experiment_id == draft.id
    await container.experiments.stop(draft.id)
    assert await container.experiments.assign("s1") is None


async def test_a_started_experiment_assigns_stably_and_logs_first_exposures(
        container: Container) -> None:
    experiment_id = await started(container)
    subjects = [f"c{i}" for i in range(400)]
    first = {s: await container.experiments.assign(s) for s in subjects}
    assert all(a is not None and a.experiment_id == experiment_id for a in first.values())
    for s in subjects:  # the same subject gets the same variant, each call
        again = await container.experiments.assign(s)
        assert again is not None and again.variant == first[s].variant  # type: ignore[union-attr]
        assert again.variant == model.assign(experiment_id, s, HALVES).name
    hybrid = next(a for a in first.values() if a is not None and a.variant == "hybrid")
    assert hybrid.config == {"model": "hybrid"}
    counts = Counter(a.variant for a in first.values() if a is not None)
    assert set(counts) == {"control", "hybrid"} and 120 < counts["hybrid"] < 280

    assert await exposures(container, experiment_id) == {}  # queued, not written yet
    await container.experiments.flush()
    logged = await exposures(container, experiment_id)
    assert {s: v for s, (v, _) in logged.items()} == {
        s: a.variant for s, a in first.items() if a is not None}

    # A later exposure (another process, a restart) keeps the first one's time.
    other = ExperimentsService(container.db, container.experiments.models,
                               container.experiments.stored_actions)
    await other.assign("c0")
    await other.flush()
    assert (await exposures(container, experiment_id))["c0"] == logged["c0"]


async def test_a_batch_the_database_refused_is_written_with_the_next_one(
        container: Container, tmp_path: Path) -> None:
    experiment_id = await started(container)
    await container.experiments.assign("c1")
    experiments, working = container.experiments, container.experiments.db
    experiments.db = Database(f"sqlite+aiosqlite:///{tmp_path / 'no-tables.db'}")
    try:
        with pytest.raises(sa.exc.OperationalError):
            await experiments.flush()
    finally:
        await experiments.db.dispose()
        experiments.db = working
    await experiments.assign("c2")
    await experiments.flush()
    assert set(await exposures(container, experiment_id)) == {"c1", "c2"}


async def test_another_process_sees_a_start_and_a_stop_within_its_refresh(
        container: Container) -> None:
    other = ExperimentsService(container.db, container.experiments.models,
                               container.experiments.stored_actions, refresh_seconds=0.1)
    assert await other.assign("c1") is None
    experiment_id = await started(container)

    async def eventually(expected: str | None) -> None:
        async with asyncio.timeout(3):
            while True:
                got = await other.assign("c1")
                if (got.experiment_id if got else None) == expected:
                    return
                await asyncio.sleep(0.02)

    await eventually(experiment_id)
    await container.experiments.stop(experiment_id)
    await eventually(None)


async def test_the_experiment_started_first_applies_when_several_run(
        container: Container) -> None:
    first = await started(container, name="first")
    await started(container, name="second")
    got = await container.experiments.assign("c1")
    assert got is not None and got.experiment_id == first


async def test_subjects_that_cannot_be_stored_are_left_out(container: Container) -> None:
    await started(container)
    assert await container.experiments.assign("x" * 129) is None
    assert await container.experiments.assign("") is None
    assert await container.experiments.assign("x" * 128) is not None


# -- attribution ------------------------------------------------------------------------------


async def test_conversions_after_exposure_are_attributed_once_and_before_are_not(
        container: Container) -> None:
    experiment_id = await started(container)
    before = utcnow() - timedelta(minutes=5)
    alice = await container.experiments.assign("alice")  # exposed as a customer
    bob = await container.experiments.assign("sess-bob")  # exposed as an anonymous session
    await container.experiments.flush()
    assert alice is not None and bob is not None
    after = utcnow() + timedelta(seconds=1)
    consumer = container.consumer("experiment-conversions")

    outcomes = [await consumer.handle(e) for e in [
        behaviour("click", before, customer="alice"),  # before exposure: not counted
        behaviour("view", after, customer="alice"),  # a view is no conversion
        behaviour("click", after, customer="alice"),
        behaviour("click", after + timedelta(seconds=5), customer="alice"),  # once per kind
        behaviour("add_to_cart", after, customer="bob", session="sess-bob"),  # by session
        behaviour("click", after, customer="carol"),  # never exposed
        paid("alice", after),
        paid(None, after),  # a guest's order names no one
    ]]
    # a view and a guest's order cannot convert: ignored without a transaction
    assert outcomes == ["applied", "ignored", *["applied"] * 5, "ignored"]
    assert await conversions(container, experiment_id) == {
        ("alice", "click", alice.variant), ("alice", "purchase", alice.variant),
        ("sess-bob", "add_to_cart", bob.variant)}
    # The bus delivering an event again changes nothing.
    assert await consumer.handle(paid("alice", after)) == "applied"  # a new event id
    assert len(await conversions(container, experiment_id)) == 3


async def test_an_action_handled_before_its_exposure_was_written_is_attributed_by_the_flush(
        container: Container) -> None:
    """Exposures are written in batches; a click right after the list can reach the consumer
    first. The flush then attributes it from the stored behaviour, once; a click before the
    exposure, and one of a shopper never exposed, still count for nothing."""
    experiment_id = await started(container)
    early = utcnow() - timedelta(minutes=5)
    await container.recommendations.record([
        {"kind": "click", "session_id": "sess-dan", "product_id": "p1", "occurred_at": early}])
    dan = await container.experiments.assign("s:sess-dan")  # as the engine keys a session
    assert dan is not None
    await container.recommendations.record([
        {"kind": "click", "session_id": "sess-dan", "product_id": "p1"},
        {"kind": "add_to_cart", "customer_id": "erin", "product_id": "p1"}])  # never exposed
    consumer = container.consumer("experiment-conversions")
    clicked = behaviour("click", utcnow(), session="sess-dan")
    assert await consumer.handle(clicked) == "applied"  # nothing to attribute to yet
    assert await conversions(container, experiment_id) == set()

    await container.experiments.flush()
    assert await conversions(container, experiment_id) == {("s:sess-dan", "click", dan.variant)}
    await consumer.handle(clicked)  # heard again after the flush: still once
    await container.experiments.flush()
    assert len(await conversions(container, experiment_id)) == 1


async def test_subjects_keyed_as_the_recommendation_engine_keys_shoppers_are_attributed(
        container: Container) -> None:
    experiment_id = await started(container)
    for subject in ("c:dora", "s:sess-eve"):  # recommendations.engine.subject_of's keys
        await container.experiments.assign(subject)
    await container.experiments.flush()
    consumer = container.consumer("experiment-conversions")
    after = utcnow() + timedelta(seconds=1)
    await consumer.handle(behaviour("click", after, customer="dora", session="sess-dora"))
    await consumer.handle(behaviour("add_to_cart", after, session="sess-eve"))
    await consumer.handle(paid("dora", after))
    assert {(s, k) for s, k, _ in await conversions(container, experiment_id)} == {
        ("c:dora", "click"), ("c:dora", "purchase"), ("s:sess-eve", "add_to_cart")}


async def test_conversions_after_the_experiment_stopped_do_not_count(
        container: Container) -> None:
    experiment_id = await started(container)
    await container.experiments.assign("alice")
    await container.experiments.flush()
    await container.experiments.stop(experiment_id)
    consumer = container.consumer("experiment-conversions")
    await consumer.handle(behaviour("click", utcnow() + timedelta(seconds=1),
                                    customer="alice"))
    assert await conversions(container, experiment_id) == set()


async def test_results_count_exposed_and_converting_subjects_per_variant(
        container: Container) -> None:
    experiment_id = await started(container)
    subjects = [f"c{i}" for i in range(60)]
    assigned = {s: await container.experiments.assign(s) for s in subjects}
    await container.experiments.flush()
    consumer = container.consumer("experiment-conversions")
    after = utcnow() + timedelta(seconds=1)
    clickers = subjects[::2]
    for s in clickers:
        await consumer.handle(behaviour("click", after, customer=s))
    results = await container.experiments.results(experiment_id)
    by_name = {r.name: r for r in results.variants}
    for name in ("control", "hybrid"):
        exposed = sum(1 for a in assigned.values() if a is not None and a.variant == name)
        clicked = sum(1 for s in clickers if assigned[s].variant == name)  # type: ignore[union-attr]
        clicks = by_name[name].kinds[0]
        assert (by_name[name].exposed, clicks.kind, clicks.converted) == (
            exposed, Kind.CLICK, clicked)
        assert clicks.comparison.rate_variant == pytest.approx(clicked / exposed)
    rate_c = by_name["control"].kinds[0].comparison.rate_variant
    rate_v = by_name["hybrid"].kinds[0].comparison.rate_variant
    assert rate_c and rate_v is not None
    assert by_name["hybrid"].kinds[0].comparison.uplift == pytest.approx(
        (rate_v - rate_c) / rate_c)
    assert by_name["control"].is_control and not by_name["hybrid"].is_control


# -- the service's rules ----------------------------------------------------------------------


async def test_starts_and_stops_follow_the_status_machine_and_publish_events(
        container: Container) -> None:
    experiments = container.experiments
    draft = await experiments.create("x", Unit.CUSTOMER, HALVES)
    with pytest.raises(Conflict):
        await experiments.stop(draft.id)
    await experiments.start(draft.id)
    with pytest.raises(Conflict):
        await experiments.start(draft.id)
    stopped = await experiments.stop(draft.id)
    assert stopped.status is Status.STOPPED and (await experiments.get(draft.id)) == stopped
    with pytest.raises(NotFound):
        await experiments.start("0190aaaa-0000-7000-8000-000000000000")
    async with container.db.read() as conn:
        rows = await conn.execute(sa.select(outbox.c.type, outbox.c.subject)
                                  .where(outbox.c.type.like("experiment.%"))
                                  .order_by(outbox.c.created_at, outbox.c.id))
        assert [(r.type, r.subject) for r in rows] == [
            ("experiment.started.v1", draft.id), ("experiment.stopped.v1", draft.id)]


async def test_an_invalid_experiment_is_refused_naming_the_field(container: Container) -> None:
    with pytest.raises(ValidationFailed) as raised:
        await container.experiments.create("x", Unit.CUSTOMER, [
            Variant("a", 0.5), Variant("b", 0.5, {"model": "nope"})])
    assert raised.value.extensions["errors"][0]["field"] == "variants[1].config.model"
    assert await container.experiments.list() == []


# -- the routes -------------------------------------------------------------------------------


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(make_settings(database_url, tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        client.headers["Authorization"] = (
            f"Bearer {app.state.tokens.mint(Role.MERCHANDISER, 'merch-1')}")
        yield app, client
    await app.state.experiments.db.dispose()


BODY = {"name": "hybrid vs trending", "unit": "session", "variants": [
    {"name": "control", "share": 0.5, "config": {"model": "trending"}},
    {"name": "hybrid", "share": 0.5,
     "config": {"model": "hybrid", "weights": {"cooccurrence": 0.7, "content": 0.3}}}]}


def problem_fields(response: httpx.Response, status: int = 422) -> set[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    return {e["field"] for e in response.json().get("errors", [])}


async def test_create_start_stop_and_read_results_over_http(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = api
    made = await client.post("/v1/experiments", json=BODY)
    assert made.status_code == 201, made.text
    created = made.json()
    eid = created["id"]
    assert (created["status"], created["unit"], created["started_at"]) == (
        "draft", "session", None)
    assert [(v["name"], v["control"], v["config"]) for v in created["variants"]] == [
        ("control", True, {"model": "trending"}),
        ("hybrid", False, {"model": "hybrid", "weights": {"cooccurrence": 0.7,
                                                          "content": 0.3}})]
    assert [e["id"] for e in (await client.get("/v1/experiments")).json()] == [eid]
    assert (await client.get(f"/v1/experiments/{eid}")).json() == created
    assert (await client.get("/v1/experiments", params={"status": "running"})).json() == []

    assert problem_fields(await client.post(f"/v1/experiments/{eid}/stop"), 409) == set()
    start = await client.post(f"/v1/experiments/{eid}/start")
    assert start.status_code == 200 and start.json()["status"] == "running"
    assert problem_fields(await client.post(f"/v1/experiments/{eid}/start"), 409) == set()

    experiments: ExperimentsService = app.state.experiments
    for s in ("s1", "s2", "s3", "s4"):
        await experiments.assign(s)
    await experiments.flush()
    results = await client.get(f"/v1/experiments/{eid}/results")
    assert results.status_code == 200, results.text
    doc = results.json()
    assert doc["experiment"]["id"] == eid and doc["alpha"] == 0.05
    assert sum(v["exposed"] for v in doc["variants"]) == 4
    control = doc["variants"][0]
    assert control["control"] and control["click"]["converted"] == 0
    assert control["click"]["uplift"] is None and control["click"]["significant"] is False

    stop = await client.post(f"/v1/experiments/{eid}/stop")
    assert stop.status_code == 200 and stop.json()["stopped_at"] is not None


async def test_bad_requests_are_problems_and_change_nothing(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = api
    variants = BODY["variants"]
    assert isinstance(variants, list)
    cases: list[tuple[dict[str, Any], str]] = [
        ({**BODY, "variants": [{**variants[0], "share": 0.6}, variants[1]]}, "variants"),
        ({**BODY, "variants": [variants[0], {**variants[1], "config": {"model": "nope"}}]},
         "variants[1].config.model"),
        ({**BODY, "variants": [variants[0], {**variants[1],
                                             "config": {"weights": {"nope": 1}}}]},
         "variants[1].config.weights.nope"),
        ({**BODY, "variants": [variants[0], {**variants[1], "config": {"modle": "x"}}]},
         "variants[1].config.modle"),
        ({**BODY, "variants": [variants[0], {**variants[1], "name": "control"}]},
         "variants[1].name"),
        ({**BODY, "variants": [variants[0]]}, "variants"),
        ({**BODY, "variants": [variants[0], {**variants[1], "share": 0}]},
         "variants[1].share"),
        ({**BODY, "unit": "household"}, "unit"),
        ({**BODY, "name": ""}, "name"),
        ({**BODY, "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        assert problem_fields(await client.post("/v1/experiments", json=body)) == {field}, body
    assert (await client.get("/v1/experiments")).json() == []  # nothing was made

    unknown = "0190aaaa-0000-7000-8000-000000000000"
    for method, path in [("GET", f"/v1/experiments/{unknown}"),
                         ("POST", f"/v1/experiments/{unknown}/start"),
                         ("POST", f"/v1/experiments/{unknown}/stop"),
                         ("GET", f"/v1/experiments/{unknown}/results")]:
        assert problem_fields(await client.request(method, path), 404) == set()
    assert problem_fields(await client.get("/v1/experiments/not_an_id"), 422) == {
        "experiment_id"}

    customer = {"Authorization": f"Bearer {app.state.tokens.mint(Role.CUSTOMER)}"}
    for method, path in [("GET", "/v1/experiments"), ("POST", "/v1/experiments")]:
        refused = await client.request(method, path, headers=customer, json=BODY)
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith(PROBLEM_JSON)
    assert (await client.get("/v1/experiments")).json() == []


async def test_a_batch_of_conversions_reads_the_exposures_once(container: Container) -> None:
    """The conversions consumer reads the shoppers' exposures once for a batch of events, not
    once an event, and attributes each as it would alone: after its exposure, once a kind."""
    experiment_id = await started(container)
    before = utcnow() - timedelta(minutes=5)
    alice = await container.experiments.assign("alice")
    bob = await container.experiments.assign("sess-bob")
    await container.experiments.flush()
    assert alice is not None and bob is not None
    after = utcnow() + timedelta(seconds=1)
    batch = [behaviour("click", before, customer="alice"),  # before exposure: not counted
             behaviour("click", after, customer="alice"),
             behaviour("click", after + timedelta(seconds=5), customer="alice"),
             behaviour("add_to_cart", after, customer="bob", session="sess-bob"),
             behaviour("click", after, customer="carol"),  # never exposed
             paid("alice", after)]
    with counting(container.db) as seen:
        outcomes = await container.consumer("experiment-conversions").handle_batch(batch)
    assert outcomes == ["applied"] * 6
    assert len([s for s in seen if " FROM experiment_exposures" in " ".join(s.split())]) == 1
    assert await conversions(container, experiment_id) == {
        ("alice", "click", alice.variant), ("alice", "purchase", alice.variant),
        ("sess-bob", "add_to_cart", bob.variant)}
