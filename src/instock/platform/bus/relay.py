"""The outbox relay: moves committed outbox rows to the bus, in order, and forgets them later.

Order: one relay leads at a time (`Database.leadership`), and it publishes rows oldest first.
Rows of one SKU are created under that SKU's row lock, so their creation order is their sequence
order; a row that commits late simply joins the next round. Several relays may run: the others
wait for the leader's lock and take over the moment it dies.

Delivery: a row is marked published only after the bus accepted it. A relay killed between the
two publishes the same rows again when it (or another) takes over: at-least-once, and consumers
drop the duplicates by event id (JetStream also drops them by message id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from instock.platform import tracing
from instock.platform.bus.base import Bus, Envelope
from instock.platform.bus.outbox import OUTBOX_SIGNAL, outbox
from instock.platform.db import Database, utcnow
from instock.platform.drain import in_hand
from instock.platform.retry import keep_running
from instock.platform.telemetry import EVENTS_PUBLISHED

log = structlog.get_logger(__name__)

Validator = Callable[[Envelope], None]


class Relay:
    def __init__(self, db: Database, bus: Bus, *, batch: int = 500,
                 retention: timedelta = timedelta(hours=24), cleanup_every: float = 60.0,
                 validate: Validator | None = None) -> None:
        self.db = db
        self.bus = bus
        self.batch = batch
        self.retention = retention
        self.cleanup_every = cleanup_every
        self.validate = validate

    async def run(self) -> None:
        """Lead when possible and publish forever; a lost leadership or a failed round starts
        over after a pause, so the relay outlives database and bus outages."""
        await keep_running(self._lead, "relay")

    async def _lead(self) -> None:
        async with self.db.leadership("outbox-relay") as lost:
            log.info("relay_leading")
            last_cleanup = 0.0
            loop = asyncio.get_running_loop()
            async for _ in self.db.signals(OUTBOX_SIGNAL, fallback=1.0):
                if lost.is_set():
                    log.warning("relay_leadership_lost")
                    return
                while True:
                    # A process stopping gracefully finishes this batch (marked published).
                    async with in_hand():
                        published = await self.publish_pending()
                    if published < self.batch:
                        break  # else more are waiting: go on without waiting for a signal
                if loop.time() - last_cleanup >= self.cleanup_every:
                    await self.cleanup()
                    last_cleanup = loop.time()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows, oldest first; returns how many."""
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(outbox.c.id, outbox.c.envelope)
                .where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.created_at, outbox.c.id).limit(self.batch))).all()
        if not rows:
            return 0
        envelopes = [e for row in rows if (e := self._checked(row.envelope)) is not None]
        # One span for the batch, linked to the trace of every request whose events it moves:
        # it serves them all, the child of none.
        with tracing.batch_span(envelopes, "outbox publish",
                                attributes={"messaging.batch.message_count": len(envelopes)}):
            await self.bus.publish(envelopes)
            async with self.db.write() as conn:
                await conn.execute(outbox.update().where(outbox.c.id.in_([r.id for r in rows]))
                                   .values(published_at=utcnow()))
        EVENTS_PUBLISHED.inc(len(rows))
        return len(rows)

    def _checked(self, envelope: dict[str, Any]) -> Envelope | None:
        """The envelope if it matches its published schema; a bad one is logged and skipped
        rather than blocking every event behind it (it stays in the outbox for inspection)."""
        if self.validate is None:
            return envelope
        try:
            self.validate(envelope)
        except ValueError as exc:
            log.error("relay_invalid_event", id=envelope.get("id"), type=envelope.get("type"),
                      error=str(exc))
            return None
        return envelope

    async def cleanup(self) -> int:
        """Delete rows published longer ago than the retention period."""
        async with self.db.write() as conn:
            result = await conn.execute(outbox.delete().where(
                outbox.c.published_at < utcnow() - self.retention))
        return int(result.rowcount or 0)
