"""How the event backbone is doing, sampled from the database for operators: the outbox's
backlog and the age of its oldest event, and the dead letters each consumer left.

Sampled every few seconds by a task of each process (not on scrape: a Prometheus collector is
called synchronously and must not query). `/readyz` reports the latest sample.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from instock.platform.bus import inbox, outbox
from instock.platform.db import Database, utcnow
from instock.platform.telemetry import DEAD_LETTERS, OUTBOX_LAG, OUTBOX_PENDING

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Backbone:
    outbox_pending: int
    outbox_lag_seconds: float
    dead_letters: dict[str, int] = field(default_factory=dict)
    sampled_at: datetime = field(default_factory=utcnow)


async def sample(db: Database) -> Backbone:
    async with db.read() as conn:
        pending, oldest = await outbox.unpublished(conn)
        dead = await inbox.dead_counts(conn)
    now = utcnow()
    lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return Backbone(pending, lag, dead, now)


class BackboneMonitor:
    """Keeps the backbone gauges current; `last` is the newest sample (None before the first)."""

    def __init__(self, db: Database, consumers: list[str], every_seconds: float = 2.0) -> None:
        self.db = db
        self.consumers = consumers  # a series for each, at 0 until it has dead letters
        self.every = every_seconds
        self.last: Backbone | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down: /readyz says so, we try again
                log.warning("backbone_sample_failed", error=repr(exc))
            await asyncio.sleep(self.every)

    async def sample(self) -> Backbone:
        found = await sample(self.db)
        OUTBOX_PENDING.set(found.outbox_pending)
        OUTBOX_LAG.set(found.outbox_lag_seconds)
        for consumer in {*self.consumers, *found.dead_letters}:
            DEAD_LETTERS.labels(consumer).set(found.dead_letters.get(consumer, 0))
        self.last = found
        return found
