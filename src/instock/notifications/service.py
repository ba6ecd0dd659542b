"""Notification use cases: the consumer that turns events into notification rows (in its
transaction, so an event delivered twice makes one row), the sender that claims due rows after
commit and sends them, the one-click unsubscribe, support's view, and privacy's two methods.

A row is sent at least once and, in effect, once: a sender killed after the provider took the
message but before the row says so sends it again when its lease runs out, with the same
Message-ID (derived from the row), so the copies are one message to every receiver."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.customers.model import Changes, Profile
from instock.customers.service import CustomersService
from instock.notifications import model, store
from instock.notifications.channels import Channel, ChannelFailed, Outgoing
from instock.notifications.events import NotificationDeadLettered
from instock.notifications.model import Notification, Status
from instock.notifications.templates import TemplateFailed, Templates
from instock.platform.breaker import Breaker, BreakerOpen
from instock.platform.bus import Envelope, outbox
from instock.platform.bus.consumer import ConsumerSpec
from instock.platform.db import Database, signal, utcnow
from instock.platform.errors import Conflict, NotFound, ValidationFailed
from instock.platform.ids import new_id
from instock.platform.retry import backoff
from instock.platform.telemetry import NOTIFICATIONS

log = structlog.get_logger(__name__)

SIGNAL = "instock_notifications"  # committed rows wake the senders (LISTEN/NOTIFY on PG)
CLAIM_BATCH = 50


@dataclass(frozen=True)
class SenderSettings:
    mail_from: str = "instock <shop@instock.localhost>"
    public_url: str = "http://127.0.0.1:8000"
    rules: model.Rules = field(default_factory=model.Rules)
    retry: model.Retry = field(default_factory=lambda: model.Retry(5, 30.0, 3600.0))
    timeout: float = 10.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    pace: dict[str, float] = field(default_factory=lambda: {"slack": 1.0})
    staff_email: str | None = None
    unsubscribe_key: bytes = b""
    concurrency: int = 8  # sends at once per unpaced channel

    @property
    def batch(self) -> int:
        return CLAIM_BATCH

    @property
    def lease(self) -> timedelta:
        """How long a claim holds its rows: a sender killed mid-batch gives them back after
        this. Sends of one channel run one after the other, paced: the slowest channel's batch
        at its pace, and a timeout or two on top."""
        paced = [rate for rate in self.pace.values() if rate > 0]
        return timedelta(seconds=2 * self.timeout + 5
                         + (CLAIM_BATCH / min(paced) if paced else 0))

    @property
    def poll(self) -> float:
        return max(0.05, min(1.0, self.retry.base / 2))


class NotificationsService:
    def __init__(self, db: Database, customers: CustomersService,
                 channels: dict[str, Channel], templates: Templates,
                 settings: SenderSettings) -> None:
        self.db = db
        self.customers = customers
        self.channels = channels
        self.templates = templates
        self.settings = settings
        self.breakers = {name: Breaker(f"notify_{name}", threshold=settings.breaker_threshold,
                                       cooldown=settings.breaker_cooldown)
                         for name in channels}
        self.paces = {name: model.Pace(settings.pace.get(name, 0.0)) for name in channels}

    # -- events in --------------------------------------------------------------------------

    def consumer(self) -> ConsumerSpec:
        # Unordered: every event counts (a sold-out after a restock is news, not a stale one).
        return ConsumerSpec("notifications", model.EVENT_TYPES, self.on_event, ordered=False)

    async def on_event(self, conn: AsyncConnection, envelope: Envelope) -> None:
        customer_channels = frozenset(c for c in ("email", "sms") if c in self.channels)
        staff = frozenset(c for c, on in (("email", self.settings.staff_email is not None),
                                          ("slack", "slack" in self.channels)) if on)
        made = model.from_event(str(envelope["type"]), envelope["data"], new_id, utcnow(),
                                customer_channels=customer_channels, staff_channels=staff)
        if made:
            await store.queue(conn, made)
            signal(conn, SIGNAL)

    # -- sending ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Send forever: at once when rows are queued, every `poll` seconds for retries and
        deferrals that came due. Several senders may run, in any processes."""
        async for _ in self.db.signals(SIGNAL, fallback=self.settings.poll):
            while await self.send_due() == self.settings.batch:
                pass

    async def send_due(self, limit: int | None = None) -> int:
        """Claim what is due and send it (each channel in turn, paced); how many were claimed."""
        limit = limit or self.settings.batch
        now = utcnow()
        lease = new_id()
        async with self.db.write() as conn:
            claimed = await store.claim(conn, now, lease, now + self.settings.lease, limit)
        by_channel: dict[str, list[Notification]] = {}
        for notification in claimed:
            by_channel.setdefault(notification.channel, []).append(notification)
        await asyncio.gather(*(self._send_all(lease, items) for items in by_channel.values()))
        return len(claimed)

    async def due_soon(self, within: timedelta) -> int:
        """How many queued notifications come due within `within` (a claimed one counts: its
        lease is short): zero when the queue is drained but for deferrals."""
        async with self.db.read() as conn:
            return await store.queued_due_by(conn, utcnow() + within)

    async def sent_times(self) -> list[tuple[datetime, datetime]]:
        """(created, sent) of every sent notification (the bench's latencies)."""
        async with self.db.read() as conn:
            return await store.sent_times(conn)

    async def _send_all(self, lease: str, items: list[Notification]) -> None:
        """One channel's share of a claim: one after the other when the channel is paced,
        else `concurrency` at a time (an SMTP round trip is mostly waiting)."""
        paced = self.paces.get(items[0].channel)
        if paced is not None and paced.per_second > 0:
            for notification in items:
                await self._send_one(lease, notification)
            return
        slots = asyncio.Semaphore(self.settings.concurrency)

        async def one(notification: Notification) -> None:
            async with slots:
                await self._send_one(lease, notification)

        await asyncio.gather(*(one(n) for n in items))

    async def _send_one(self, lease: str, notification: Notification) -> None:
        now = utcnow()
        contact, profile = await self._contact(notification)
        async with self.db.read() as conn:
            recent = await store.sent_since(conn, notification.recipient, now - timedelta(hours=1))
        decision = model.decide(notification, contact, now, self.settings.rules, recent)
        if decision.defer_until is not None:
            await self._finish(lease, notification, "deferred", status=Status.QUEUED.value,
                               due_at=decision.defer_until, attempts=notification.attempts - 1)
            return
        if not decision.send:
            assert decision.suppression is not None
            await self._finish(lease, notification, decision.suppression.value,
                               status=Status.SUPPRESSED.value,
                               suppression=decision.suppression.value)
            return
        try:
            outgoing = self._outgoing(notification, contact, profile)
        except TemplateFailed as exc:
            await self._dead(lease, notification, str(exc))
            return
        channel = self.channels.get(notification.channel)
        if channel is None:
            await self._dead(lease, notification, f"no {notification.channel} channel set up")
            return
        pause = self.paces[channel.name].wait(time.monotonic())
        if pause:
            await asyncio.sleep(pause)
        try:
            async with self.breakers[channel.name].guard():
                message_id = await channel.send(outgoing)
        except BreakerOpen as exc:  # not an attempt: the provider was not asked
            await self._finish(lease, notification, "breaker_open", status=Status.QUEUED.value,
                               due_at=utcnow() + timedelta(seconds=max(exc.retry_after, 0.05)),
                               attempts=notification.attempts - 1)
            return
        except ChannelFailed as exc:
            await self._failed(lease, notification, exc)
            return
        await self._finish(lease, notification, "sent", status=Status.SENT.value,
                           sent_at=utcnow(), provider_message_id=message_id[:200], error=None)

    async def _contact(self, notification: Notification
                       ) -> tuple[model.Contact | None, Profile | None]:
        """The recipient's address, consent and zone as the customers context says now."""
        if notification.recipient == model.STAFF:
            address = self.settings.staff_email if notification.channel == "email" else "slack"
            return model.Contact(address), None
        if notification.customer_id is None:
            return None, None
        try:
            profile = await self.customers.get(notification.customer_id)
        except NotFound:
            return None, None
        purpose = notification.purpose
        consent = profile.consents.get(purpose) if purpose else None
        address = profile.phone if notification.channel == "sms" else profile.email
        return model.Contact(address, consent.granted if consent else None,
                             consent.source if consent else None,
                             profile.time_zone, profile.erased, profile.name), profile

    def unsubscribe_url(self, customer_id: str, purpose: str) -> str:
        token = model.unsubscribe_token(self.settings.unsubscribe_key, customer_id, purpose)
        return f"{self.settings.public_url.rstrip('/')}/v1/notifications/unsubscribe?token={token}"

    def _outgoing(self, notification: Notification, contact: model.Contact | None,
                  profile: Profile | None) -> Outgoing:
        assert contact is not None and contact.address is not None
        purpose = notification.purpose or ("marketing_email" if notification.channel == "email"
                                           and not notification.transactional
                                           and notification.recipient != model.STAFF
                                           else None)
        link = (self.unsubscribe_url(notification.recipient, purpose)
                if purpose and profile is not None else None)
        context: dict[str, Any] = {**notification.data, "name": contact.name,
                                   "unsubscribe_url": link,
                                   "shop_url": self.settings.public_url}
        rendered = self.templates.render(notification.reason, notification.channel, context)
        headers = {"Message-ID": model.message_id(notification.id, self.settings.mail_from),
                   "X-Instock-Notification": notification.id}
        if link is not None and notification.channel == "email":
            headers["List-Unsubscribe"] = f"<{link}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
        return Outgoing(notification.id, contact.address, rendered.subject, rendered.text,
                        rendered.html, headers)

    async def _failed(self, lease: str, notification: Notification, exc: ChannelFailed) -> None:
        retry = self.settings.retry
        if model.dead(notification.attempts, retry, exc.permanent):
            await self._dead(lease, notification, exc.reason)
            return
        wait = backoff(notification.attempts, base=retry.base, cap=retry.cap, jitter=0.5,
                       draw=random.random())  # noqa: S311 - jitter, not a secret
        await self._finish(lease, notification, "retry", status=Status.QUEUED.value,
                           due_at=utcnow() + timedelta(seconds=wait), error=exc.reason)

    async def _dead(self, lease: str, notification: Notification, error: str) -> None:
        await self._finish(lease, notification, "failed", status=Status.FAILED.value,
                           error=error[:500], dead_letter=NotificationDeadLettered(
                               notification_id=notification.id, reason=notification.reason,
                               channel=notification.channel, attempts=notification.attempts,
                               error=error[:500]))

    async def _finish(self, lease: str, notification: Notification, outcome: str,
                      dead_letter: NotificationDeadLettered | None = None,
                      **values: Any) -> None:
        async with self.db.write() as conn:
            held = await store.finish(conn, notification.id, lease, **values)
            if held and dead_letter is not None:
                await outbox.add(conn, [dead_letter], None)
        if values.get("suppression"):
            NOTIFICATIONS.labels(notification.channel, "suppressed", values["suppression"]).inc()
        elif outcome in ("sent", "failed", "retry"):
            NOTIFICATIONS.labels(notification.channel, outcome, notification.reason).inc()
        report = log.error if outcome == "failed" else log.info
        report("notification", id=notification.id, reason=notification.reason,
               channel=notification.channel, outcome=outcome, attempt=notification.attempts,
               held=held, error=values.get("error"))

    # -- people -----------------------------------------------------------------------------

    async def unsubscribe(self, token: str) -> tuple[str, str]:
        """Withdraw the consent a one-click link names (RFC 8058); (customer, purpose)."""
        try:
            customer_id, purpose = model.read_unsubscribe_token(self.settings.unsubscribe_key,
                                                                token)
        except model.InvalidToken as exc:
            raise ValidationFailed("token", f"not a valid unsubscribe token ({exc})") from exc
        # Erased (409): nothing will ever be sent to them again anyway.
        with contextlib.suppress(Conflict):
            await self.customers.save(customer_id, Changes(consents={purpose: False}),
                                      by=model.UNSUBSCRIBE_SOURCE)
        return customer_id, purpose

    async def of_customer(self, customer_id: str, limit: int = 100) -> list[Notification]:
        async with self.db.read() as conn:
            return await store.of_customer(conn, customer_id, limit)

    async def get(self, notification_id: str) -> Notification:
        async with self.db.read() as conn:
            found = await store.get(conn, notification_id)
        if found is None:
            raise NotFound(f"no notification {notification_id}")
        return found

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        """Every notification made for the person (no addresses: none are stored)."""
        async with self.db.read() as conn:
            found = await store.of_customer(conn, customer_id, limit=1_000_000)
        return {"notifications": [as_json(n) for n in found]}

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        """Idempotent: nothing queued goes out; the rows stay (counts) under the pseudonym."""
        async with self.db.write() as conn:
            await store.erase(conn, customer_id, pseudonym, utcnow())

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


def as_json(n: Notification) -> dict[str, Any]:
    def when(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {"id": n.id, "customer_id": n.customer_id, "reason": n.reason, "subject": n.subject,
            "channel": n.channel, "status": n.status.value, "suppression": n.suppression,
            "error": n.error, "attempts": n.attempts,
            "provider_message_id": n.provider_message_id, "created_at": when(n.created_at),
            "sent_at": when(n.sent_at), "data": n.data}
