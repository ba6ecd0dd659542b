"""Redis Streams bus (`redis://host:port/db?stream=NAME&maxlen=N`).

One stream key (default "instock:events"), each entry one field `envelope` holding the JSON.
- publish: XADD in a MULTI/EXEC pipeline, so a batch lands contiguously and in order; the
  stream is trimmed to roughly `maxlen` entries (default 1,000,000, approximate so it is cheap).
- consume: a Redis consumer group (created with MKSTREAM at "0", or just before `since`) and
  one uniquely named Redis consumer per consume() call. Every ~redeliver_after/4 a member
  XAUTOCLAIMs entries idle for longer than redeliver_after (whoever held them, itself included)
  and delivers them again, so a delivery is redelivered between 1x and ~1.25x redeliver_after
  after it was read, if a member is running. The clock starts when the batch is read, so keep
  `batch` x handling time well under redeliver_after.
- listen: XREAD BLOCK from the newest id at start, then from the last id seen. A slow listener
  just lags (nothing is buffered for it); if it lags by more than the stream keeps, it skips
  ahead to the oldest retained entry.
- history: XRANGE from `since` (millisecond precision, inclusive) to the last id at call time.
Ids carry the Redis server's clock in milliseconds; `since` is compared with that.
Transient connection errors in consume()/listen() are logged and retried with backoff; errors
in publish() and history() propagate to the caller, who can retry them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from instock.platform.bus.base import Bus, Delivery, Envelope
from instock.platform.bus.common import BusClosed, Lifetime, decode
from instock.platform.retry import retry

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_STREAM = "instock:events"
DEFAULT_MAXLEN = 1_000_000
FIELD = "envelope"
BLOCK_MS = 5_000  # longest blocking read; the socket timeout below must exceed it
PAGE = 500
TRANSIENT: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
_OUR_PARAMS = {"stream", "maxlen"}
_MAX_SEQ = 2**64 - 1

Entry = tuple[str, dict[str, str] | None]


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _ms(since: datetime) -> int:
    return int(since.timestamp() * 1000)


def _entries(raw: Any) -> list[Entry]:
    """(id, fields) pairs from an XRANGE-like reply; fields is None for a deleted entry."""
    return [(str(entry_id), fields) for entry_id, fields in raw or ()]


def _stream_entries(reply: Any) -> list[Entry]:
    """Entries of our one stream from an XREAD/XREADGROUP reply (RESP2: [[key, entries]])."""
    return _entries(reply[0][1]) if reply else []


class RedisStreamsBus(Bus):
    def __init__(self, client: aioredis.Redis, stream: str = DEFAULT_STREAM,
                 maxlen: int = DEFAULT_MAXLEN) -> None:
        self._redis = client
        self._stream = stream
        self._maxlen = maxlen
        self._life = Lifetime()

    @classmethod
    def from_url(cls, url: str) -> RedisStreamsBus:
        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        ours = {k: v for k, v in query if k in _OUR_PARAMS}
        rest = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query
                                                          if k not in _OUR_PARAMS])))
        # protocol=2: the reply shapes parsed here are RESP2's. The socket timeout bounds a read
        # on a half-open connection; keyword defaults lose to options given in the URL.
        client = aioredis.from_url(rest, decode_responses=True, protocol=2,
                                   socket_timeout=BLOCK_MS / 1000 + 10,
                                   socket_connect_timeout=5, health_check_interval=30)
        return cls(client, stream=ours.get("stream", DEFAULT_STREAM),
                   maxlen=int(ours.get("maxlen", DEFAULT_MAXLEN)))

    async def _call(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """An operation of a long-lived iterator: retried until it works or the bus closes."""
        return await self._life.persist(operation, retry_on=TRANSIENT, what=what)

    # -- publish ---------------------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._life.closed:
            raise RuntimeError("bus is closed")
        if not envelopes:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for envelope in envelopes:
                pipe.xadd(self._stream, {FIELD: json.dumps(envelope, separators=(",", ":"))},
                          maxlen=self._maxlen, approximate=True)
            await pipe.execute()

    # -- consumer groups -------------------------------------------------------------------

    def consume(self, group: str, *, since: datetime | None = None,
                redeliver_after: float = 30.0, batch: int = 100,
                types: frozenset[str] | None = None) -> AsyncIterator[Delivery]:
        return _Member(self, group, since, redeliver_after, batch).deliveries()

    async def _create_group(self, group: str, since: datetime | None) -> None:
        # The group's last-delivered id is set just before `since`, so an entry in that very
        # millisecond is still delivered. An existing group keeps its position (BUSYGROUP).
        start = f"{_ms(since) - 1}-{_MAX_SEQ}" if since and _ms(since) > 0 else "0"
        try:
            await self._redis.xgroup_create(self._stream, group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _ack(self, group: str, entry_id: str) -> None:
        await retry(lambda: self._redis.xack(self._stream, group, entry_id),
                    retry_on=TRANSIENT, attempts=4, base_delay=0.05, max_delay=1.0)

    # -- listen and history ----------------------------------------------------------------

    async def _last_id(self) -> str | None:
        newest = _entries(await self._redis.xrevrange(self._stream, "+", "-", count=1))
        return newest[0][0] if newest else None

    def listen(self) -> AsyncIterator[Envelope]:
        return self._listen()

    async def _listen(self) -> AsyncIterator[Envelope]:
        try:
            last = await self._call(self._last_id, "listen start") or "0-0"
            while True:
                read = partial(self._redis.xread, {self._stream: last}, count=PAGE, block=BLOCK_MS)
                for entry_id, fields in _stream_entries(await self._call(read, "listen")):
                    last = entry_id
                    if fields and (envelope := decode(fields.get(FIELD), id=entry_id)):
                        yield envelope
        except BusClosed:
            return

    def history(self, since: datetime) -> AsyncIterator[Envelope]:
        return self._history(since)

    async def _history(self, since: datetime) -> AsyncIterator[Envelope]:
        try:
            end = await self._life.run(self._last_id())
            start = str(_ms(since))
            while end is not None:
                page = _entries(await self._life.run(
                    self._redis.xrange(self._stream, start, end, count=PAGE)))
                for entry_id, fields in page:
                    if fields and (envelope := decode(fields.get(FIELD), id=entry_id)):
                        yield envelope
                if len(page) < PAGE or page[-1][0] == end:
                    return
                start = "(" + page[-1][0]
        except BusClosed:
            return

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._life.close()  # ends blocking reads before their connections go
        await self._redis.aclose()


class _Member:
    """One member of a consumer group: reads new entries, sweeps for abandoned ones."""

    def __init__(self, bus: RedisStreamsBus, group: str, since: datetime | None,
                 redeliver_after: float, batch: int) -> None:
        self.bus, self.group, self.since, self.batch = bus, group, since, batch
        self.consumer = _consumer_name()
        self.idle_ms = max(1, int(redeliver_after * 1000))
        self.sweep_every = max(redeliver_after / 4, 0.01)
        self.next_sweep = 0.0  # sweep at once: a restarted worker picks up its dead self's work
        self.sweep_from = "0-0"

    async def deliveries(self) -> AsyncIterator[Delivery]:
        bus = self.bus
        try:
            await bus._call(lambda: bus._create_group(self.group, self.since), "create group")
            while True:
                if time.monotonic() >= self.next_sweep:
                    entries = await bus._call(self._claim, "xautoclaim")
                else:
                    entries = await bus._call(self._read, "xreadgroup")
                for entry_id, fields in entries:
                    if not fields:
                        continue  # trimmed away while pending
                    envelope = decode(fields.get(FIELD), id=entry_id, group=self.group)
                    if envelope is None:
                        await bus._ack(self.group, entry_id)  # nobody could ever handle it
                        continue
                    yield Delivery(envelope, partial(bus._ack, self.group, entry_id))
        except BusClosed:
            return
        finally:
            await self._forget_if_idle()

    async def _forget_if_idle(self) -> None:
        """Delete this member's Redis consumer if it holds nothing, so restarts leave no trail.

        With pending entries it must stay: deleting a consumer drops its pending entries, and
        those are exactly what the surviving members will claim.
        """
        bus = self.bus
        if bus._life.closed:
            return
        with contextlib.suppress(Exception):
            held = await bus._redis.xpending_range(bus._stream, self.group, "-", "+", 1,
                                                   consumername=self.consumer)
            if not held:
                await bus._redis.xgroup_delconsumer(bus._stream, self.group, self.consumer)

    async def _claim(self) -> list[Entry]:
        bus = self.bus
        reply = await self._recreating_group(bus._redis.xautoclaim(
            bus._stream, self.group, self.consumer, self.idle_ms, start_id=self.sweep_from,
            count=self.batch))
        if reply is None:
            return []
        self.sweep_from = str(reply[0])
        if self.sweep_from == "0-0":  # the whole pending list was scanned
            self.next_sweep = time.monotonic() + self.sweep_every
        return _entries(reply[1])

    async def _read(self) -> list[Entry]:
        bus = self.bus
        block = max(1, min(BLOCK_MS, int((self.next_sweep - time.monotonic()) * 1000)))
        reply = await self._recreating_group(bus._redis.xreadgroup(
            self.group, self.consumer, {bus._stream: ">"}, count=self.batch, block=block))
        return _stream_entries(reply)

    async def _recreating_group(self, command: Awaitable[Any]) -> Any:
        """Run a group command; if the stream or group was deleted under us, create it again."""
        try:
            return await command
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("bus.group_recreated", stream=self.bus._stream, group=self.group)
            await self.bus._create_group(self.group, self.since)
            return None
