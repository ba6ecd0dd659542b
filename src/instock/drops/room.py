"""The waiting room, live: each ticket holder watching its standing (SSE) is told when it moves
up, when it is admitted, and when the drop sells out, by one ticker per drop per process.

Built for ten thousand watchers on one process. A watcher's absolute position is read once,
when it connects (its place never changes); everything else it is told is arithmetic on two
numbers the room's ticker computes once per tick for all of them: how many the room has
admitted (`model.admitted_through`, the clock) and whether the drop is sold out (the inventory's
per-process stock copy, which the event stream keeps fresh: no query per tick unless a stock
change aged it). So a tick costs a loop over the drop's watchers in memory, and wakes only those
with something to be told (`model.push_due`): a move in the line at most every `push_seconds`
per watcher, spread over time by a random phase given at connect, and admission, a hold or a
sell-out at once. A sell-out heard on the event stream (`inventory.sold_out.v1`, from this
process's commits or any other's through the bus) wakes the ticker at once instead of waiting
for its next tick.

A watcher costs a small object here (its position, arrival, what it was last sent, and the
event its stream waits on); the room holds no rows and loses nothing when the process dies
(reconnecting reads the position again).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog

from instock.drops import model
from instock.inventory.events import BackInStock, SoldOut
from instock.platform.bus import Envelope
from instock.platform.db import utcnow
from instock.platform.telemetry import (
    DROP_ADMIT_RATE,
    DROP_ADMITTED,
    DROP_QUEUE_LENGTH,
    DROP_TICKETS,
    DROP_WAIT,
    DROP_WATCHERS,
)

log = structlog.get_logger(__name__)
STOCK_TURNS = frozenset({SoldOut.type, BackInStock.type})

SoldOutCheck = Callable[[model.Drop], Awaitable[bool]]
TicketCount = Callable[[str], Awaitable[int]]
WAKE_CHUNK = 8  # watchers woken per turn of the event loop (see Room._push)
SCAN_CHUNK = 1024  # watchers looked at per turn of the event loop
SPREAD = 0.5  # the share of a tick a tick's wake-ups are spread over
EarlyKeys = Callable[[str], Awaitable[list[str]]]  # the drop's pre-start place keys, in order
Rates = Callable[[model.Drop], Awaitable[model.Drop]]  # the drop with its stored rate segments


@dataclass(frozen=True)
class RoomSettings:
    tick_seconds: float = 1.0  # how often a drop's ticker recomputes its room
    push_seconds: float = 5.0  # a watcher is told it moved up at most this often
    count_seconds: float = 5.0  # how often the tickets are counted (the queue-length gauge)


class Watcher:
    """One ticket holder's stream: its place, what it was last sent, and its wake-up."""

    __slots__ = ("arrived_at", "held", "key", "pending", "position", "ready", "room",
                 "sent", "sent_at")

    def __init__(self, room: Room, place: model.Place, position: int, held: bool,
                 arrived_at: datetime) -> None:
        self.room = room
        # Absolute, read once: a place never changes. Read before the start, it is
        # provisional (`key` set): later arrivals before the start may be shuffled ahead,
        # and the room ranks these once more when the drop starts.
        self.position = position
        self.key = place.key if place.lane == model.PRE_START else None
        self.held = held
        self.arrived_at = arrived_at
        self.sent: model.Live | None = None
        self.sent_at = 0.0  # time.monotonic() of the last push
        self.pending: model.Live | None = None
        self.ready = asyncio.Event()

    @property
    def drop(self) -> model.Drop:
        return self.room.drop

    def offer(self, view: model.Live, at: float) -> None:
        self.sent, self.sent_at, self.pending = view, at, view
        self.ready.set()

    async def next(self, heartbeat: float) -> model.Live | None:
        """The newest standing not yet sent, or None after `heartbeat` seconds of quiet."""
        if self.pending is None:
            # asyncio.timeout, not wait_for: no task per wake (live/service.py's reason).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat):
                    await self.ready.wait()
        self.ready.clear()
        view, self.pending = self.pending, None
        return view

    def wake(self) -> None:
        self.ready.set()

    def close(self) -> None:
        self.room.leave(self)


