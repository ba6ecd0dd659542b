"""Consumer groups for the RabbitMQ Streams bus (rabbitmq.py): members and their slot leases.

Why this design: the group must share one stream between its members (each event handled by
one of them), keep per-key order, and let survivors take over a dead member's work.
- Super streams partitioned by key with single-active-consumer per partition would let the
  broker do it, but RabbitMQ 3.10 (what runs here) has neither (both came in 3.11).
- Every member reading everything with server-side offsets per group shares nothing.
- A stream per partition, written by key, loses the one order of all events that history(),
  listen() and a one-member group deliver (the contract suite checks it).
So there is one stream, and the group splits it itself. Every event belongs to one of SLOTS
slots (a stable hash of its ordering key: the SKU for inventory events). At any time a slot is
leased to at most one member, which delivers that slot's events in stream order: per-key order
holds in a group however many members it has. Each member reads the whole stream and hands out
the events of its slots (the price: a group of N reads the stream N times).

Leases are decided by a control stream, `<stream>-groups` (rabbitmq_leases.py). Each member
appends a record every redeliver_after/4 (0.05 to 2 s) saying "member M holds slots S for ttl
ms"; every member folds the same records in the same order (`Leases.fold`), so all agree on
every grant with no coordinator and no clock but the broker's record timestamps: a slot is
granted if it is free, already M's, or its holder's lease ran out before the record was
written (a process reads the control stream once, rabbitmq_control.py, and hands each member
its group's records). A member counts its lease from when it *sent* the record, before the
broker wrote it, so it stops using a slot before anyone else may take it. The live members
split the slots between them (`Leases.share`); a member hands over a slot that is no longer
its share once what it delivered from it is acked, by storing the slot's position (the
broker's offset tracking, reference "<group>:<slot>") and then leaving the slot out of its
next record.
Whoever takes a slot next starts from that position; a new group's slots start at the oldest
message or at `since`.

A member counts as alive while its consumer asks for more (it is inside `__anext__`) or holds a
delivery younger than `redeliver_after`. A member that is neither (it stopped iterating, its
handler hangs, its process died) stops renewing, and its slots - with what it had not acked -
go to the others once its lease runs out: redelivered about `redeliver_after` after they were
handed out (within 3 heartbeats for a member that died while waiting for events). A live
member redelivers its own unacked deliveries after `redeliver_after`. Acks are stored every
COMMIT_EVERY seconds, so a crash redelivers at most that much acked work. After a reconnection
a member keeps its deliveries in hand for every slot the log shows nobody else held meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import structlog
from rstream.constants import OffsetType

from instock.platform.bus.base import Delivery
from instock.platform.bus.common import BusClosed, Lifetime, decode
from instock.platform.bus.rabbitmq_control import ControlFeed
from instock.platform.bus.rabbitmq_leases import SLOTS, Leases, Record, slot_of
from instock.platform.bus.rabbitmq_link import TRANSIENT, Link, Lost, Subscription, messages
from instock.platform.retry import backoff

log = structlog.get_logger(__name__)

MIN_GAP = 0.02  # seconds between two records of one member at the least
COMMIT_EVERY = 0.25
LEAVE_TIMEOUT = 3.0
CREDIT = 4  # chunks of the event stream a member may have on its way


@dataclass(eq=False)
class _Pending:
    body: bytes
    deadline: float  # monotonic


@dataclass(eq=False)
class _Slot:
    cursor: int  # every event of this slot before this offset was handed out
    lease_end: float  # monotonic: ours until then, unless renewed
    pending: dict[int, _Pending] = field(default_factory=dict)  # offset -> not yet acked
    leaving: bool = False  # no longer our share: nothing new is handed out

    def usable(self, now: float) -> bool:
        return not self.leaving and now < self.lease_end

    def busy_until(self, now: float) -> float:
        """The deadline of its youngest live delivery, or 0.0."""
        return max((p.deadline for p in self.pending.values() if p.deadline > now), default=0.0)

    def position(self) -> int:
        """Where the group resumes this slot: its oldest unacked delivery, or the cursor."""
        return min(self.pending) if self.pending else self.cursor


async def _wait(event: asyncio.Event, timeout: float) -> None:
    # asyncio.timeout, not wait_for: see memory._Wakeup on cancellations wait_for swallows.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(None if math.isinf(timeout) else max(timeout, 0.0)):
            await event.wait()


class Member:
    """One consume() call: a member of group `group`, reading the slots it leases."""

    def __init__(self, link: Link, life: Lifetime, stream: str, control: str, group: str, *,
                 start: Callable[[], Awaitable[int]], redeliver_after: float,
                 members: set[Member], feed: ControlFeed) -> None:
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.group = group
        self._link, self._life, self._stream, self._control = link, life, stream, control
        self._start, self._start_offset = start, -1
        self._redeliver_after = redeliver_after
        self._heartbeat = min(max(redeliver_after / 4, 0.05), 2.0)
        self._window_ms = int(max(120.0, 4 * redeliver_after) * 1000)
        self._members = members
        self._feed = feed  # the control stream's records of our group, read once per bus
        self._heard: deque[tuple[int, Record]] = deque()
        self.slots: dict[int, _Slot] = {}
        self.share = frozenset(range(SLOTS))
        self.leases = Leases()
        self.waiting = False  # inside __anext__: the consumer is asking for more
        self._changed = asyncio.Event()  # wakes the consumer side
        self._poke = asyncio.Event()  # wakes the coordinator
        self._sub: Subscription | None = None
        self._backlog: deque[tuple[int, bytes]] = deque()
        self._pop_at = 0  # the next event stream offset to look at
        self._scan_at = math.inf  # when the next redelivery may fall due
        self._nonce = self._applied = 0
        self._sent: dict[int, float] = {}  # nonce -> monotonic time it was sent
        self._last_own: frozenset[int] | None = None
        self._last_beat, self._next_beat, self._bye = -math.inf, 0.0, False
        self._dirty: set[int] = set()
        self._flush_at = math.inf
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _reference(self, slot: int) -> str:
        return f"{self.group}:{slot}"

    # -- the consumer's side -----------------------------------------------------------------

    async def deliveries(self) -> AsyncIterator[Delivery]:
        self._members.add(self)
        self._task = asyncio.create_task(self._coordinate())
        try:
            while True:
                if not self.waiting and self._bye:
                    self._poke.set()  # back after a pause: join again
                self.waiting = True
                delivery = await self._life.run(self._next())
                self.waiting = False
                yield delivery
        except BusClosed:
            return
        finally:
            self.waiting = False
            await self.stop()

    async def _next(self) -> Delivery:
        while True:
            self._changed.clear()
            now = time.monotonic()
            if now >= self._scan_at and (delivery := self._redeliver(now)) is not None:
                return delivery
            if await self._subscribed(now):
                while (message := await self._pop()) is not None:
                    if (delivery := self._deliver(*message)) is not None:
                        return delivery
            await _wait(self._changed, self._scan_at - time.monotonic())

    async def _subscribed(self, now: float) -> bool:
        """Make sure the event stream is read from the lowest cursor of the usable slots."""
        cursors = [slot.cursor for slot in self.slots.values() if slot.usable(now)]
        if not cursors:
            return False
        start, sub = min(cursors), self._sub
        if sub is not None and not sub.lost and start >= self._pop_at:
            return True
        self._sub, self._backlog = None, deque()
        if sub is not None:
            await self._link.unsubscribe(sub)
        self._sub = await self._life.persist(
            partial(self._link.subscribe, self._stream, OffsetType.OFFSET, start, credit=CREDIT,
                    wake=self._changed), retry_on=TRANSIENT, what="subscribe")
        self._pop_at = start
        return True

    async def _pop(self) -> tuple[int, bytes] | None:
        while not self._backlog:
            frame = await self._sub.take() if self._sub is not None else None
            if frame is None:
                return None
            # A chunk may start before the offset subscribed from.
            self._backlog.extend(m for m in messages(frame) if m[0] >= self._pop_at)
        return self._backlog.popleft()

    def _deliver(self, offset: int, body: bytes) -> Delivery | None:
        covered, self._pop_at = self._pop_at, offset + 1
        envelope = decode(body, stream=self._stream, offset=offset, group=self.group)
        target = slot_of(envelope) if envelope is not None else -1
        now, found = time.monotonic(), None
        for number, slot in self.slots.items():
            # Skip a slot that is past this offset, frozen (being handed over), or behind what
            # this subscription read (granted meanwhile from an older position): moving its
            # cursor would skip its events; the next _subscribed() reads them from its cursor.
            if slot.cursor > offset or slot.cursor < covered or not slot.usable(now):
                continue
            slot.cursor = offset + 1
            if number == target:
                found = slot
        if found is None or envelope is None:
            return None
        found.pending[offset] = _Pending(body, now + self._redeliver_after)
        self._scan_at = min(self._scan_at, now + self._redeliver_after)
        return Delivery(envelope, partial(self._ack, target, found, offset))

    def _redeliver(self, now: float) -> Delivery | None:
        """The oldest delivery of a usable slot not acked within redeliver_after, again."""
        due: tuple[int, _Slot, int] | None = None
        soonest = math.inf
        for number, slot in self.slots.items():
            if not slot.usable(now):
                continue
            for offset, pending in slot.pending.items():
                if pending.deadline > now:
                    soonest = min(soonest, pending.deadline)
                elif due is None or offset < due[2]:
                    due = (number, slot, offset)
        if due is None:
            self._scan_at = soonest
            return None
        number, slot, offset = due
        pending = slot.pending[offset]
        pending.deadline = now + self._redeliver_after
        self._scan_at = now  # more may be due
        envelope = decode(pending.body)
        assert envelope is not None  # it decoded when first handed out
        return Delivery(envelope, partial(self._ack, number, slot, offset))

    async def _ack(self, number: int, slot: _Slot, offset: int) -> None:
        # A slot handed over (or lost) since: its next holder delivers this event again.
        if self.slots.get(number) is not slot or slot.pending.pop(offset, None) is None:
            return
        self._dirty.add(number)
        if math.isinf(self._flush_at) or slot.leaving:
            self._flush_at = min(self._flush_at, time.monotonic() + COMMIT_EVERY)
            self._poke.set()

    # -- the coordinator: leases, records, stored positions ------------------------------

    async def _coordinate(self) -> None:
        failures = 0
        while not self._stopping:
            applied = self._applied
            try:
                await self._follow()
            except BusClosed:
                return
            except Exception as exc:  # a background task must not die of a broker restart
                failures = 1 if self._applied > applied else failures + 1
                log.warning("bus.retrying", operation="group leases", group=self.group,
                            error=repr(exc))
                await asyncio.sleep(backoff(failures, base=0.1, cap=5.0, jitter=0.5,
                                            draw=random.random()))  # noqa: S311 - jitter

    def hear(self, ts: int, record: Record) -> None:
        """A record of our group, from the feed."""
        self._heard.append((ts, record))
        self._poke.set()

    def wake(self) -> None:
        self._poke.set()

    async def _follow(self) -> None:
        """One epoch of the feed's: fold the control stream, write records, store positions.
        The view is rebuilt from the feed's window of records whenever it read them again."""
        self.leases, self._sent = Leases(), {}
        await self._life.run(self._feed.ready_for(self._window_ms))
        epoch = self._feed.epoch
        self._heard = deque(self._feed.join(self))
        self._next_beat = 0.0
        try:
            while not self._stopping:
                self._poke.clear()
                if self._feed.epoch != epoch or not self._feed.ready.is_set():
                    raise Lost("the control stream is being read again")
                while self._heard:
                    await self._fold(*self._heard.popleft())
                now = time.monotonic()
                if self._due(now):
                    await self._beat(now)
                elif now >= self._flush_at:
                    await self._flush(now)
                beat_at = math.inf if self._paused(time.monotonic()) else self._next_beat
                await _wait(self._poke, min(beat_at, self._flush_at) - time.monotonic())
        finally:
            self._feed.leave(self)

    async def _fold(self, ts: int, record: Record) -> None:
        granted = self.leases.fold(ts, record)
        if record.member == self.id and record.nonce > self._applied:
            self._applied = record.nonce
            sent = self._sent.get(record.nonce)
            self._sent = {n: t for n, t in self._sent.items() if n > record.nonce}
            if sent is not None:
                await self._apply(granted, sent + record.ttl / 1000)
        self.share = self.leases.share(self.id)
        for number, slot in self.slots.items():
            slot.leaving = number not in self.share

    async def _apply(self, granted: dict[int, bool], lease_end: float) -> None:
        """Our record was folded: keep what it renewed, take up what it newly granted."""
        for number in [n for n in self.slots if n not in granted]:
            del self.slots[number]  # released, or lost to another member
        fresh = []
        for number, continued in granted.items():
            if continued and number in self.slots:
                self.slots[number].lease_end = lease_end
            else:
                fresh.append(number)
        if fresh:
            answers = await asyncio.gather(*(self._link.query_offset(
                self._stream, self._reference(n)) for n in fresh), return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
            stored = [a for a in answers if not isinstance(a, BaseException)]
            new = [n for n, at in zip(fresh, stored, strict=True) if at is None]
            if new:  # a new group: fix where it starts, for whoever holds these slots next
                if self._start_offset < 0:
                    self._start_offset = await self._start()
                await self._link.store_offsets(
                    self._stream, {self._reference(n): self._start_offset for n in new},
                    confirm=True)
            for number, at in zip(fresh, stored, strict=True):
                self.slots[number] = _Slot(self._start_offset if at is None else at, lease_end,
                                           leaving=number not in self.share)
        self._scan_at = 0.0  # renewed slots may hold deliveries that fell due meanwhile
        self._changed.set()

    def _active(self, now: float) -> bool:
        return self.waiting or any(s.busy_until(now) > now for s in self.slots.values())

    def _intended(self, now: float) -> frozenset[int]:
        """The slots to name in our next record: our share, and what we still work on."""
        if not self._active(now):
            return frozenset()
        busy = {n for n, s in self.slots.items() if s.busy_until(now) > now}
        return self.share | busy

    def _paused(self, now: float) -> bool:
        """Stopped iterating, holding nothing, and the group was told: nothing to say until
        the consumer asks again (deliveries() pokes us then)."""
        return self._bye and not self.slots and not self._active(now)

    def _due(self, now: float) -> bool:
        if self._paused(now):
            return False
        if now >= self._next_beat:
            return True
        if self._sent:
            return False  # our last record is on its way: decide again once it is folded
        soon = (self._intended(now) != self._last_own or any(
            n not in self.slots and self.leases.claimable(n) for n in self.share))
        if soon and now < self._last_beat + MIN_GAP:
            self._next_beat = min(self._next_beat, self._last_beat + MIN_GAP)
            return False
        return soon

    async def _beat(self, now: float) -> None:
        active, own = self._active(now), self._intended(now)
        release = [n for n in self.slots if n not in own]
        if release:  # hand over where the group stands, then let go
            for number in release:
                self.slots[number].leaving = True
            await self._link.store_offsets(self._stream, {
                self._reference(n): self.slots[n].position() for n in release}, confirm=True)
            for number in release:
                del self.slots[number]
        ttl = 0.0
        if active:
            busy = max((s.busy_until(now) for s in self.slots.values()), default=0.0)
            ttl = max(3 * self._heartbeat if self.waiting else 0.0, busy - now)
        self._nonce += 1
        self._sent[self._nonce] = now
        self._last_beat, self._next_beat = now, now + self._heartbeat
        self._last_own, self._bye = own, not active
        await self._link.publish(self._control, [Record(
            self.group, self.id, self._nonce, max(1, int(ttl * 1000)), own, not active).encode()])
        if self._dirty:
            await self._flush(now)

    async def _flush(self, now: float) -> None:
        """Store the positions of the slots acked in since the last time."""
        dirty, self._dirty, self._flush_at = self._dirty, set(), math.inf
        await self._link.store_offsets(self._stream, {
            self._reference(n): self.slots[n].position() for n in dirty
            if n in self.slots and now < self.slots[n].lease_end})

    async def stop(self) -> None:
        """Leave the group: store positions, give up what is done, keep what is still in
        hand until its deadline (then the others redeliver it). Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._members.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if not self._link.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._leave(), LEAVE_TIMEOUT)
        if self._sub is not None:
            await self._link.unsubscribe(self._sub)

    async def _leave(self) -> None:
        now = time.monotonic()
        held = {n: s for n, s in self.slots.items() if now < s.lease_end}
        await self._link.store_offsets(self._stream, {
            self._reference(n): s.position() for n, s in held.items()}, confirm=True)
        busy = {n: s.busy_until(now) for n, s in held.items() if s.busy_until(now) > now}
        ttl = max(busy.values(), default=now) - now
        self._nonce += 1
        await self._link.publish(self._control, [Record(
            self.group, self.id, self._nonce, max(1, int(ttl * 1000)), frozenset(busy),
            bye=True).encode()])
