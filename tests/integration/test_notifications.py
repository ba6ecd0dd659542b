"""Notifications against a real database, a real SMTP sink process and real SMS/Slack sandbox
processes: consent, quiet hours (a zone where it is night now, computed), rate limits, a
template that fails, a provider that hangs (retries, breaker, dead letter), staff alerts,
order mail, bad input, and the privacy methods."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from instock.app import Container, build, create_app
from instock.bench.local import free_port, instock_executable
from instock.customers.model import Changes
from instock.inventory.events import LowStock
from instock.notifications.model import Status
from instock.orders.events import OrderLineData, OrderPaid, OrderRefunded, OrderShipped
from instock.platform.auth import Role
from instock.platform.bus.envelope import DomainEvent, envelope
from instock.platform.db import utcnow
from instock.sandbox.smtp import received
from instock.waitlist.events import BackInStockNotified
from tests.support import make_settings


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The SMTP sink and the SMS and Slack sandboxes, one process each for the module (started
    together: each takes a second or two to import); each test reads only its own mail."""
    directory = tmp_path_factory.mktemp("mail")
    ports = {kind: free_port() for kind in ("smtp", "sms", "slack")}
    extra = {"smtp": ["--dir", str(directory)], "sms": [], "slack": []}
    processes = [subprocess.Popen([instock_executable(), "sandbox", kind, "--port", str(port),
                                   *extra[kind]], stdin=subprocess.DEVNULL)
                 for kind, port in ports.items()]
    try:
        for process, port in zip(processes, ports.values(), strict=True):
            _wait_port(port, process)
        yield {"smtp": (ports["smtp"], directory), "sms": f"http://127.0.0.1:{ports['sms']}",
               "slack": f"http://127.0.0.1:{ports['slack']}"}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:  # a hung request holds a graceful stop
                process.kill()
                process.wait(10)


@pytest.fixture
def sink(outside: dict[str, Any]) -> tuple[int, Path]:
    found: tuple[int, Path] = outside["smtp"]
    return found


@pytest.fixture
def sms(outside: dict[str, Any]) -> str:
    return str(outside["sms"])


@pytest.fixture
def slack(outside: dict[str, Any]) -> str:
    return str(outside["slack"])


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "sandbox process exited"
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers on port {port}")


NO_QUIET = {"quiet_hours_start": "00:00", "quiet_hours_end": "00:00"}


@pytest.fixture
async def made(database_url: str, tmp_path: Path, sink: tuple[int, Path], sms: str,
               slack: str, request: pytest.FixtureRequest) -> AsyncIterator[Container]:
    overrides: dict[str, Any] = {
        "smtp_url": f"smtp://127.0.0.1:{sink[0]}", "sms_url": sms,
        "slack_webhook_url": f"{slack}/webhook", "staff_email": "ops@brand.example",
        "notify_timeout_seconds": 0.3, "notify_attempts": 3,
        "notify_backoff_base_seconds": 0.01, "notify_backoff_max_seconds": 0.05,
        "notify_breaker_threshold": 2, "notify_breaker_cooldown_seconds": 0.2,
        **NO_QUIET, **getattr(request, "param", {})}
    container = build(make_settings(database_url, tmp_path, **overrides))
    yield container
    await container.close()


async def deliver(c: Container, *events: DomainEvent) -> None:
    """What the consumer does with each event (twice: a redelivery makes nothing new)."""
    for _ in range(2):
        for event in events:
            async with c.db.write() as conn:
                await c.notifications.on_event(conn, envelope(event, None))


async def send_all(c: Container, rounds: int = 200) -> None:
    """Send until nothing is due (retries come due after their backoff)."""
    for _ in range(rounds):
        await c.notifications.send_due()
        if not await c.notifications.due_soon(timedelta(seconds=5)):
            return
        await asyncio.sleep(0.02)


def back(customer: str, sku: str = "sku-1", cause: str = "ev-1") -> BackInStockNotified:
    return BackInStockNotified(sku=sku, customer_id=customer, available=3,
                               subscribed_at=utcnow(), cause=cause)


