"""Polls over HTTP on a real database (issue 19, item 4): defining, the next poll, answers
(422 and 409 change nothing), results by hand, the answer's event reaching customers' profile
and recommendations' preferences through their real consumers, export and erasure."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from instock.app import Container, create_app
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from instock.polls.store import PERSONAL_TABLES, poll_answers, poll_choices, poll_impressions
from instock.recommendations.store import behaviour_events
from tests.support import make_settings

SIZES = {"id": "size", "text": "Which size do you wear?", "options": [
    {"id": "s", "label": "S", "attributes": {"size": "S"}},
    {"id": "m", "label": "M", "attributes": {"size": "M"}},
    {"id": "l", "label": "L", "attributes": {"size": "L"}}]}
BRANDS = {"id": "brand", "text": "Which brand?", "options": [
    {"id": "acme", "label": "Acme", "attributes": {"brand": "Acme"}},
    {"id": "nova", "label": "Nova", "attributes": {"brand": "Nova", "category": "sneakers"}}]}
POLL = {"title": "Before the drop", "questions": [SIZES, BRANDS], "contexts": ["product_page"]}


def auth(app: FastAPI, role: Role, subject: str = "someone") -> dict[str, str]:
    return {"Authorization": "Bearer " + app.state.tokens.mint(role, subject)}


@pytest.fixture
async def http(database_url: str,
               tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_settings(database_url, tmp_path, poll_minutes_between=30.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield app, client


async def define(app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any] = POLL) -> str:
    response = await client.post("/v1/polls", json=body, headers=auth(app, Role.MERCHANDISER))
    assert response.status_code == 201, response.text
    poll_id: str = response.json()["id"]
    return poll_id


async def answer(client: httpx.AsyncClient, poll_id: str, *choices: tuple[str, str],
                 headers: dict[str, str] | None = None, **who: str) -> httpx.Response:
    return await client.post(f"/v1/polls/{poll_id}/answers", headers=headers or {}, json={
        **who, "answers": [{"question_id": q, "option_id": o} for q, o in choices]})


async def rows(container: Container, table: sa.Table) -> list[Any]:
    async with container.db.read() as conn:
        return list(await conn.execute(sa.select(table)))


async def test_define_read_and_only_merchandisers_define(
        http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = http
    poll_id = await define(app, client)
    got = await client.get(f"/v1/polls/{poll_id}", headers=auth(app, Role.MERCHANDISER))
    assert got.status_code == 200 and got.json()["questions"][1]["options"][1]["attributes"] == {
        "brand": "Nova", "category": "sneakers"}
    denied = await client.post("/v1/polls", json=POLL, headers=auth(app, Role.CUSTOMER, "c1"))
    assert denied.status_code == 403
    anonymous = await client.post("/v1/polls", json=POLL)
    assert anonymous.status_code == 401
    bad = {**POLL, "questions": [{**SIZES, "options": [
        {"id": "x", "label": "X", "attributes": {"shoe_width": "wide"}}, *SIZES["options"]]}]}
    refused = await client.post("/v1/polls", json=bad, headers=auth(app, Role.MERCHANDISER))
    assert refused.status_code == 422
    assert "shoe_width" in refused.json()["errors"][0]["field"]


async def test_next_poll_rules_for_anonymous_sessions(
        http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = http
    assert (await client.get("/v1/polls/next", params={
        "session_id": "s1", "context": "product_page"})).status_code == 204
    first = await define(app, client)
    second = await define(app, client, {**POLL, "title": "Second"})  # newer: shown first
    shown = await client.get("/v1/polls/next", params={"session_id": "s1",
                                                        "context": "product_page"})
    assert shown.status_code == 200 and shown.json()["id"] == second
    again = await client.get("/v1/polls/next", params={"session_id": "s1",
                                                        "context": "product_page"})
    assert again.json()["id"] == second  # a reload shows the same poll
    assert (await answer(client, second, ("size", "m"), session_id="s1")).status_code == 201
    capped = await client.get("/v1/polls/next", params={"session_id": "s1",
                                                         "context": "product_page"})
    assert capped.status_code == 204  # answered, and no other poll within the interval
    other = await client.get("/v1/polls/next", params={"session_id": "s2",
                                                        "context": "product_page"})
    assert other.json()["id"] == second
    assert (await client.get("/v1/polls/next", params={
        "session_id": "s2", "context": "sold_out"})).status_code == 204
    # a customer who answered on one device is not asked again on another
    customer = auth(app, Role.CUSTOMER, "cus-7")
    assert (await answer(client, first, ("size", "s"), headers=customer,
                         session_id="s3")).status_code == 201
    on_phone = await client.get("/v1/polls/next", headers=customer, params={
        "session_id": "s4", "context": "product_page"})
    assert on_phone.json()["id"] == second
    anonymous_naming = await client.get("/v1/polls/next", params={
        "session_id": "s5", "context": "product_page", "customer_id": "cus-7"})
    assert anonymous_naming.status_code == 403


async def test_unknown_option_is_422_naming_the_field_and_stores_nothing(
        http: tuple[FastAPI, httpx.AsyncClient], container: Container) -> None:
    app, client = http
    poll_id = await define(app, client)
    bad = await answer(client, poll_id, ("size", "m"), ("brand", "puma"), session_id="s1")
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["errors"][0]["field"] == "answers[1].option_id"
    unknown_question = await answer(client, poll_id, ("colour", "red"), session_id="s1")
    assert unknown_question.json()["errors"][0]["field"] == "answers[0].question_id"
    assert await rows(container, poll_answers) == [] and await rows(container, poll_choices) == []
    async with container.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
            outbox.c.type == "poll.answered.v1"))).scalar_one() == 0
    assert (await answer(client, "nope", ("size", "m"), session_id="s1")).status_code == 404
    # a second answer by the same session is refused, the first one stands
    assert (await answer(client, poll_id, ("size", "m"), session_id="s1")).status_code == 201
    assert (await answer(client, poll_id, ("size", "l"), session_id="s1")).status_code == 409
    assert len(await rows(container, poll_answers)) == 1


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    root = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((p + z * z / (2 * n) - root) / (1 + z * z / n),
            (p + z * z / (2 * n) + root) / (1 + z * z / n))


async def test_results_match_hand_computed_shares(
        http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = http
    poll_id = await define(app, client)
    picks = ["m", "m", "m", "s", "l", "m", "l", "s"]  # S 2, M 4, L 2 of 8
    for i, size in enumerate(picks):
        choices = [("size", size)] + ([("brand", "nova")] if i < 3 else [])
        assert (await answer(client, poll_id, *choices, session_id=f"r{i}")).status_code == 201
    results = await client.get(f"/v1/polls/{poll_id}/results",
                               headers=auth(app, Role.MERCHANDISER))
    assert results.status_code == 200, results.text
    body = results.json()
    assert body["respondents"] == 8
    size, brand = body["questions"]
    assert size["answers"] == 8 and brand["answers"] == 3
    m = size["options"]["m"]
    assert (m["count"], m["share"]) == (4, 0.5)
    assert (m["ci95_low"], m["ci95_high"]) == pytest.approx(wilson_by_hand(4, 8), abs=1e-9)
    assert wilson_by_hand(4, 8) == pytest.approx((0.2152, 0.7848), abs=1e-4)
    assert size["options"]["s"]["share"] == 0.25
    assert brand["options"]["acme"] == {"count": 0, "share": 0.0, "ci95_low": 0.0,
                                        "ci95_high": pytest.approx(wilson_by_hand(0, 3)[1])}
    curve = body["attributes"]["size"]
    assert {v: s["share"] for v, s in curve.items()} == {"S": 0.25, "M": 0.5, "L": 0.25}
    assert body["attributes"]["category"]["sneakers"]["count"] == 3
    assert (await client.get(f"/v1/polls/{poll_id}/results",
                             headers=auth(app, Role.SERVICE))).status_code == 403


async def test_the_widget_script_and_cross_origin_calls(database_url: str,
                                                       tmp_path: Path) -> None:
    """The widget is served as JavaScript; a page of a listed origin may call the API."""
    app = create_app(make_settings(database_url, tmp_path,
                                   poll_widget_origins="https://shop.example"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        script = await client.get("/widget/polls.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "data-instock-poll" in script.text
        preflight = await client.options("/v1/polls/p1/answers", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        elsewhere = await client.get("/v1/polls/next", headers={"Origin": "https://evil.example"},
                                     params={"session_id": "s1", "context": "sold_out"})
        assert elsewhere.status_code == 204
        assert "access-control-allow-origin" not in elsewhere.headers


async def answered_event(container: Container) -> dict[str, Any]:
    async with container.db.read() as conn:
        envelope: dict[str, Any] = (await conn.execute(sa.select(outbox.c.envelope).where(
            outbox.c.type == "poll.answered.v1"))).scalar_one()
    return envelope


async def test_an_answer_reaches_the_profile_and_recommendations_by_its_event(
        http: tuple[FastAPI, httpx.AsyncClient], container: Container) -> None:
    app, client = http
    poll_id = await define(app, client)
    ann = auth(app, Role.CUSTOMER, "cus-ann")
    put = await client.put("/v1/customers/cus-ann", headers=ann,
                           json={"preferences": {"brand": "Acme"}})
    assert put.status_code == 200
    done = await answer(client, poll_id, ("size", "m"), ("brand", "nova"), headers=ann,
                        session_id="sess-ann")
    assert done.status_code == 201
    envelope = await answered_event(container)
    assert envelope["data"]["customer_id"] == "cus-ann"
    assert envelope["data"]["attributes"] == [
        {"attribute": "size", "value": "M"}, {"attribute": "brand", "value": "Nova"},
        {"attribute": "category", "value": "sneakers"}]
    profiles = container.consumer("customers-poll-answers")
    assert await profiles.handle(envelope) == "applied"
    assert await profiles.handle(envelope) == "duplicate"
    profile = (await client.get("/v1/customers/cus-ann", headers=ann)).json()
    assert profile["preferences"] == {"brand": ["Acme", "Nova"], "size": ["M"],
                                      "category": ["sneakers"]}
    assert profile["version"] == 2
    recs = container.consumer("recs-poll-answers")
    assert await recs.handle(envelope) == "applied"
    stated = sorted((r.attribute, r.value, r.session_id, r.customer_id, r.kind)
                    for r in await rows(container, behaviour_events))
    assert stated == [("brand", "Nova", "sess-ann", "cus-ann", "preference"),
                      ("category", "sneakers", "sess-ann", "cus-ann", "preference"),
                      ("size", "M", "sess-ann", "cus-ann", "preference")]
    async with container.db.read() as conn:
        published = (await conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
            outbox.c.type == "behaviour.recorded.v1"))).scalar_one()
    assert published == 3  # what every process's recommender learns from
    # the profile's events (before and after the answer) add only what the answer did not
    async with container.db.read() as conn:
        profile_events = list((await conn.execute(sa.select(outbox.c.envelope).where(
            outbox.c.type == "customer.profile_updated.v1").order_by(
            outbox.c.created_at))).scalars())
    assert len(profile_events) == 2
    for event in profile_events:
        await container.consumer("recs-profiles").handle(event)
    stated_now = sorted((r.attribute, r.value) for r in await rows(container, behaviour_events))
    assert stated_now == [("brand", "Acme"), ("brand", "Nova"), ("category", "sneakers"),
                          ("size", "M")]


async def test_profile_sizes_and_preferences_become_preference_events_once(
        http: tuple[FastAPI, httpx.AsyncClient], container: Container) -> None:
    app, client = http
    ann = auth(app, Role.CUSTOMER, "cus-p")
    await client.put("/v1/customers/cus-p", headers=ann,
                     json={"sizes": {"tops": "M"}, "preferences": {"brand": ["Nova"]}})
    await client.put("/v1/customers/cus-p", headers=ann,
                     json={"sizes": {"tops": "M", "shoes": "42"}})
    async with container.db.read() as conn:
        envelopes = list((await conn.execute(sa.select(outbox.c.envelope).where(
            outbox.c.type == "customer.profile_updated.v1").order_by(
            outbox.c.created_at))).scalars())
    consumer = container.consumer("recs-profiles")
    for envelope in envelopes:
        assert await consumer.handle(envelope) == "applied"
    stated = sorted((r.attribute, r.value, r.customer_id)
                    for r in await rows(container, behaviour_events))
    assert stated == [("brand", "Nova", "cus-p"), ("size", "42", "cus-p"),
                      ("size", "M", "cus-p")]  # M once, though both versions carry it


async def test_export_and_erase_a_customers_answers(
        http: tuple[FastAPI, httpx.AsyncClient], container: Container) -> None:
    app, client = http
    poll_id = await define(app, client)
    service = auth(app, Role.SERVICE, "storefront")
    assert (await answer(client, poll_id, ("size", "l"), headers=service, session_id="sx",
                         customer_id="cus-x")).status_code == 201
    await client.get("/v1/polls/next", params={"session_id": "sx", "context": "product_page"})
    exported = await container.polls.export_subject("cus-x")
    assert [(a["poll_id"], a["session_id"], a["choices"]) for a in exported["poll_answers"]] == [
        (poll_id, "sx", [{"question_id": "size", "option_id": "l"}])]
    everything = await container.privacy.export("cus-x")  # the lead's registry holds polls
    assert everything["polls"] == exported
    # before logging in, the same person answered another poll as an anonymous session
    other = await define(app, client, {**POLL, "title": "Other"})
    assert (await answer(client, other, ("size", "s"), session_id="sx-early")).status_code == 201
    await container.polls.erase_subject("cus-x", "pseudo-1")
    await container.polls.erase_subject("cus-x", "pseudo-1")  # idempotent
    await container.polls.erase_subject("sx-early", "pseudo-1")  # an alias of theirs
    assert await container.polls.export_subject("cus-x") == {"poll_answers": []}
    assert {"poll_answers", "poll_impressions"} == PERSONAL_TABLES
    answers = await rows(container, poll_answers)
    assert sorted((a.customer_id or "", a.session_id or "") for a in answers) == [
        ("", ""), ("pseudo-1", "")]
    assert all(i.session_id != "sx" for i in await rows(container, poll_impressions))
    results = (await client.get(f"/v1/polls/{poll_id}/results",
                                headers=auth(app, Role.ADMIN))).json()
    assert results["questions"][0]["options"]["l"]["count"] == 1  # still counted


NEXT = """query Next($session: String!) { nextPoll(sessionId: $session, context: "product_page") {
  id title questions { id text options { id label attributes { attribute value } } } } }"""
ANSWER = """mutation Answer($poll: String!, $session: String, $answers: [PollChoiceInput!]!) {
  answerPoll(pollId: $poll, sessionId: $session, answers: $answers) { id pollId } }"""


async def test_polls_in_graphql_for_an_anonymous_session(
        http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = http
    poll_id = await define(app, client)
    shown = (await client.post("/graphql", json={"query": NEXT,
                                                 "variables": {"session": "g1"}})).json()
    assert shown["data"]["nextPoll"]["id"] == poll_id, shown
    assert shown["data"]["nextPoll"]["questions"][1]["options"][1]["attributes"] == [
        {"attribute": "brand", "value": "Nova"}, {"attribute": "category", "value": "sneakers"}]
    bad = (await client.post("/graphql", json={"query": ANSWER, "variables": {
        "poll": poll_id, "session": "g1",
        "answers": [{"questionId": "size", "optionId": "xxl"}]}})).json()
    problem = bad["errors"][0]["extensions"]
    assert (problem["code"], problem["status"]) == ("VALIDATION_ERROR", 422)
    assert problem["errors"][0]["field"] == "answers[0].option_id"
    done = (await client.post("/graphql", json={"query": ANSWER, "variables": {
        "poll": poll_id, "session": "g1",
        "answers": [{"questionId": "size", "optionId": "m"}]}})).json()
    assert done["data"]["answerPoll"]["pollId"] == poll_id, done
    none = (await client.post("/graphql", json={"query": NEXT,
                                                "variables": {"session": "g1"}})).json()
    assert none["data"]["nextPoll"] is None
