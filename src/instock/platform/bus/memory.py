"""The embedded bus (`memory://`): one process, no server, nothing survives a restart.

A bounded in-process log (the newest `maxlen` messages, default 100,000) read three ways:
- consumer groups keep a cursor into the log plus the deliveries not yet acked; a delivery not
  acked within `redeliver_after` seconds is handed to the next member that asks (a member that
  stopped iterating is "dead" as far as the group cares);
- listeners each get a bounded mailbox (`?listen_buffer=`, default 10,000). A listener that does
  not keep up loses the OLDEST messages in its mailbox, never blocks publishers and never grows
  memory; it logs how many it lost when it reads again;
- history() reads the log between two sequence numbers.

Stored as JSON text, so every reader gets its own copy (as from a real broker) and a payload that
could not cross a network fails here too. Timestamps for `since` are the bus's receive times.

"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import orjson
import structlog

from instock.platform.bus.base import Bus, Delivery, Envelope
from instock.platform.bus.common import (
    DEFAULT_LISTEN_BUFFER,
    Mailbox,
    query_params,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_MAXLEN = 100_000


class _Wakeup:
    """Broadcast wake-up: every waiter returns at the next fire() or after its timeout."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:
        # Not asyncio.wait_for: on Python 3.11 a cancellation that arrives as the event fires
        # is swallowed by it, and a consumer told to stop would loop on (a lifespan's shutdown
        # hung on it in 2 of 10 runs of test_tracing). asyncio.timeout passes it on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()


@dataclass
class _Group:
    cursor: int
    # seq -> (token, deadline) of its latest unacked delivery
    pending: dict[int, tuple[int, float]] = field(default_factory=dict)
    # heap of (deadline, seq, token); stale entries (acked, redelivered) are skipped lazily and
    # dropped in a rebuild once they outnumber the live ones, so the heap stays O(pending)
    deadlines: list[tuple[float, int, int]] = field(default_factory=list)

    def hand_out(self, seq: int, token: int, deadline: float) -> None:
        self.pending[seq] = (token, deadline)
        heapq.heappush(self.deadlines, (deadline, seq, token))

    def ack(self, seq: int, token: int) -> None:
        if self.pending.get(seq, (None,))[0] == token:
            del self.pending[seq]
        if len(self.deadlines) > 2 * len(self.pending) + 64:
            self.deadlines = [(d, s, t) for s, (t, d) in self.pending.items()]
            heapq.heapify(self.deadlines)

    def take_expired(self, now: float, first_seq: int) -> int | None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, seq, token = heapq.heappop(self.deadlines)
            if self.pending.get(seq, (None,))[0] != token:
                continue  # acked or already redelivered
            if seq < first_seq:
                del self.pending[seq]  # trimmed from the log before anyone acked it
                continue
            return seq
        return None

    def until_next_deadline(self, now: float) -> float | None:
        return max(0.0, self.deadlines[0][0] - now) if self.deadlines else None


