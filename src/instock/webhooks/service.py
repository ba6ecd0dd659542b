"""Outbound webhook use cases: subscriptions, the fan-out consumer that queues each event once
per subscriber, and the worker that delivers the queue with retries and dead letters.

Delivery is at least once: a worker that dies after the receiver answered but before the
outcome is stored leaves the delivery to be sent again when its lease runs out, so receivers
de-duplicate on `Instock-Event-Id` (or `Instock-Delivery-Id`). Deliveries of one subscription
are not ordered: a retried one is overtaken by later events.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.bus import Envelope, outbox, schemas
from instock.platform.bus.consumer import ConsumerSpec, once_per_batch
from instock.platform.db import Database, signal, utcnow
from instock.platform.errors import Conflict, NotFound, ValidationFailed
from instock.platform.ids import new_id
from instock.platform.outbound import (
    OutboundGuard,
    PinnedTransport,
    RefusedRequest,
    require_callable,
)
from instock.platform.retry import backoff
from instock.platform.signatures import sign
from instock.platform.telemetry import WEBHOOK_DELIVERIES
from instock.webhooks import model, store
from instock.webhooks.events import DeliveryDeadLettered, Ping
from instock.webhooks.model import Attempt, Delivery, Status, Subscription, WebhookError

log = structlog.get_logger(__name__)

# Committed queue changes wake the delivery workers (LISTEN/NOTIFY across processes on
# PostgreSQL) instead of their waiting for the next poll.
DELIVERY_SIGNAL = "instock_webhooks"
CLAIM_BATCH = 32  # deliveries one worker claims and sends at once
CONTENT_TYPE = "application/cloudevents+json"  # CloudEvents HTTP binding, structured mode
USER_AGENT = "instock-webhooks/1"
MAX_ERROR = 500


@dataclass(frozen=True)
class Policy:
    """How deliveries are attempted (from settings)."""

    attempts: int = 8
    backoff_base: float = 30.0
    backoff_max: float = 6 * 3600.0
    timeout: float = 10.0

    @property
    def lease(self) -> timedelta:
        """How long a claim holds a delivery: one attempt's timeout and the time to record it,
        twice over. A worker killed mid-attempt gives the delivery back after this."""
        return timedelta(seconds=2 * self.timeout + 10)

    @property
    def poll(self) -> float:
        """How often an idle worker looks for retries that came due (new deliveries wake it);
        no retry is due sooner than `backoff_base / 2`, so polling faster than that is waste."""
        return max(0.05, min(1.0, self.backoff_base / 2))

    def wait_after(self, failures: int, draw: float) -> timedelta:
        """The wait before the next try, in the upper half of the doubling bound (`draw` in
        [0, 1] picks where): receivers back from an outage are not hit by every queued
        delivery in the same second."""
        return timedelta(seconds=backoff(failures, base=self.backoff_base, cap=self.backoff_max,
                                         jitter=0.5, draw=draw))


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def wire_body(envelope: Envelope) -> bytes:
    """The exact bytes sent (and signed): the CloudEvents envelope as compact JSON."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def request_headers(delivery: Delivery, body: bytes, secret: str,
                    timestamp: int | None = None) -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT,
            "Instock-Signature": sign(body, secret, timestamp),
            "Instock-Event-Id": delivery.event_id, "Instock-Event-Type": delivery.event_type,
            "Instock-Delivery-Id": delivery.id, "Instock-Attempt": str(delivery.attempts)}


def _invalid(exc: WebhookError) -> ValidationFailed:
    return ValidationFailed(exc.field, exc.reason)


