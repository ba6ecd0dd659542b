"""Failed payment attempts as a bot signal in a drop (issue 24), on a real database with the
payment sandbox as a real process: checkouts it declines publish `order.payment_failed.v1`
with the saga's failure, the `drops-payments` consumer counts them per shopper, and the scoring
of a ticket or a draw entry weighs them: a card tester is held for review, a few declines tip
an otherwise passable ask into review, a shopper without any gets through; staff see why.
Failures older than the window count for nothing and are forgotten."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from instock.app import Container, build, create_app
from instock.drops import bots, store
from instock.orders.events import CheckoutPaymentFailed
from instock.platform.auth import Role
from instock.platform.bus.envelope import envelope
from instock.platform.bus.schemas import validate
from instock.platform.ids import new_id
from tests.integration.test_drop_draws import enter, events
from tests.integration.test_drops import (
    PROBLEMS,
    auth,
    schedule,
    soon,
    standing,
    stocked,
)
from tests.integration.test_drops_bots import BITS, ask, solved
from tests.payment_sandbox import Sandbox, payment_sandbox
from tests.support import BROWSER_HEADERS, make_settings

FAILED = "order.payment_failed.v1"
HEADLESS = {**BROWSER_HEADERS,
            "User-Agent": BROWSER_HEADERS["User-Agent"].replace("Chrome/", "HeadlessChrome/")}
Setup = tuple[FastAPI, httpx.AsyncClient, Container]


@pytest.fixture(scope="module")
def running_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with payment_sandbox(tmp_path_factory.mktemp("sandbox")) as running:
        yield running


@pytest.fixture
async def setup(database_url: str, tmp_path: Path, running_sandbox: Sandbox
                ) -> AsyncIterator[Setup]:
    """The API paying through the sandbox, and a container on the same database for the
    workers' side (the consumers)."""
    await running_sandbox.reset()
    settings = make_settings(database_url, tmp_path, drop_proof_bits=BITS,
                             payment_provider="sandbox", payments_url=running_sandbox.url,
                             payments_retry_backoff_seconds=0.01)
    app = create_app(settings)
    worker = build(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield app, client, worker
    await worker.close()


async def checkout(setup: Setup, customer: str) -> httpx.Response:
    app, client, _ = setup
    return await client.post("/v1/checkout", headers=auth(app, Role.CUSTOMER, customer),
                             json={"lines": [{"sku": "tee-1", "quantity": 1}]})


async def declined(setup: Setup, customer: str, times: int) -> None:
    for _ in range(times):
        answer = await checkout(setup, customer)
        assert answer.status_code == 402, answer.text
        assert answer.json()["type"] == PROBLEMS + "payment-declined", answer.text


async def test_declined_checkouts_hold_a_card_tester_and_let_a_person_through(
        setup: Setup, running_sandbox: Sandbox) -> None:
    app, client, worker = setup
    http = (app, client)
    await stocked(http, "tee", {"tee-1": 50})
    await stocked(http, "hype", {"hype-1": 10, "raffle-1": 10})

    # The sandbox declines the next 13 authorisations: ten checkouts of the card tester,
    # three of the shopper with an unlucky card; then the person pays.
    await running_sandbox.configure(decline_next=13, decline_code="card_declined")
    await declined(setup, "carder", 10)
    await declined(setup, "unlucky", 3)
    paid = await checkout(setup, "person")
    assert paid.status_code == 201, paid.text

    # Each declined checkout said so once, in fields, with its saga's failure; the paid one not.
    published = await events(worker, FAILED)
    for one in published:
        validate(one)
    assert sorted(e["data"]["customer_id"] for e in published) == ["carder"] * 10 + [
        "unlucky"] * 3
    first = published[0]["data"]
    assert (first["reason"], first["channel"], first["currency"]) == ("card_declined", "web",
                                                                      "EUR")
    assert first["payment_id"] and Decimal(first["amount"]) == Decimal("59.90")
    assert published[0]["subject"] == first["order_id"]

    # The drops context hears them (its consumer, as a worker runs it); a failure heard
    # again, even in another envelope, counts once.
    consumer = worker.consumer("drops-payments")
    assert set(await consumer.handle_batch(published)) == {"applied"}
    assert set(await consumer.handle_batch(
        [{**e, "id": new_id()} for e in published[:3]])) == {"applied"}

    drop = await schedule(http, skus=["hype-1"], starts_at=soon(60), mode="queue",
                          admit_per_second=1000)

    async def take(customer: str, headers: dict[str, str]) -> dict[str, Any]:
        answer = await ask(http, drop["id"], customer, headers=headers,
                           proof=await solved(http, drop["id"], customer))
        assert answer.status_code == 201, answer.text
        place = await standing(http, drop["id"], answer.json()["ticket"], customer)
        assert place.status_code == 200, place.text
        body: dict[str, Any] = place.json()
        return body

    # A person's browser, a proof of work, no failures: through. The card tester, the same
    # browser and proof: held for review on its failures alone.
    assert not (await take("person", BROWSER_HEADERS))["held_for_review"]
    assert (await take("carder", BROWSER_HEADERS))["held_for_review"]
    # A headless browser alone passes; with three declines besides it is held.
    assert not (await take("scripted", HEADLESS))["held_for_review"]
    assert (await take("unlucky", HEADLESS))["held_for_review"]

    staff = auth(app, Role.SUPPORT)
    listed = await client.get(f"/v1/drops/{drop['id']}/held", headers=staff)
    assert listed.status_code == 200, listed.text
    verdicts = {h["customer_id"]: h["verdict"] for h in listed.json()["held"]}
    assert set(verdicts) == {"carder", "unlucky"}
    assert [(r["rule"], r["weight"]) for r in verdicts["carder"]["reasons"]] == [
        ("failed-payments", 20), ("many-failed-payments", 25)]
    assert verdicts["carder"]["score"] == 45
    assert {r["rule"] for r in verdicts["unlucky"]["reasons"]} == {"failed-payments",
                                                                   "headless-browser"}
    assert verdicts["unlucky"]["reasons"][-1]["why"] == (
        "3 or more failed payment attempts in the last day")

    # A draw's entries are scored the same way.
    closes = soon(60)
    raffle = await schedule(http, skus=["raffle-1"], starts_at=closes.isoformat(), mode="draw",
                            entries_close_at=closes.isoformat())
    for customer, held in (("person", False), ("carder", True)):
        entry = await enter(http, raffle["id"], customer)
        assert entry.status_code == 201, entry.text
        assert entry.json()["held_for_review"] is held, (customer, entry.text)


async def test_failures_older_than_the_window_count_for_nothing_and_are_forgotten(
        setup: Setup) -> None:
    app, client, worker = setup
    http = (app, client)
    now = datetime.now(UTC)
    window = bots.FAILED_PAYMENTS_WINDOW

    def failed(order: str, customer: str | None, at: datetime) -> dict[str, Any]:
        return envelope(CheckoutPaymentFailed(
            order_id=order, customer_id=customer, channel="web", payment_id=f"pay-{order}",
            reason="card_declined", amount=Decimal("59.90"), currency="EUR"), None,
            time=at.isoformat())

    # Twelve failures a day and an hour ago, one of a guest: published as orders would,
    # through the real consumer.
    stale = [failed(f"old-{n}", "lapsed", now - window - timedelta(hours=1)) for n in range(12)]
    consumer = worker.consumer("drops-payments")
    assert await consumer.handle_batch([*stale, failed("guest", None, now)]) == [
        "applied"] * 12 + ["ignored"]
    await stocked(http, "hype", {"hype-1": 10})
    drop = await schedule(http, skus=["hype-1"], starts_at=soon(60), mode="queue",
                          admit_per_second=1000)
    answer = await ask(http, drop["id"], "lapsed", headers=BROWSER_HEADERS,
                       proof=await solved(http, drop["id"], "lapsed"))
    assert answer.status_code == 201, answer.text
    assert not (await standing(http, drop["id"], answer.json()["ticket"],
                               "lapsed")).json()["held_for_review"]

    # A fresh failure counts (one is below the rule) and prunes the stale ones.
    assert await consumer.handle_batch([failed("new", "lapsed", now)]) == ["applied"]
    async with worker.db.read() as conn:
        kept = (await conn.execute(sa.select(store.drop_payment_failures.c.order_id).where(
            store.drop_payment_failures.c.customer_id == "lapsed"))).scalars().all()
    assert kept == ["new"]

    # They are the shopper's personal data: exported, and gone on erasure.
    exported = await worker.drops.export_subject("lapsed")
    assert [row["order_id"] for row in exported["drop_payment_failures"]] == ["new"]
    await worker.drops.erase_subject("lapsed", "anon-1")
    assert (await worker.drops.export_subject("lapsed"))["drop_payment_failures"] == []
    async with worker.db.read() as conn:
        assert await store.payment_failures(conn, "anon-1", now - window) == 0
