"""Running a consumer: at-least-once from the bus, exactly-once in effect in the database.

Each event is handled in one write transaction together with its inbox row, so a redelivered
event (the bus may deliver twice) is recognised and skipped, and a crash mid-handling leaves no
half-done effect. Events that arrive together (the relay publishes in bursts) share one
transaction, as PostgreSQL's own group commit shares a flush: a busy consumer then costs a
transaction per burst, not per event. A batch that fails is rolled back whole and handled again
event by event, so one bad event never takes its neighbours down.

Per subject (the SKU for inventory events) an event whose `sequence` is older
than the one already applied is ignored: it describes a state that has been superseded. A handler
that keeps failing is retried with backoff, then its event goes to the dead-letter store
(`instock events dlq list|replay`) so that one poisoned event does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform import tracing
from instock.platform.bus import inbox
from instock.platform.bus.base import Bus, Delivery, Envelope
from instock.platform.bus.envelope import event_time
from instock.platform.db import Database
from instock.platform.drain import in_hand
from instock.platform.retry import retry
from instock.platform.telemetry import (
    CONSUMER_DURATION,
    CONSUMER_LAG,
    DEAD_LETTERS,
    EVENTS_CONSUMED,
)

log = structlog.get_logger(__name__)

Handler = Callable[[AsyncConnection, Envelope], Awaitable[None]]
Validator = Callable[[Envelope], None]
# The most deliveries handled in one transaction.
BATCH_MAX = 100
T = TypeVar("T")
# Reads a handler makes for every event that are the same for every event of one transaction.
_batch_reads: ContextVar[dict[str, Any] | None] = ContextVar("batch_reads", default=None)


async def once_per_batch(key: str, read: Callable[[], Awaitable[T]]) -> T:
    """`read()`, made once per consumer transaction however many events it handles: what a
    handler looks up for each event that no event changes (who subscribes to webhooks, which
    channels are connected). Outside a consumer it simply reads."""
    reads = _batch_reads.get()
    if reads is None:
        return await read()
    if key not in reads:
        reads[key] = await read()
    value: T = reads[key]
    return value


def gathered(key: str, make: Callable[[], T]) -> T:
    """A value every event of one consumer transaction shares, made at its first use: what
    handlers gather for their spec's `finish` to write once per transaction (an analytics
    fact counted by a hundred sales is one row written, not a hundred)."""
    state = _batch_reads.get()
    if state is None:
        raise RuntimeError("gathered() is for handlers inside a consumer transaction")
    if key not in state:
        state[key] = make()
    value: T = state[key]
    return value


@contextlib.contextmanager
def _one_batch() -> Iterator[None]:
    token = _batch_reads.set({})
    try:
        yield
    finally:
        _batch_reads.reset(token)


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
    # Run once at the end of each transaction, after its events' handlers, in it: writes what
    # the handlers `gathered`.
    finish: Callable[[AsyncConnection], Awaitable[None]] | None = None


class Consumer:
    def __init__(self, db: Database, bus: Bus, spec: ConsumerSpec, *, attempts: int = 5,
                 redeliver_after: float = 30.0, validate: Validator | None = None,
                 linger: float = 0.0) -> None:
        self.db = db
        self.bus = bus
        self.spec = spec
        self.attempts = attempts
        self.redeliver_after = redeliver_after
        self.validate = validate
        self.linger = linger
        self._oldest_in_hand: float | None = None  # the epoch time of the oldest event held
        # Read at each scrape, so a consumer stuck on an event shows its lag growing.
        CONSUMER_LAG.labels(spec.name).set_function(self._lag)
        self._duration = CONSUMER_DURATION.labels(spec.name)
        DEAD_LETTERS.labels(spec.name)  # a series from the start, 0 until sampled

    @property
    def name(self) -> str:
        return self.spec.name

    async def run(self, since: datetime | None = None) -> None:
        """Consume forever, a burst at a time; ack each delivery only after its outcome is
        stored."""
        ready: asyncio.Queue[Delivery] = asyncio.Queue(BATCH_MAX)
        reader = asyncio.create_task(self._receive(ready, since))
        try:
            while True:
                batch = await _burst(ready, reader, self.linger)
                # A process stopping gracefully finishes this batch (acks included) first.
                async with in_hand():
                    self._oldest_in_hand = event_time(batch[0].envelope)
                    started = time.perf_counter()
                    await self.handle_batch([delivery.envelope for delivery in batch])
                    for delivery in batch:
                        await delivery.ack()
                    self._duration.observe(time.perf_counter() - started)
                    self._oldest_in_hand = None
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def _lag(self) -> float:
        oldest = self._oldest_in_hand
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    async def _receive(self, ready: asyncio.Queue[Delivery], since: datetime | None) -> None:
        async for delivery in self.bus.consume(self.name, since=since,
                                               redeliver_after=self.redeliver_after,
                                               types=self.spec.types):
            await ready.put(delivery)
        raise RuntimeError(f"the bus stopped delivering to {self.name}")

    async def handle_batch(self, envelopes: Sequence[Envelope]) -> list[str]:
        """`handle` each event, in one transaction for all; the outcomes in order."""
        if len(envelopes) == 1:
            return [await self.handle(envelopes[0])]
        outcomes: dict[int, str] = {}
        together: list[int] = []
        for i, envelope in enumerate(envelopes):
            if not self._wanted(envelope):
                outcomes[i] = self._count("ignored")
            elif self._valid(envelope):
                together.append(i)
            else:  # on its own: dead-lettered, and the others go on
                outcomes[i] = await self.handle(envelope)
        if not together:  # nothing this consumer wants: no transaction at all
            return [outcomes[i] for i in range(len(envelopes))]
        try:
            applied = await self._apply_batch([envelopes[i] for i in together])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("consumer_batch_failed", consumer=self.name, events=len(together),
                        error=repr(exc))
            for i in together:  # rolled back whole: each again, with retries of its own
                outcomes[i] = await self.handle(envelopes[i])
        else:
            for i, outcome in zip(together, applied, strict=True):
                outcomes[i] = self._count(outcome)
        return [outcomes[i] for i in range(len(envelopes))]

    def _wanted(self, envelope: Envelope) -> bool:
        return envelope.get("type") in self.spec.types and (
            self.spec.wants is None or self.spec.wants(envelope))

    def _valid(self, envelope: Envelope) -> bool:
        if self.validate is None:
            return True
        try:
            self.validate(envelope)
        except Exception:
            return False
        return True

    async def handle(self, envelope: Envelope) -> str:
        """Process one event; returns the outcome (applied, duplicate, stale, ignored, dead)."""
        if not self._wanted(envelope):
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
        with _one_batch(), tracing.span_from(envelope, f"consume {self.name}") as span:
            outcome = await self._apply_one(envelope)
            if span is not None:
                span.set_attribute("instock.outcome", outcome)
            return outcome

    async def _apply_one(self, envelope: Envelope) -> str:
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
            if self.spec.finish is not None:
                await self.spec.finish(conn)
            if sequence is not None:
                await inbox.advance(conn, self.name, envelope)
            return "applied"

    async def _apply_batch(self, envelopes: Sequence[Envelope]) -> list[str]:
        """`_apply` of each event in one transaction, in order: the transaction's span links
        to every event's trace, and each event's handling is a child span in its own."""
        with _one_batch(), tracing.batch_span(
                envelopes, f"consume {self.name} batch", kind=tracing.SpanKind.CONSUMER,
                attributes={"messaging.batch.message_count": len(envelopes)}):
            return await self._apply_together(envelopes)

    async def _apply_together(self, envelopes: Sequence[Envelope]) -> list[str]:
        async with self.db.write() as conn:
            claimed = await inbox.claim_many(conn, self.name, envelopes)
            newest = await inbox.positions_of(conn, self.name, (
                inbox.ordering_key(e) for e in envelopes
                if self.spec.ordered and e.get("sequence") is not None and e["id"] in claimed))
            advanced: dict[str, int] = {}
            stale: list[str] = []
            outcomes: list[str] = []
            for envelope in envelopes:
                if envelope["id"] not in claimed:
                    outcomes.append("duplicate")
                    continue
                claimed.discard(envelope["id"])  # delivered twice in this batch: once
                sequence = envelope.get("sequence") if self.spec.ordered else None
                key = inbox.ordering_key(envelope) if sequence is not None else ""
                current = advanced.get(key, newest.get(key))
                if sequence is not None and current is not None and sequence < current:
                    stale.append(envelope["id"])
                    outcomes.append("stale")
                    continue
                with tracing.span_from(envelope, f"consume {self.name}",
                                       link=tracing.current_span_context()):
                    await self.spec.handler(conn, envelope)
                if sequence is not None:
                    advanced[key] = sequence
                outcomes.append("applied")
            if self.spec.finish is not None:
                await self.spec.finish(conn)
            await inbox.mark_stale_many(conn, self.name, stale)
            await inbox.advance_many(conn, self.name, advanced)
        return outcomes

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


# A lingering consumer looks at its queue this many times while it waits.
LINGER_LOOKS = 5


async def _burst(ready: asyncio.Queue[Delivery], reader: asyncio.Task[None],
                 linger: float = 0.0) -> list[Delivery]:
    """The next delivery, waited for, and every one behind it (up to BATCH_MAX) by `linger`
    seconds later or as soon as the queue is full; the reader's failure if it stops first."""
    if ready.empty():
        first = asyncio.ensure_future(ready.get())
        done, _ = await asyncio.wait([first, reader], return_when=asyncio.FIRST_COMPLETED)
        if first not in done:
            first.cancel()
            reader.result()  # raises why the bus stopped
        batch = [await first]
    else:
        batch = [ready.get_nowait()]
    for _ in range(LINGER_LOOKS if linger > 0 else 0):
        if ready.full():  # a full batch waits for no one
            break
        await asyncio.sleep(linger / LINGER_LOOKS)
    while len(batch) < BATCH_MAX and not ready.empty():
        batch.append(ready.get_nowait())
    return batch
