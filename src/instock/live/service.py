"""The hub: one bus listener per API process, fanning updates out to its own connections."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog

from instock.inventory.events import BUNDLE_LOCATION, ReservationEvent, StockChanged
from instock.live import model
from instock.live.events import Update
from instock.orders.events import OrderEvent
from instock.platform import tracing
from instock.platform.bus import Bus, Envelope
from instock.platform.bus.base import GAP
from instock.platform.bus.envelope import event_time
from instock.platform.errors import NotFound
from instock.platform.retry import keep_running
from instock.platform.telemetry import COMMIT_TO_PUSH

log = structlog.get_logger(__name__)
# Every reservation event goes to the staff's reservations stream, also one added later.
RESERVATION_EVENTS = frozenset(event.type for event in ReservationEvent.__subclasses__())
ORDER_EVENTS = frozenset(event.type for event in OrderEvent.__subclasses__())

Snapshot = Callable[[str], Awaitable[Update]]
Validator = Callable[[Envelope], None]
UnknownSkus = Callable[[list[str]], Awaitable[set[str]]]  # which of these SKUs do not exist


class Connection:
    """One client's mailbox and the signal that wakes its writer."""

    def __init__(self) -> None:
        self.mailbox = model.Mailbox()
        self.ready = asyncio.Event()
        self.skus: set[str] = set()
        self.topics: set[str] = set()

    def offer(self, update: Update) -> None:
        if self.mailbox.offer(update):
            self.ready.set()

    async def next(self, heartbeat: float) -> list[Update]:
        """The pending updates, or [] after `heartbeat` seconds of quiet (time for a ping)."""
        if not self.mailbox.pending:
            # asyncio.timeout, not wait_for: wait_for makes a task per wake, and a change to a
            # SKU 10,000 clients watch wakes 10,000 of these at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat):
                    await self.ready.wait()
        self.ready.clear()
        return self.mailbox.drain()


class LiveHub:
    def __init__(self, bus: Bus, snapshot: Snapshot, validate: Validator | None = None,
                 on_stock: Callable[[Update], None] | None = None, *,
                 on_event: Callable[[Envelope], None] | None = None,
                 unknown_skus: UnknownSkus | None = None,
                 heartbeat_seconds: float = 15.0) -> None:
        self.bus = bus
        self.snapshot = snapshot
        self.unknown_skus = unknown_skus  # None: every SKU asked for is taken as known
        self.heartbeat_seconds = heartbeat_seconds  # a quiet connection is pinged this often
        self.validate = validate
        self.on_stock = on_stock  # told every SKU's new state, watched or not
        self.on_event = on_event  # told every valid event heard
        self._by_sku: dict[str, set[Connection]] = {}
        self._by_topic: dict[str, set[Connection]] = {}
        self._resyncs: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Listen to the bus for the life of the process; reconnects are the adapter's job,
        and a listener that ends or fails is started again after a pause."""
        await keep_running(self._listen, "live_listener")

    async def _listen(self) -> None:
        async for envelope in self.bus.listen():
            if envelope.get("type") == GAP:
                self._resync_soon()
            else:
                self.dispatch(envelope)

    def _resync_soon(self) -> None:
        # In a task: the listener keeps reading while the snapshots are read, and a newer
        # event it hears meanwhile wins over an older snapshot (versions only move forward).
        task = asyncio.create_task(self.resync())
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def resync(self) -> None:
        """Offer every watched SKU's current state again: this process's listener may have
        missed changes (a broker reconnect, or it fell behind), and a client must never be left
        on a count that is no longer true. Clients that already have a version lose nothing."""
        skus = list(self._by_sku)
        log.info("live_resync", skus=len(skus))
        for sku in skus:
            try:
                update = await self.snapshot(sku)
            except Exception:  # the store is down too: the next gap or change will tell
                log.exception("live_resync_failed", sku=sku)
                return
            for connection in list(self._by_sku.get(sku, ())):
                connection.offer(update)

    def dispatch(self, envelope: Envelope) -> None:
        # The push to this process's SSE, WebSocket and GraphQL subscribers, in the trace of
        # the request that caused the event (nothing at all while tracing is off).
        with tracing.span_from(envelope, "live push", kind=tracing.SpanKind.CONSUMER) as span:
            offered = self._dispatch(envelope)
            if span is not None:
                span.set_attribute("live.connections", offered)

    def _dispatch(self, envelope: Envelope) -> int:
        """Offer the event to every connection that watches it; how many it was offered to."""
        if self.validate is not None:
            try:
                self.validate(envelope)
            except ValueError as exc:  # never push what breaks the published schema
                log.error("live_invalid_event", event_id=envelope.get("id"), error=str(exc))
                return 0
        if self.on_event is not None:
            self.on_event(envelope)
        kind = envelope.get("type")
        offered = 0
        if kind == StockChanged.type:
            public = model.stock_update(envelope)
            if public is not None:
                if self.on_stock is not None:
                    self.on_stock(public)
                watching = self._by_sku.get(public.key, ())
                for connection in watching:
                    connection.offer(public)
                if watching:
                    COMMIT_TO_PUSH.observe(max(0.0, time.time() - event_time(envelope)))
                offered += len(watching)
            # A kit's count moving is no ledger movement: its components' entries are.
            if (envelope.get("data") or {}).get("location") != BUNDLE_LOCATION:
                offered += self._offer_staff(model.ledger_update(envelope))
        elif kind in RESERVATION_EVENTS:
            offered += self._offer_staff(model.reservation_update(envelope))
        elif kind in ORDER_EVENTS:
            offered += self._offer_staff(model.order_update(envelope))
        return offered

    def _offer_staff(self, update: Update) -> int:
        following = self._by_topic.get(update.topic, ())
        for connection in following:
            connection.offer(update)
        return len(following)

    async def watch(self, connection: Connection, skus: Iterable[str],
                    cursor: dict[str, int] | None = None) -> None:
        """Subscribe to SKUs, then seed each with its current state unless the client already
        has it (resuming): subscribing first means no change falls between snapshot and push.
        SKUs the catalogue does not know refuse the whole subscription (NotFound)."""
        skus = list(skus)
        unknown = await self.unknown_skus(skus) if self.unknown_skus and skus else set()
        if unknown:
            raise NotFound(f"unknown SKUs: {', '.join(sorted(unknown))}")
        wanted = [sku for sku in dict.fromkeys(skus) if sku not in connection.skus]
        for sku in wanted:
            connection.skus.add(sku)
            self._by_sku.setdefault(sku, set()).add(connection)
            if cursor and sku in cursor:
                connection.mailbox.sent[sku] = cursor[sku]
        for sku in wanted:
            connection.offer(await self.snapshot(sku))

    def unwatch(self, connection: Connection, skus: Iterable[str]) -> None:
        for sku in skus:
            connection.skus.discard(sku)
            _discard(self._by_sku, sku, connection)
            connection.mailbox.sent.pop(sku, None)
            connection.mailbox.pending.pop(sku, None)

    def follow(self, connection: Connection, topic: str) -> None:
        connection.topics.add(topic)
        self._by_topic.setdefault(topic, set()).add(connection)

    def unfollow(self, connection: Connection, topic: str) -> None:
        connection.topics.discard(topic)
        _discard(self._by_topic, topic, connection)

    def close(self, connection: Connection) -> None:
        self.unwatch(connection, list(connection.skus))
        for topic in list(connection.topics):
            self.unfollow(connection, topic)


def _discard(index: dict[str, set[Connection]], key: str, connection: Connection) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(connection)
        if not members:
            del index[key]