class WebhooksService:
    def __init__(self, db: Database, policy: Policy | None = None, *,
                 clock: Callable[[], datetime] = utcnow,
                 known_types: Callable[[], Collection[str]] | None = None,
                 jitter: Callable[[], float] = random.random,
                 guard: OutboundGuard | None = None) -> None:
        self.db = db
        self.policy = policy or Policy()
        # Subscribers' URLs are checked on save and on every delivery (platform/outbound).
        self.guard = guard or OutboundGuard()
        self.clock = clock
        self.known_types = known_types or (lambda: schemas.event_types().keys())
        self.jitter = jitter

    # -- subscriptions ---------------------------------------------------------------------

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return {"deliveries": await store.export_customer(conn, customer_id)}

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        async with self.db.write() as conn:
            await store.pseudonymise_customer(conn, customer_id, pseudonym)

    async def subscribe(self, url: str, event_types: list[str], secret: str | None,
                        description: str = "") -> Subscription:
        """A new, active subscription; its secret (generated if not given) is in the result
        and never shown again."""
        now = self.clock()
        try:
            subscription = Subscription(
                new_id(), model.url(url), model.event_types(event_types, self.known_types()),
                model.secret(secret) if secret is not None else new_secret(),
                model.printable("description", description), True, now, now)
        except WebhookError as exc:
            raise _invalid(exc) from exc
        await require_callable(self.guard, subscription.url, "url")
        async with self.db.write() as conn:
            await store.insert_subscription(conn, subscription)
        return subscription

    async def subscriptions(self) -> list[Subscription]:
        async with self.db.read() as conn:
            return await store.all_subscriptions(conn)

    async def subscription(self, subscription_id: str) -> Subscription:
        async with self.db.read() as conn:
            return await self._subscription(conn, subscription_id)

    async def update(self, subscription_id: str, changes: dict[str, Any]) -> Subscription:
        if isinstance(changes.get("url"), str):  # checked before the transaction: DNS is slow
            try:
                await require_callable(self.guard, model.url(changes["url"]), "url")
            except WebhookError as exc:
                raise _invalid(exc) from exc
        async with self.db.write() as conn:
            current = await self._subscription(conn, subscription_id, lock=True)
            try:
                changed = model.patched(current, changes, self.known_types(), self.clock())
            except WebhookError as exc:
                raise _invalid(exc) from exc
            await store.update_subscription(conn, changed)
            if changed.active and not current.active:
                signal(conn, DELIVERY_SIGNAL)  # its queue, paused while disabled, is due
        return changed

    async def unsubscribe(self, subscription_id: str) -> None:
        async with self.db.write() as conn:
            if not await store.delete_subscription(conn, subscription_id):
                raise NotFound(f"no webhook subscription {subscription_id}")

    async def _subscription(self, conn: AsyncConnection, subscription_id: str,
                            lock: bool = False) -> Subscription:
        found = await store.subscription(conn, subscription_id, lock)
        if found is None:
            raise NotFound(f"no webhook subscription {subscription_id}")
        return found

    # -- the log ----------------------------------------------------------------------------

    async def deliveries(self, subscription_id: str | None, status: Status | None = None,
                         limit: int = 50, before: str | None = None) -> list[Delivery]:
        """A subscription's deliveries (every subscription's with None), newest first."""
        async with self.db.read() as conn:
            if subscription_id is not None:
                await self._subscription(conn, subscription_id)
            return await store.deliveries_of(conn, subscription_id, status, limit, before)

    async def delivery(self, delivery_id: str) -> Delivery:
        async with self.db.read() as conn:
            found = await store.delivery(conn, delivery_id)
        if found is None:
            raise NotFound(f"no webhook delivery {delivery_id}")
        return found

    async def redeliver(self, delivery_id: str) -> Delivery:
        """Queue a delivered or dead-lettered delivery again, due now, its attempts reset
        (earlier attempts stay in its log)."""
        async with self.db.write() as conn:
            if not await store.requeue(conn, delivery_id, self.clock()):
                found = await store.delivery(conn, delivery_id)
                if found is None:
                    raise NotFound(f"no webhook delivery {delivery_id}")
                raise Conflict(f"delivery {delivery_id} is {found.status.value}: it is "
                               "already queued", status=found.status.value)
            signal(conn, DELIVERY_SIGNAL)
        return await self.delivery(delivery_id)

    async def ping(self, subscription_id: str) -> Delivery:
        """Queue a `webhook.ping.v1` for this subscription alone and attempt it at once; the
        answer shows how that went (a failed ping is retried like any delivery)."""
        async with self.db.write() as conn:
            subscription = await self._subscription(conn, subscription_id)
            if not subscription.active:
                raise Conflict(f"subscription {subscription_id} is disabled")
            envelope = outbox.envelope(Ping(subscription_id=subscription_id), None)
            queued = self._delivery_of(subscription, envelope)
            await store.queue(conn, [queued])
        await self.deliver_due(limit=1, delivery_id=queued.id)
        return await self.delivery(queued.id)

    def _delivery_of(self, subscription: Subscription, envelope: Envelope) -> Delivery:
        now = self.clock()
        return Delivery(new_id(), subscription.id, str(envelope["id"]), str(envelope["type"]),
                        envelope, Status.PENDING, 0, now, now)

    # -- delivering -------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver forever: at once when deliveries are queued, and every `poll` seconds for
        retries that came due. Several workers may run, in any processes."""
        async for _ in self.db.signals(DELIVERY_SIGNAL, fallback=self.policy.poll):
            while await self.deliver_due() == CLAIM_BATCH:
                pass  # a full batch: there may be more due

    async def deliver_due(self, limit: int = CLAIM_BATCH,
                          delivery_id: str | None = None) -> int:
        """Claim what is due (up to `limit`), attempt each at once; how many were attempted."""
        now = self.clock()
        lease = new_id()
        async with self.db.write() as conn:
            claims = await store.claim(conn, now, lease, now + self.policy.lease, limit,
                                       delivery_id)
        if not claims:
            return 0
        # Redirects are not followed: they would send a signed payload somewhere the
        # subscriber did not register (or inside). Each URL is checked again as it is sent,
        # and the connection goes to the address that was checked.
        async with httpx.AsyncClient(timeout=self.policy.timeout, follow_redirects=False,
                                     trust_env=False,
                                     transport=PinnedTransport(self.guard)) as http:
            # Every attempt runs to its end before the client closes under them; the first
            # failure (the database gone while recording) is raised after.
            outcomes = await asyncio.gather(*(self._attempt(http, claim) for claim in claims),
                                            return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(claims)

    async def _attempt(self, http: httpx.AsyncClient, claim: store.Claim) -> None:
        delivery = claim.delivery
        body = wire_body(delivery.envelope)
        at = self.clock()
        started = time.perf_counter()
        status_code, error = await self._post(http, claim.url, body,
                                              request_headers(delivery, body, claim.secret))
        attempt = Attempt(delivery.id, delivery.attempts, at, status_code, error,
                          round((time.perf_counter() - started) * 1000))
        after = model.after_attempt(
            delivery.attempts, attempt.ok, max_attempts=self.policy.attempts, now=self.clock(),
            wait=self.policy.wait_after(delivery.attempts, self.jitter()))
        async with self.db.write() as conn:
            held = await store.finish(conn, delivery.id, claim.lease, after, attempt)
            if held and after.dead:
                await outbox.add(conn, [DeliveryDeadLettered(
                    subscription_id=delivery.subscription_id, delivery_id=delivery.id,
                    url=claim.url, event_id=delivery.event_id, event_type=delivery.event_type,
                    attempts=delivery.attempts, last_status_code=status_code,
                    last_error=error)], delivery.envelope.get("correlationid"))
        report = log.info if attempt.ok else log.error if after.dead else log.warning
        WEBHOOK_DELIVERIES.labels(
            "delivered" if attempt.ok else "dead" if after.dead else "failed").inc()
        report("webhook_attempt", delivery=delivery.id, subscription=delivery.subscription_id,
               event_type=delivery.event_type, attempt=delivery.attempts,
               status_code=status_code, error=error, outcome=after.status.value, held=held)

    async def _post(self, http: httpx.AsyncClient, url: str, body: bytes,
                    headers: dict[str, str]) -> tuple[int | None, str | None]:
        """(status code, None) for any HTTP answer, else (None, why there was none)."""
        try:
            # httpx's timeout bounds each phase; this bounds the whole attempt (a receiver
            # trickling bytes must not outlive the claim's lease).
            async with asyncio.timeout(self.policy.timeout):
                async with http.stream("POST", url, content=body, headers=headers) as response:
                    code = response.status_code
        except TimeoutError:
            return None, f"no answer within {self.policy.timeout:g} s"
        except RefusedRequest as exc:  # never sent: the guard's reason is the error
            return None, f"refused: {exc}"[:MAX_ERROR]
        except Exception as exc:  # refused, reset, DNS, TLS: all "no answer", all retried
            return None, (f"{type(exc).__name__}: {exc}".strip(": "))[:MAX_ERROR]
        if 300 <= code < 400:
            return code, f"HTTP {code}: redirects are not followed"
        return code, None if 200 <= code < 300 else f"HTTP {code}"


# -- the fan-out -----------------------------------------------------------------------------


async def fan_out(conn: AsyncConnection, envelope: Envelope) -> None:
    """Queue the event once per active subscription that wants it, in the consumer's
    transaction: with its inbox row (and the queue's unique event per subscription) each
    subscriber gets each event queued exactly once, however often the bus delivers it."""
    subject = str(envelope.get("subject", ""))
    subscriptions = await once_per_batch(
        "webhook_subscriptions", lambda: store.all_subscriptions(conn, active_only=True))
    wanted = [s for s in subscriptions if s.wants(str(envelope["type"]), subject)]
    if not wanted:
        return
    now = utcnow()
    await store.queue(conn, [Delivery(new_id(), s.id, str(envelope["id"]), str(envelope["type"]),
                                      envelope, Status.PENDING, 0, now, now) for s in wanted])
    signal(conn, DELIVERY_SIGNAL)


# Unordered: a subscriber gets every event, also one that arrives after a newer one.
FANOUT = ConsumerSpec("webhook-fanout", frozenset(schemas.event_types()), fan_out,
                      ordered=False)
