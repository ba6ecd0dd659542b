"""RabbitMQ Streams bus (`rabbitmq://user:pass@host:5672/vhost?stream=NAME&stream_port=5552`).

Why Streams and not queues: a stream is an append-only log the broker keeps (here `max_age`
seconds, default 7 days, `?max_age=`), read by offset or by timestamp. That is what the bus
interface asks for: `history(since)` and a new group's `since` become a timestamp offset, a
listener reads from "next", and one log gives every group the same order. Classic or quorum
queues delete what they deliver, so replay, `since` and per-group positions would all need a
second store.

One stream (default "instock-events", created if missing) holds every event as its JSON, in
publish order; the broker's own publisher confirms make publish() durable. The stream protocol
runs on its own port (5552, 5551 for `rabbitmqs://`; `?stream_port=`); the URL's port is AMQP's
and is not used. Every connection goes to the URL's host, never to the host the broker
advertises for a stream (see rabbitmq_link.py for why).
- publish: one connection, the batch written as Publish frames back to back (so stored in
  order), then every publisher confirm awaited (10 s). No publisher reference (deduplication):
  a relay that retries after an unconfirmed publish may store an event twice; consumers dedupe.
- consume: a durable group over the same stream, members sharing it by slot leases kept in a
  second stream, `<stream>-groups`: per-key order within the group, at-least-once, redelivery
  after `redeliver_after`, a dead member's slots taken over (rabbitmq_groups.py explains). The
  group's position per slot is kept by the broker's offset tracking, so an existing group
  resumes where it was and `since` only places a new one. Every member reads the whole stream
  and picks out its slots: RabbitMQ 3.10 has no single-active-consumer or super streams (3.11),
  which would let the broker do that split.
- listen: a subscription from "next"; the broker sends at most a few chunks ahead (credit), so
  a slow listener lags without buffering (it reads the log at its own pace) and loses nothing;
  after a reconnection it resumes after the last offset it saw.
- history: from the first chunk written at or after `since` (the broker's timestamps, ms) to
  the newest message at call time (found by reading the stream's last chunk).
Transient errors in consume()/listen() are logged and retried with backoff (a broker restart
is waited out); publish() and history() raise them to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TypeVar

import orjson
import structlog
from rstream.constants import OffsetType

from instock.platform.bus.base import Bus, Delivery, Envelope
from instock.platform.bus.common import BusClosed, Lifetime, decode, query_params
from instock.platform.bus.rabbitmq_control import ControlFeed
from instock.platform.bus.rabbitmq_groups import Member
from instock.platform.bus.rabbitmq_link import (
    REQUEST_TIMEOUT,
    TRANSIENT,
    Address,
    Link,
    Lost,
    Subscription,
    messages,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_STREAM = "instock-events"
DEFAULT_MAX_AGE = 7 * 24 * 3600
# The control stream only needs the last minutes (members read back a window of it, never more
# than an hour); small segments let the broker actually drop what is older.
CONTROL_ARGUMENTS = {"max-age": "7200s", "stream-max-segment-size-bytes": str(4 * 1024 * 1024)}
PING_TIMEOUT = 1.0
LISTEN_CREDIT = 4
HISTORY_CREDIT = 8
EMPTY_GRACE = 0.05  # seconds a "last chunk" may lag its subscribe's answer; then: no message


def _ms(since: datetime) -> int:
    return int(since.timestamp() * 1000)


class RabbitStreamsBus(Bus):
    def __init__(self, address: Address, stream: str = DEFAULT_STREAM,
                 max_age: int = DEFAULT_MAX_AGE) -> None:
        self._stream = stream
        self._control = f"{stream}-groups"
        self._link = Link(address, [(stream, {"max-age": f"{max_age}s"}),
                                    (self._control, CONTROL_ARGUMENTS)])
        self._life = Lifetime()
        self._members: set[Member] = set()
        self._feed = ControlFeed(self._link, self._life, self._control)

    @classmethod
    def from_url(cls, url: str) -> RabbitStreamsBus:
        params = query_params(url)
        return cls(Address.from_url(url), stream=params.get("stream", DEFAULT_STREAM),
                   max_age=int(float(params.get("max_age", DEFAULT_MAX_AGE))))

    async def _call(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """An operation of a long-lived iterator: retried until it works or the bus closes."""
        return await self._life.persist(operation, retry_on=TRANSIENT, what=what)

    # -- publish ---------------------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._life.closed:
            raise RuntimeError("bus is closed")
        # All or nothing: every envelope encodes before any is sent.
        bodies = [orjson.dumps(e, option=orjson.OPT_NON_STR_KEYS) for e in envelopes]
        if bodies:
            await self._link.publish(self._stream, bodies)

    # -- consumer groups -------------------------------------------------------------------

    def consume(self, group: str, *, since: datetime | None = None,
                redeliver_after: float = 30.0, batch: int = 100,
                types: frozenset[str] | None = None) -> AsyncIterator[Delivery]:
        # `batch` has no use here: the broker sends whole chunks, a few ahead (credit).
        if not group or len(group.encode()) > 200:  # it names the broker's offset references
            raise ValueError(f"group {group!r} must be 1 to 200 bytes")

        async def start() -> int:
            return 0 if since is None else await self._offset_at(since)

        member = Member(self._link, self._life, self._stream, self._control, group, start=start,
                        redeliver_after=redeliver_after, members=self._members,
                        feed=self._feed)
        return member.deliveries()

    async def _offset_at(self, since: datetime) -> int:
        """The offset of the first message written at or after `since` (or of the next one)."""
        last = await self._last()
        if last is None:
            return 0
        if last[1] < _ms(since):
            return last[0] + 1
        async with contextlib.aclosing(self._read(OffsetType.TIMESTAMP, _ms(since),
                                                  last[0])) as reader:
            async for offset, _ in reader:
                return offset
        return last[0] + 1

    # -- reading the log -------------------------------------------------------------------

    async def _last(self) -> tuple[int, int] | None:
        """(offset, broker timestamp in ms) of the newest message; None if there is none."""
        wake = asyncio.Event()
        sub = await self._link.subscribe(self._stream, OffsetType.LAST, None, credit=1, wake=wake)
        try:
            # The broker sends the last chunk as it answers the subscribe, before it answers
            # anything else on this connection: one more round trip tells "none" from "slow".
            conn = sub.connection
            await self._link.request(conn, conn.client.stream_exists(self._stream))
            if (frame := await sub.take()) is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EMPTY_GRACE):
                        await wake.wait()
                frame = await sub.take()
            if frame is None:
                if sub.lost:
                    raise Lost("connection lost")
                return None
            offsets = [offset for offset, _ in messages(frame)]
            return (offsets[-1], frame.timestamp) if offsets else None
        finally:
            await self._link.unsubscribe(sub)

    async def _read(self, kind: OffsetType, start: int,
                    last: int) -> AsyncGenerator[tuple[int, bytes], None]:
        """(offset, body) from `start` (an offset or a timestamp) up to offset `last`."""
        wake = asyncio.Event()
        sub = await self._link.subscribe(self._stream, kind, start, credit=HISTORY_CREDIT,
                                         wake=wake)
        try:
            while True:
                wake.clear()
                if (frame := await sub.take()) is None:
                    if sub.lost:
                        raise Lost("connection lost")
                    async with asyncio.timeout(REQUEST_TIMEOUT * 6):  # the data is there
                        await self._life.run(wake.wait())
                    continue
                if kind is OffsetType.TIMESTAMP and frame.timestamp < start:
                    continue  # an older chunk, if the broker started before `start`
                for offset, body in messages(frame):
                    if offset > last:
                        return
                    if kind is OffsetType.OFFSET and offset < start:
                        continue  # a chunk may begin before the offset asked for
                    yield offset, body
                    if offset == last:
                        return
        finally:
            await self._link.unsubscribe(sub)

    def history(self, since: datetime) -> AsyncIterator[Envelope]:
        return self._history(since)

    async def _history(self, since: datetime) -> AsyncIterator[Envelope]:
        try:
            last = await self._life.run(self._last())
            if last is None or last[1] < _ms(since):
                return
            async with contextlib.aclosing(self._read(OffsetType.TIMESTAMP, _ms(since),
                                                      last[0])) as reader:
                async for offset, body in reader:
                    envelope = decode(body, stream=self._stream, offset=offset)
                    if envelope is not None:
                        yield envelope
        except BusClosed:
            return

    # -- listen ----------------------------------------------------------------------------

    def listen(self) -> AsyncIterator[Envelope]:
        return self._listen()

    async def _listen(self) -> AsyncIterator[Envelope]:
        wake = asyncio.Event()
        sub: Subscription | None = None
        after: int | None = None  # the last offset heard: a new subscription resumes there
        try:
            while True:
                wake.clear()
                if sub is None or sub.lost:
                    if sub is not None:
                        await self._link.unsubscribe(sub)
                    kind = OffsetType.NEXT if after is None else OffsetType.OFFSET
                    sub = await self._call(partial(
                        self._link.subscribe, self._stream, kind,
                        None if after is None else after + 1, credit=LISTEN_CREDIT, wake=wake),
                        "listen")
                if (frame := await sub.take()) is None:
                    if not sub.lost:
                        await self._life.run(wake.wait())
                    continue
                for offset, body in messages(frame):
                    if after is not None and offset <= after:
                        continue
                    after = offset
                    envelope = decode(body, stream=self._stream, offset=offset)
                    if envelope is not None:
                        yield envelope
        except BusClosed:
            return
        finally:
            if sub is not None:
                await self._link.unsubscribe(sub)

    # -- the rest --------------------------------------------------------------------------

    async def ping(self) -> None:
        await asyncio.wait_for(self._link.ping(PING_TIMEOUT), PING_TIMEOUT * 5)

    async def drop(self) -> None:
        """Delete this bus's streams (the events and the groups' positions): for tests and
        tear-downs, never for a running system."""
        await self._link.delete_streams()

    async def close(self) -> None:
        # Members hand their slots over while the connection is still up.
        await asyncio.gather(*(member.stop() for member in list(self._members)))
        await self._feed.close()
        await self._life.close()  # ends pending reads before the connection goes
        await self._link.close()
