"""Back-in-stock mail in waves, end to end: a server process, the SMTP sink process, real mail.

50 subscribers, 5 units restocked, k = 2: the first wave mails the first 10 in subscription
order; after the 5 units sell, the next wave finds the SKU sold out and mails no one; a second
restock mails the next 10, except one who unsubscribed through the one-click link of an
earlier mail. A server killed (SIGKILL) mid-wave, relay and sender with it, leaves no customer
with two different messages: message ids are checked at the sink.
"""

from __future__ import annotations

import collections
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from instock.platform.auth import Role
from instock.platform.db import utcnow
from instock.sandbox.smtp import Received, received
from instock.waitlist.store import waves
from tests.e2e.harness import (
    Database,
    Server,
    ServerFactory,
    client,
    create_location,
    create_product,
    eventually,
    receive,
)
from tests.e2e.sandboxes import start_smtp

SKU, OTHER = "bis-hoodie-m", "bis-cap"


def env(sink: Server, **extra: str) -> dict[str, str]:
    return {"INSTOCK_SMTP_URL": f"smtp://127.0.0.1:{sink.port}",
            "INSTOCK_BACK_IN_STOCK_WAVE_FACTOR": "2",
            # Waves after the first are brought forward by the test (see `next_wave_now`).
            "INSTOCK_BACK_IN_STOCK_WAVE_SECONDS": "3600",
            # No quiet hours: whenever the test runs, the mail goes now (quiet hours: unit and
            # integration tests).
            "INSTOCK_QUIET_HOURS_START": "00:00", "INSTOCK_QUIET_HOURS_END": "00:00",
            "INSTOCK_NOTIFY_TIMEOUT_SECONDS": "1", **extra}


def customer(i: int) -> str:
    return f"bis-c{i:02d}"


def address(i: int) -> str:
    return f"{customer(i)}@example.test"


async def subscribe(api: httpx.AsyncClient, count: int, sku: str) -> None:
    """`count` customers with an email and back-in-stock consent join the wait, one by one
    (their order is the subscription order)."""
    for i in range(count):
        response = await api.put(f"/v1/customers/{customer(i)}", json={
            "email": address(i), "consents": {"back_in_stock_email": True}})
        assert response.status_code == 200, response.text
        response = await api.post("/v1/waitlist", json={"sku": sku, "customer_id": customer(i)})
        assert response.status_code == 201, response.text


async def mail_count(directory: Path, at_least: int) -> list[Received]:
    async def enough() -> list[Received] | None:
        found = received(directory)
        return found if len(found) >= at_least else None
    return await eventually(enough, f"{at_least} messages in the sink", timeout=60)


def recipients(messages: list[Received]) -> list[str]:
    return [str(m.message["To"]) for m in messages]


async def sell(api: httpx.AsyncClient, sku: str, units: int) -> None:
    for _ in range(units):
        response = await api.post("/v1/reservations", json={"lines": [{"sku": sku,
                                                                        "quantity": 1}]})
        assert response.status_code == 201, response.text
        committed = await api.post(f"/v1/reservations/{response.json()['id']}/commit")
        assert committed.status_code == 200, committed.text


async def next_wave_now(database: Database, sku: str) -> None:
    """Bring the SKU's next wave forward to now (instead of waiting out the interval)."""
    assert await database.execute(waves.update().where(waves.c.sku == sku)
                                  .values(next_at=utcnow() - timedelta(seconds=1))) == 1