class Room:
    """One drop's watchers in this process and the ticker that keeps them told."""

    def __init__(self, drop: model.Drop, rooms: Rooms) -> None:
        self.drop = drop
        self.rooms = rooms
        self.skus = frozenset(drop.skus)
        self.watchers: set[Watcher] = set()
        self.through = 0
        self.sold_out = False
        self.told_sold_out = False  # what the last push went by
        self.tickets = 0
        self.counted_at = float("-inf")
        self.ready = asyncio.Event()  # the first state is known
        self.poked = asyncio.Event()
        self.closed = False
        self.task = asyncio.create_task(self._run(), name=f"drop-room-{drop.id}")

    def view(self, watcher: Watcher, now: datetime) -> model.Live:
        return model.live_standing(self.drop, watcher.position, watcher.held, self.through,
                                   self.sold_out, now)

    def join(self, watcher: Watcher) -> None:
        now = self.rooms.clock()
        self.watchers.add(watcher)
        DROP_WATCHERS.labels(self.drop.id).set(len(self.watchers))
        # A random phase: watchers who connected together are not all told of their moves in
        # the same tick.
        at = time.monotonic() - random.uniform(0, self.rooms.settings.push_seconds)  # noqa: S311 - spreading load
        watcher.offer(self.view(watcher, now), at)

    def leave(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        DROP_WATCHERS.labels(self.drop.id).set(len(self.watchers))
        if not self.watchers:
            self.poked.set()  # the ticker closes the room unless someone joins first

    def poke(self) -> None:
        self.poked.set()

    async def _run(self) -> None:
        settings = self.rooms.settings
        try:
            await self._refresh()
            self.ready.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.tick_seconds):
                        await self.poked.wait()
                self.poked.clear()
                if not self.watchers:
                    break
                await self._refresh()
                await self._push()
        finally:
            self.closed = True
            self.ready.set()  # nobody waits on a room that is gone
            self.rooms.forget(self)

    async def _refresh(self) -> None:
        """The room's state now: how many admitted, whether sold out, (now and then) how many
        tickets; the gauges follow. A failed read keeps the last state (logged)."""
        if self.rooms.rates is not None and self.drop.admission is model.Admission.CAPACITY:
            # A capacity drop's rate segments, read once a tick for all its watchers.
            try:
                self.drop = await self.rooms.rates(self.drop)
            except Exception:
                log.exception("drop_room_rates_failed", drop_id=self.drop.id)
        drop, now, mono = self.drop, self.rooms.clock(), time.monotonic()
        self.through = model.admitted_through(drop, now)
        try:
            if drop.started(now) and any(w.key is not None for w in self.watchers):
                self._rank(await self.rooms.early_keys(drop.id))
            if drop.started(now):
                self.sold_out = await self.rooms.sold_out(drop)
            if mono - self.counted_at >= self.rooms.settings.count_seconds:
                self.tickets, self.counted_at = await self.rooms.tickets(drop.id), mono
        except Exception:
            log.exception("drop_room_refresh_failed", drop_id=drop.id)
        admitted = min(self.through, self.tickets)
        DROP_TICKETS.labels(drop.id).set(self.tickets)
        DROP_ADMITTED.labels(drop.id).set(admitted)
        DROP_QUEUE_LENGTH.labels(drop.id).set(max(0, self.tickets - self.through))
        admitting = drop.started(now) and not self.sold_out and not drop.over(now)
        DROP_ADMIT_RATE.labels(drop.id).set(model.rate_at(drop, now) if admitting else 0.0)

    def _rank(self, keys: list[str]) -> None:
        """Final positions of those who came before the start, from the room's early keys
        in order (one read for them all, once the start has closed that lane)."""
        for watcher in self.watchers:
            if watcher.key is not None:
                watcher.position = bisect.bisect_left(keys, watcher.key) + 1
                watcher.key = None

    async def _push(self) -> None:
        """Wake the watchers with news. Not all in one turn of the event loop: each woken
        stream writes its frame at once, and a thousand writing in one turn would hold every
        other request of the process for that long, once per turn it needs (a request
        awaiting the database takes several). So the due are found first (yielding every
        `SCAN_CHUNK` looked at), then woken `WAKE_CHUNK` at a time, paced over
        `SPREAD` of a tick (a sell-out reaches ten thousand within half a second)."""
        drop, now, mono = self.drop, self.rooms.clock(), time.monotonic()
        every, through = self.rooms.settings.push_seconds, self.through
        turned, self.told_sold_out = self.sold_out != self.told_sold_out, self.sold_out
        due: list[tuple[Watcher, model.Live]] = []
        for scanned, watcher in enumerate(list(self.watchers)):  # a copy: we yield below
            if scanned % SCAN_CHUNK == SCAN_CHUNK - 1:
                await asyncio.sleep(0)
            sent = watcher.sent
            # Most watchers, most ticks: no sell-out turned, still on the same side of the
            # line as last told, and no move worth telling yet (told too recently, or moved
            # too little for where they stand). Nothing to build for them: a standing costs
            # microseconds, and ten thousand of them a tick held the loop for milliseconds.
            if (sent is not None and not turned
                    and (watcher.position > through) == (sent.position > 0)
                    and not model.move_due(sent.position, max(0, watcher.position - through),
                                           mono - watcher.sent_at, every)):
                continue
            view = self.view(watcher, now)
            if model.push_due(sent, view, mono - watcher.sent_at, every):
                due.append((watcher, view))
        chunks = -(-len(due) // WAKE_CHUNK)
        pause = self.rooms.settings.tick_seconds * SPREAD / max(1, chunks)
        for woken, (watcher, view) in enumerate(due, 1):
            if watcher not in self.watchers:  # gone while we paused
                continue
            sent = watcher.sent
            if view.admitted and sent is not None and not sent.admitted:
                DROP_WAIT.observe(model.waited(drop, watcher.position, watcher.arrived_at))
            watcher.offer(view, mono)
            if woken % WAKE_CHUNK == 0 and woken < len(due):
                await asyncio.sleep(pause)


class Rooms:
    """This process's live waiting rooms, one per drop someone here is watching."""

    def __init__(self, sold_out: SoldOutCheck, tickets: TicketCount, early_keys: EarlyKeys,
                 settings: RoomSettings | None = None,
                 clock: Callable[[], datetime] = utcnow, rates: Rates | None = None) -> None:
        self.sold_out = sold_out
        self.rates = rates
        self.tickets = tickets
        self.early_keys = early_keys
        self.settings = settings or RoomSettings()
        self.clock = clock
        self._rooms: dict[str, Room] = {}

    async def watch(self, drop: model.Drop, place: model.Place, position: int, held: bool,
                    arrived_at: datetime) -> Watcher:
        """A watcher of the drop's room at `position`, its first standing pending."""
        while True:
            room = self._rooms.get(drop.id)
            if room is None:
                room = self._rooms[drop.id] = Room(drop, self)
            await room.ready.wait()
            if not room.closed:  # it may have closed while we waited: open another
                watcher = Watcher(room, place, position, held, arrived_at)
                room.join(watcher)
                return watcher

    def forget(self, room: Room) -> None:
        if self._rooms.get(room.drop.id) is room:
            del self._rooms[room.drop.id]
        DROP_WATCHERS.labels(room.drop.id).set(0)

    def heard(self, envelopes: Iterable[Envelope]) -> None:
        """A drop SKU sold out (or came back): its room tells its watchers now, not at the
        next tick."""
        if not self._rooms:
            return
        for envelope in envelopes:
            if envelope.get("type") in STOCK_TURNS:
                sku = str(envelope.get("subject"))
                for room in self._rooms.values():
                    if sku in room.skus:
                        room.poke()

    async def close(self) -> None:
        tasks = [room.task for room in self._rooms.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