class MemoryBus(Bus):
    def __init__(self, maxlen: int = DEFAULT_MAXLEN,
                 listen_buffer: int = DEFAULT_LISTEN_BUFFER) -> None:
        self._maxlen = maxlen
        self._listen_buffer = listen_buffer
        # (receive time, JSON, type), oldest first: the type lets a group pass over what it
        # does not want without decoding it.
        self._entries: list[tuple[float, bytes, str]] = []
        self._first_seq = 0  # sequence number of _entries[0]
        self._groups: dict[str, _Group] = {}
        # Weak, so a listen() iterator that is dropped without being closed unregisters itself.
        self._mailboxes: weakref.WeakSet[Mailbox] = weakref.WeakSet()
        self._wakeup = _Wakeup()
        self._tokens = itertools.count(1)
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryBus:
        params = query_params(url)
        return cls(maxlen=int(params.get("maxlen", DEFAULT_MAXLEN)),
                   listen_buffer=int(params.get("listen_buffer", DEFAULT_LISTEN_BUFFER)))

    @property
    def _next_seq(self) -> int:
        return self._first_seq + len(self._entries)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._closed:
            raise RuntimeError("bus is closed")
        # All or nothing: every envelope encodes before any is appended.
        docs = [orjson.dumps(e, option=orjson.OPT_NON_STR_KEYS) for e in envelopes]
        for envelope, doc in zip(envelopes, docs, strict=True):
            # Monotonic receive times keep the log sorted for bisect even if the clock steps back.
            now = max(time.time(), self._entries[-1][0] if self._entries else 0.0)
            self._entries.append((now, doc, str(envelope.get("type", ""))))
            for box in self._mailboxes:
                box.put(doc)
        self._trim()
        self._wakeup.fire()

    def _trim(self) -> None:
        # Trim in chunks so appends stay amortised O(1); keeps between maxlen and ~1.06 maxlen.
        excess = len(self._entries) - self._maxlen
        if excess > max(1, self._maxlen // 16):
            del self._entries[:excess]
            self._first_seq += excess

    def _seq_at(self, since: datetime) -> int:
        index = bisect.bisect_left(self._entries, since.timestamp(), key=lambda e: e[0])
        return self._first_seq + index

    def consume(self, group: str, *, since: datetime | None = None,
                redeliver_after: float = 30.0, batch: int = 100,
                types: frozenset[str] | None = None) -> AsyncIterator[Delivery]:
        # `batch` has no meaning without round trips: each step takes one message.
        return self._consume(group, since, redeliver_after, types)

    async def _consume(self, name: str, since: datetime | None, redeliver_after: float,
                       types: frozenset[str] | None) -> AsyncIterator[Delivery]:
        group = self._groups.get(name)
        if group is None:
            start = self._seq_at(since) if since else self._first_seq
            group = self._groups[name] = _Group(cursor=start)
        while not self._closed:
            now = time.monotonic()
            seq = group.take_expired(now, self._first_seq)
            if seq is None:
                seq = self._take_new(group, name, types)
            if seq is None:
                await self._wakeup.wait(group.until_next_deadline(now))
                continue
            yield self._deliver(group, seq, now + redeliver_after)

    def _take_new(self, group: _Group, name: str, types: frozenset[str] | None) -> int | None:
        if group.cursor < self._first_seq:
            log.warning("bus.group_fell_behind", group=name,
                        skipped=self._first_seq - group.cursor)
            group.cursor = self._first_seq
        while group.cursor < self._next_seq:
            group.cursor += 1
            seq = group.cursor - 1
            if types is None or self._entries[seq - self._first_seq][2] in types:
                return seq
        return None

    def _deliver(self, group: _Group, seq: int, deadline: float) -> Delivery:
        token = next(self._tokens)
        group.hand_out(seq, token, deadline)

        async def ack() -> None:
            group.ack(seq, token)

        return Delivery(orjson.loads(self._entries[seq - self._first_seq][1]), ack)

    def listen(self) -> AsyncIterator[Envelope]:
        # Registered now, not at the first __anext__: the listener starts when listen() returns.
        box = Mailbox(self._listen_buffer)
        if self._closed:
            box.close()
        self._mailboxes.add(box)
        return box.messages()

    async def history(self, since: datetime) -> AsyncIterator[Envelope]:
        seq, end = self._seq_at(since), self._next_seq
        while seq < end and not self._closed:
            seq = max(seq, self._first_seq)  # the log may have been trimmed while we yielded
            if seq >= end:
                break
            yield orjson.loads(self._entries[seq - self._first_seq][1])
            seq += 1
            if seq % 1000 == 0:
                await asyncio.sleep(0)  # a long replay must not starve the event loop

    async def close(self) -> None:
        self._closed = True
        for box in list(self._mailboxes):
            box.close()
        self._wakeup.fire()