async def test_back_in_stock_waves_unsubscribe(database: Database, servers: ServerFactory,
                                               tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    sink = await start_smtp(servers, mail)
    server = await servers.start(**env(sink))
    async with client(server.base_url) as api:
        await create_product(api, "bis-prod", [SKU, OTHER])
        await create_location(api, "bis-wh")
        await subscribe(api, 50, SKU)
        # Customer 15 (of the second wave) also waits for another SKU, which comes back first:
        # from that mail they unsubscribe from back-in-stock mail in one click.
        joined = await api.post("/v1/waitlist", json={"sku": OTHER, "customer_id": customer(15)})
        assert joined.status_code == 201, joined.text
        await receive(api, OTHER, "bis-wh", 1)
        [first] = await mail_count(mail, 1)
        assert recipients([first]) == [address(15)]
        assert first.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = urlsplit(str(first.message["List-Unsubscribe"]).strip("<>"))
        assert link.path == "/v1/notifications/unsubscribe"
        async with httpx.AsyncClient(base_url=server.base_url) as anonymous:  # no login
            response = await anonymous.post(f"{link.path}?{link.query}")
        assert response.status_code == 200, response.text
        profile = (await api.get(f"/v1/customers/{customer(15)}")).json()
        assert profile["consents"]["back_in_stock_email"]["granted"] is False

        # 5 units back, k = 2: the first 10 in subscription order.
        await receive(api, SKU, "bis-wh", 5)
        wave_one = (await mail_count(mail, 11))[1:]
        assert sorted(recipients(wave_one)) == [address(i) for i in range(10)]
        assert all(m.message["Subject"] == f"{SKU} is back in stock" for m in wave_one)

        # The 5 units sell; the next wave finds the SKU sold out and ends, telling no one.
        await sell(api, SKU, 5)
        await next_wave_now(database, SKU)
        await eventually(lambda: _no_wave(database, SKU), "the wave ended")
        assert len(received(mail)) == 11
        waiting = await database.scalar(
            "SELECT count(*) FROM waitlist WHERE sku = :sku AND notified_at IS NULL", sku=SKU)
        assert waiting == 40

        # A second restock: the next 10, but customer 15 unsubscribed and gets nothing.
        await receive(api, SKU, "bis-wh", 5)
        await mail_count(mail, 20)
        support = client(server.base_url, Role.SUPPORT, "ann")
        async with support:
            async def suppressed() -> list[dict[str, str]] | None:
                rows = (await support.get("/v1/notifications",
                                          params={"customer_id": customer(15)})).json()
                found = [r for r in rows if r["subject"] == SKU and r["status"] == "suppressed"]
                return found or None
            [row] = await eventually(suppressed, "customer 15's notice suppressed")
        assert row["suppression"] == "unsubscribed"
        everything = received(mail)
        assert sorted(recipients(everything[11:])) == sorted(
            address(i) for i in range(10, 20) if i != 15)
        assert len(everything) == 20
        ids = [m.message_id for m in everything]
        assert len(set(ids)) == len(ids), "a message id arrived twice"

        # Support's view and the metrics say the same.
        async with client(server.base_url, Role.CUSTOMER, customer(0)) as shopper:
            response = await shopper.get("/v1/notifications",
                                         params={"customer_id": customer(0)})
            assert response.status_code == 403
        suppressed_line = ('instock_notifications_total{channel="email",outcome="suppressed",'
                           'reason="unsubscribed"} 1.0')
        metrics = (await api.get("/metrics")).text
        assert 'instock_notifications_total{channel="email",outcome="sent",' \
               'reason="back_in_stock"} 20.0' in metrics
        assert suppressed_line in metrics


async def _no_wave(database: Database, sku: str) -> bool:
    return await database.scalar("SELECT count(*) FROM waitlist_waves WHERE sku = :sku",
                                 sku=sku) == 0


@pytest.mark.slow
async def test_killed_mid_wave_duplicates_no_mail(database: Database, servers: ServerFactory,
                                                  tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    sink = await start_smtp(servers, mail)
    # Paced, so the kill lands while the wave's mail is going out.
    settings = env(sink, INSTOCK_EMAIL_RATE_PER_SECOND="10")
    server = await servers.start(**settings)
    async with client(server.base_url) as api:
        await create_product(api, "kill-prod", [SKU])
        await create_location(api, "kill-wh")
        await subscribe(api, 30, SKU)
        await receive(api, SKU, "kill-wh", 15)  # k = 2: all 30 in one wave
    await mail_count(mail, 5)
    server.sigkill()
    before = len(received(mail))
    again = await servers.restart(server, **settings)
    assert again.alive()

    async def everyone() -> list[Received] | None:
        found = received(mail)
        return found if len(set(recipients(found))) == 30 else None
    found = await eventually(everyone, "all 30 told after the restart", timeout=90)
    ids_by_recipient: dict[str, set[str]] = collections.defaultdict(set)
    for message in found:
        ids_by_recipient[str(message.message["To"])].add(message.message_id)
    assert {to: len(ids) for to, ids in ids_by_recipient.items()} == {
        address(i): 1 for i in range(30)}, "a customer got two different messages"
    assert before < 30, "the kill came after the wave; nothing was tested"
    rows = await database.rows("SELECT status, count(*) AS n FROM notifications GROUP BY status")
    assert rows == [{"status": "sent", "n": 30}]