class Inbox:
    """The sink's mail that arrived since the test began (one sink serves the module, and
    each backend's run of a test uses the same addresses)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.before = {m.path for m in received(directory)}

    def to(self, address: str) -> list[Any]:
        return [m for m in received(self.directory)
                if m.path not in self.before and str(m.message["To"]) == address]


@pytest.fixture
def inbox(sink: tuple[int, Path]) -> Inbox:
    return Inbox(sink[1])


async def profile(c: Container, customer: str, **changes: Any) -> None:
    await c.customers.save(customer, Changes(**changes), by="test")


async def test_consent_is_checked_at_send_time(made: Container, inbox: Inbox) -> None:
    await profile(made, "con-yes", email="con-yes@example.test",
                  consents={"back_in_stock_email": True})
    await profile(made, "con-no", email="con-no@example.test")
    await deliver(made, back("con-yes"), back("con-no"), back("con-nobody"))
    # Consent given after the event, before the send, counts: it is read at send time.
    await profile(made, "con-no", consents={"back_in_stock_email": True})
    await profile(made, "con-yes", consents={"back_in_stock_email": False})
    await send_all(made)
    by_customer = {c: await made.notifications.of_customer(c)
                   for c in ("con-yes", "con-no", "con-nobody")}
    emails = {c: [n for n in rows if n.channel == "email"] for c, rows in by_customer.items()}
    assert [(n.status, n.suppression) for n in emails["con-yes"]] == [
        (Status.SUPPRESSED, "no_consent")]
    assert [n.status for n in emails["con-no"]] == [Status.SENT]
    assert [(n.status, n.suppression) for n in emails["con-nobody"]] == [
        (Status.SUPPRESSED, "no_address")]
    assert len(inbox.to("con-no@example.test")) == 1
    assert inbox.to("con-yes@example.test") == []
    # No phone, no SMS consent: recorded, not sent.
    assert {n.suppression for n in by_customer["con-no"] if n.channel == "sms"} == {"no_consent"}


def night_zone(now: datetime) -> str:
    """A zone where it is 02:00-03:00 now (computed: the test runs at any hour)."""
    for offset in range(-12, 15):
        name = f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"  # Etc signs are inverted
        if now.astimezone(ZoneInfo(name)).hour == 2:
            return name
    raise AssertionError("no zone at 2 a.m.")


def day_zone(now: datetime) -> str:
    for offset in range(-12, 15):
        name = f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"
        if now.astimezone(ZoneInfo(name)).hour == 14:
            return name
    raise AssertionError("no zone at 2 p.m.")


@pytest.mark.parametrize("made", [{"quiet_hours_start": "22:00",
                                   "quiet_hours_end": "08:00"}], indirect=True)
async def test_quiet_hours_defer_to_their_end_except_order_mail(
        made: Container, inbox: Inbox) -> None:
    now = datetime.now(UTC)
    night, day = night_zone(now), day_zone(now)
    await profile(made, "qh-night", email="qh-night@example.test", time_zone=night,
                  consents={"back_in_stock_email": True})
    await profile(made, "qh-day", email="qh-day@example.test", time_zone=day,
                  consents={"back_in_stock_email": True})
    order = OrderPaid(order_id="ord-qh", version=2, channel="web", customer_id="qh-night",
                      external_id=None, status="paid", currency="EUR", total=Decimal("59.90"),
                      lines=[OrderLineData(sku="sku-1", quantity=1,
                                           unit_price=Decimal("59.90"))], reason="paid")
    await deliver(made, back("qh-night"), back("qh-day"), order)
    await send_all(made)
    night_rows = {n.reason: n for n in await made.notifications.of_customer("qh-night")
                  if n.channel == "email"}
    deferred = night_rows["back_in_stock"]
    assert deferred.status is Status.QUEUED and deferred.attempts == 0
    local = now.astimezone(ZoneInfo(night))
    assert deferred.due_at == datetime.combine(local.date(), datetime.min.time().replace(
        hour=8), tzinfo=ZoneInfo(night)).astimezone(UTC)
    assert night_rows["order_confirmation"].status is Status.SENT  # transactional: goes out
    [confirmation] = inbox.to("qh-night@example.test")
    assert confirmation.message["Subject"] == "Your order ord-qh is confirmed"
    assert "List-Unsubscribe" not in confirmation.message
    assert [n.status for n in await made.notifications.of_customer("qh-day")
            if n.channel == "email"] == [Status.SENT]


@pytest.mark.parametrize("made", [{"notify_rate_per_hour": 2}], indirect=True)
async def test_rate_limit_per_recipient(made: Container, inbox: Inbox) -> None:
    await profile(made, "rl", email="rl@example.test", consents={"back_in_stock_email": True})
    await deliver(made, back("rl", "sku-a"), back("rl", "sku-b"))
    await send_all(made)
    await deliver(made, back("rl", "sku-c"))
    await send_all(made)
    rows = {n.subject: n for n in await made.notifications.of_customer("rl")
            if n.channel == "email"}
    assert rows["sku-c"].suppression == "rate_limited"
    assert {rows["sku-a"].status, rows["sku-b"].status} == {Status.SENT}
    assert len(inbox.to("rl@example.test")) == 2


async def test_a_template_that_fails_dead_letters_and_sends_nothing(
        database_url: str, tmp_path: Path, sink: tuple[int, Path], inbox: Inbox) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "back_in_stock.html").write_text("<p>{{ no_such_value }}</p>")
    c = build(make_settings(database_url, tmp_path, smtp_url=f"smtp://127.0.0.1:{sink[0]}",
                            notify_template_dir=templates, **NO_QUIET))
    try:
        await profile(c, "tpl", email="tpl@example.test", consents={"back_in_stock_email": True})
        await deliver(c, back("tpl"))
        await send_all(c)
        [row] = await c.notifications.of_customer("tpl")
        assert row.status is Status.FAILED
        assert row.error is not None and "no_such_value" in row.error
        assert inbox.to("tpl@example.test") == []
    finally:
        await c.close()


async def test_a_provider_that_hangs_is_retried_then_dead_lettered_and_the_breaker_opens(
        made: Container, sms: str) -> None:
    async with httpx.AsyncClient(base_url=sms) as control:
        assert (await control.post("/_sandbox/config", json={"hang": True})).status_code == 200
        try:
            await profile(made, "hang", phone="+33612345678",
                          consents={"back_in_stock_sms": True})
            await deliver(made, back("hang"))
            opened = False
            for _ in range(200):
                await made.notifications.send_due()
                opened = opened or made.notifications.breakers["sms"].state == "open"
                [row] = [n for n in await made.notifications.of_customer("hang")
                         if n.channel == "sms"]
                if row.status is Status.FAILED:
                    break
                await asyncio.sleep(0.05)
        finally:
            await control.post("/_sandbox/config", json={"hang": False})
        assert row.status is Status.FAILED, row
        assert row.attempts == 3 and row.error is not None and "no answer" in row.error
        assert opened
        stored = (await control.get("/_sandbox/messages")).json()
        assert stored["messages"] == []  # nothing half-sent: the provider kept nothing


async def test_staff_alerts_go_to_slack_and_the_staff_address(
        made: Container, slack: str, inbox: Inbox) -> None:
    async with httpx.AsyncClient(base_url=slack) as control:
        earlier = len((await control.get("/_sandbox/messages")).json()["messages"])
        await deliver(made, LowStock(sku="alert-sku", sku_version=4, available=2, threshold=3))
        await send_all(made)
        texts = [m["body"]["text"] for m in (await control.get("/_sandbox/messages")).json()[
            "messages"][earlier:]]
    assert sum("alert-sku" in t for t in texts) == 1
    assert [m.message["Subject"] for m in inbox.to("ops@brand.example")
            if "alert-sku" in str(m.message["Subject"])] == ["Low stock: alert-sku (2 left)"]


async def test_export_and_erase(made: Container) -> None:
    await profile(made, "gdpr", email="gdpr@example.test", consents={"back_in_stock_email": True})
    await deliver(made, back("gdpr"))
    exported = await made.notifications.export_subject("gdpr")
    assert {n["reason"] for n in exported["notifications"]} == {"back_in_stock"}
    assert all(n["customer_id"] == "gdpr" for n in exported["notifications"])
    await made.notifications.erase_subject("gdpr", "pseudo-1")
    await made.notifications.erase_subject("gdpr", "pseudo-1")  # idempotent
    assert await made.notifications.of_customer("gdpr") == []
    kept = await made.notifications.of_customer("pseudo-1")
    assert kept and {(n.status, n.suppression) for n in kept} == {(Status.SUPPRESSED, "erased")}
    assert all(n.customer_id != "gdpr" for n in kept)


async def test_bad_input_is_a_clear_problem(database_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as http:
        support = {"Authorization": "Bearer " + app.state.tokens.mint(Role.SUPPORT, "ann")}
        bad_zone = await http.put("/v1/customers/tz-1", headers=support,
                                  json={"time_zone": "Mars/Olympus"})
        assert bad_zone.status_code == 422
        assert bad_zone.json()["errors"][0]["field"] == "time_zone"
        good = await http.put("/v1/customers/tz-1", headers=support,
                              json={"time_zone": "Europe/Paris"})
        assert good.status_code == 200 and good.json()["time_zone"] == "Europe/Paris"
        page = await http.get("/v1/notifications/unsubscribe", params={"token": "a'<b"})
        assert page.status_code == 200 and "<form method='post'" in page.text
        assert "a'<b" not in page.text  # escaped
        bad_token = await http.post("/v1/notifications/unsubscribe", params={"token": "x.y"})
        assert bad_token.status_code == 422
        assert bad_token.headers["content-type"].startswith("application/problem+json")
        listing = await http.get("/v1/notifications", params={"customer_id": "tz-1"},
                                 headers=support)
        assert listing.status_code == 200 and listing.json() == []


async def test_order_mail_confirmed_shipped_refunded_once_each(made: Container,
                                                               inbox: Inbox) -> None:
    await profile(made, "ord", email="ord@example.test")  # no consent needed: transactional
    common: dict[str, Any] = {
        "order_id": "ord-1", "channel": "web", "customer_id": "ord", "external_id": None,
        "currency": "EUR", "total": Decimal("10.00"), "reason": "test",
        "lines": [OrderLineData(sku="sku-1", quantity=2, unit_price=Decimal("5.00"))]}
    await deliver(made, OrderPaid(version=2, status="paid", **common),
                  OrderShipped(version=4, status="shipped", **common),
                  OrderRefunded(version=6, status="refunded", **common),
                  OrderPaid(version=2, status="paid", **{**common, "customer_id": None,
                                                         "order_id": "ord-anon"}))
    await send_all(made)
    subjects = sorted(str(m.message["Subject"]) for m in inbox.to("ord@example.test"))
    assert subjects == ["Your order ord-1 is confirmed", "Your order ord-1 is on its way",
                        "Your refund for order ord-1"]
