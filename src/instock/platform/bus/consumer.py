"""Running a consumer: at-least-once from the bus, exactly-once in effect in the database.

Each event is handled in one write transaction together with its inbox row, so a redelivered
event (the bus may deliver twice) is recognised and skipped, and a crash mid-handling leaves no
half-done effect. Per subject (the SKU for inventory events) an event whose `sequence` is older
than the one already applied is ignored: it describes a state that has been superseded. A handler
that keeps failing is retried with backoff, then its event goes to the dead-letter store
(`instock events dlq list|replay`) so that one poisoned event does not stop the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.bus import inbox
from instock.platform.bus.base import Bus, Envelope
from instock.platform.db import Database
from instock.platform.retry import retry
from instock.platform.telemetry import EVENTS_CONSUMED

log = structlog.get_logger(__name__)

Handler = Callable[[AsyncConnection, Envelope], Awaitable[None]]
Validator = Callable[[Envelope], None]


@dataclass(frozen=True)
class ConsumerSpec:
    """A named consumer: which event types it wants and what it does with each."""

    name: str
    types: frozenset[str]
    handler: Handler
    # Order-aware: skip an event older than the newest applied for its subject. A consumer
    # that must see every event (a webhook fan-out: another location's change of the same SKU
    # is news to a subscriber) says False.
    ordered: bool = True
    # Which events of those types can have an effect at all (pure, from the event alone): the
    # others are counted as ignored without a transaction (a view is no conversion).
    wants: Callable[[Envelope], bool] | None = None


class Consumer:
    def __init__(self, db: Database, bus: Bus, spec: ConsumerSpec, *, attempts: int = 5,
                 redeliver_after: float = 30.0, validate: Validator | None = None) -> None:
        self.db = db
        self.bus = bus
        self.spec = spec
        self.attempts = attempts
        self.redeliver_after = redeliver_after
        self.validate = validate

    @property
    def name(self) -> str:
        return self.spec.name

    async def run(self, since: datetime | None = None) -> None:
        """Consume forever; ack each delivery only after its outcome is stored."""
        async for delivery in self.bus.consume(self.name, since=since,
                                               redeliver_after=self.redeliver_after):
            await self.handle(delivery.envelope)
            await delivery.ack()

    async def handle(self, envelope: Envelope) -> str:
        """Process one event; returns the outcome (applied, duplicate, stale, ignored, dead)."""
        if envelope.get("type") not in self.spec.types or (
                self.spec.wants is not None and not self.spec.wants(envelope)):
            return self._count("ignored")
        try:
            if self.validate is not None:
                self.validate(envelope)
            outcome = await retry(lambda: self._apply(envelope), retry_on=(Exception,),
                                  attempts=self.attempts, base_delay=0.05, max_delay=2.0,
                                  on_retry=lambda exc: log.warning(
                                      "consumer_retry", consumer=self.name,
                                      event_id=envelope.get("id"), error=repr(exc)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("consumer_dead_letter", consumer=self.name, event_id=envelope.get("id"),
                      error=repr(exc))
            async with self.db.write() as conn:
                await inbox.bury(conn, self.name, envelope, repr(exc), self.attempts)
            return self._count("dead")
        return self._count(outcome)

    async def _apply(self, envelope: Envelope) -> str:
        async with self.db.write() as conn:
            if not await inbox.claim(conn, self.name, envelope):
                return "duplicate"
            sequence = envelope.get("sequence") if self.spec.ordered else None
            if sequence is not None:
                newest = await inbox.position(conn, self.name, envelope)
                if newest is not None and sequence < newest:
                    await inbox.mark_stale(conn, self.name, envelope)
                    return "stale"
            await self.spec.handler(conn, envelope)
            if sequence is not None:
                await inbox.advance(conn, self.name, envelope)
            return "applied"

    async def replay_dead(self, letter: inbox.DeadLetter) -> str:
        """Run a dead-lettered event through the handler again (once, no retries); if it fails
        again it stays in the dead-letter store."""
        try:
            outcome = await self._apply(letter.envelope)
        except Exception as exc:
            log.warning("dead_letter_failed_again", consumer=self.name, letter=letter.id,
                        error=repr(exc))
            return self._count("failed")
        async with self.db.write() as conn:
            await inbox.mark_replayed(conn, letter.id)
        return self._count(outcome)

    async def replay(self, since: datetime) -> dict[str, int]:
        """Process again every event the bus keeps from `since` on, in order."""
        async with self.db.write() as conn:
            await inbox.forget_since(conn, self.name, since)
        counts: dict[str, int] = {}
        async for envelope in self.bus.history(since):
            outcome = await self.handle(envelope)
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def _count(self, outcome: str) -> str:
        EVENTS_CONSUMED.labels(self.name, outcome).inc()
        return outcome
