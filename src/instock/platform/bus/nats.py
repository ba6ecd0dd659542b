"""NATS JetStream bus (`nats://host:port?stream=NAME&max_age=SECONDS`).

One stream (default "INSTOCK", created if missing: file storage, limits retention, messages kept
`max_age` seconds, default 7 days) on the subjects "<stream lower>.>"; an event of type
"inventory.stock_changed.v1" goes to "instock.inventory.stock_changed.v1".
- publish: all messages sent in order on one connection, then every ack awaited. The envelope
  id is the `Nats-Msg-Id`, so JetStream drops a relay's re-publish within its duplicate window.
- consume: a durable pull consumer named after the group (explicit ack, ack_wait =
  redeliver_after, deliver all or by start time). The server redelivers an unacked message once
  ack_wait has passed since it was fetched; the first member to create the group fixes its
  ack_wait and start. Group names must be valid NATS names (no ".", "*", ">" or whitespace).
- listen: a core NATS subscription on the stream's subjects feeding a bounded mailbox that drops
  the oldest message when the listener falls behind (see common.Mailbox). Being core NATS, a
  listener misses what is published while its connection is down (it is told so by a GAP
  envelope after the reconnection), and sees a relay's duplicate re-publish that the stream
  itself discarded.
- history: an ephemeral pull consumer from `since` (the stream's own timestamps), read until
  the stream's last sequence at call time.
Transient errors in consume()/listen() are logged and retried with backoff; publish() and
history() raise them to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError

from instock.platform.bus.base import Bus, Delivery, Envelope
from instock.platform.bus.common import (
    DEFAULT_LISTEN_BUFFER,
    BusClosed,
    Lifetime,
    Mailbox,
    decode,
    query_params,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_STREAM = "INSTOCK"
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
CONNECT_TIMEOUT = 10.0
PING_TIMEOUT = 1  # seconds for a round trip to the server, for /readyz
PUBLISH_TIMEOUT = 10.0
FETCH_WAIT = 2.0  # a pull request lives this long; a new one follows (and a reconnect is noticed)
PAGE = 500
TRANSIENT: tuple[type[Exception], ...] = (NatsError, OSError, TimeoutError)
_BAD_TOKEN_CHARS = frozenset(" \t\r\n*>")
_BAD_NAME_CHARS = _BAD_TOKEN_CHARS | frozenset("./\\")


class NatsBus(Bus):
    def __init__(self, servers: str, stream: str = DEFAULT_STREAM,
                 max_age: float = DEFAULT_MAX_AGE,
                 listen_buffer: int = DEFAULT_LISTEN_BUFFER) -> None:
        self._servers = servers
        self._stream = stream
        self._prefix = stream.lower()
        self._max_age = max_age
        self._listen_buffer = listen_buffer
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._life = Lifetime()
        self._mailboxes: list[Mailbox] = []

    @classmethod
    def from_url(cls, url: str) -> NatsBus:
        params = query_params(url)
        servers = urlunsplit(urlsplit(url)._replace(query="", fragment=""))
        return cls(servers, stream=params.get("stream", DEFAULT_STREAM),
                   max_age=float(params.get("max_age", DEFAULT_MAX_AGE)),
                   listen_buffer=int(params.get("listen_buffer", DEFAULT_LISTEN_BUFFER)))

    # -- connection ------------------------------------------------------------------------

    async def _connect(self) -> JetStreamContext:
        if self._life.closed:
            raise BusClosed
        async with self._lock:
            if self._js is None:
                nc = NatsClient()
                try:
                    # Once connected, reconnect forever: workers outlive server restarts. The
                    # first connection is bounded so publish() fails instead of hanging.
                    await asyncio.wait_for(nc.connect(
                        self._servers, name="instock", max_reconnect_attempts=-1,
                        reconnect_time_wait=1, error_cb=_on_error,
                        disconnected_cb=_on_disconnected, reconnected_cb=self._on_reconnected),
                        CONNECT_TIMEOUT)
                    js = nc.jetstream()
                    await self._ensure_stream(js)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await nc.close()
                    raise
                self._nc, self._js = nc, js
            return self._js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(self._stream)
            return
        except NotFoundError:
            pass
        config = StreamConfig(name=self._stream, subjects=[f"{self._prefix}.>"],
                              retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                              max_age=self._max_age)
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.stream_info(self._stream)  # another process created it first: fine

    async def _call(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """An operation of a long-lived iterator: retried until it works or the bus closes."""
        return await self._life.persist(operation, retry_on=TRANSIENT, what=what)

    # -- publish ---------------------------------------------------------------------------

    def _subject(self, envelope: Envelope) -> str:
        kind = envelope.get("type")
        if (not isinstance(kind, str) or not kind or any(c in _BAD_TOKEN_CHARS for c in kind)
                or "" in kind.split(".")):
            raise ValueError(f"event type {kind!r} cannot be a NATS subject")
        return f"{self._prefix}.{kind}"

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._life.closed:
            raise RuntimeError("bus is closed")
        messages = [(self._subject(e), json.dumps(e, separators=(",", ":")).encode(), e["id"])
                    for e in envelopes]
        if not messages:
            return
        js = await self._connect()
        try:
            await self._publish(js, messages)
        except NoStreamResponseError:
            await self._ensure_stream(js)  # the stream was deleted under us
            await self._publish(js, messages)

    @staticmethod
    async def _publish(js: JetStreamContext, messages: list[tuple[str, bytes, str]]) -> None:
        # Sent back to back on one connection (so stored in this order), acks awaited together.
        acks: list[asyncio.Future[Any]] = []
        try:
            for subject, payload, msg_id in messages:
                acks.append(await js.publish_async(subject, payload,
                                                   headers={"Nats-Msg-Id": msg_id}))
            await asyncio.wait_for(asyncio.gather(*acks), PUBLISH_TIMEOUT)
        finally:
            for ack in acks:
                ack.cancel()  # no-op for completed ones; frees the client's pending table

    # -- consumer groups -------------------------------------------------------------------

    def consume(self, group: str, *, since: datetime | None = None,
                redeliver_after: float = 30.0, batch: int = 100,
                types: frozenset[str] | None = None) -> AsyncIterator[Delivery]:
        if not group or any(c in _BAD_NAME_CHARS for c in group):  # fail here, not at first read
            raise ValueError(f"group {group!r} cannot name a NATS consumer (no . * > / \\ blank)")
        config = ConsumerConfig(
            durable_name=group, ack_policy=AckPolicy.EXPLICIT, ack_wait=redeliver_after,
            deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL,
            opt_start_time=since)
        return self._consume(group, config, batch)

    async def _consume(self, group: str, config: ConsumerConfig,
                       batch: int) -> AsyncIterator[Delivery]:
        sub: JetStreamContext.PullSubscription | None = None

        async def fetch() -> list[Msg]:
            nonlocal sub
            if sub is None:
                js = await self._connect()
                await self._ensure_stream(js)
                sub = await js.pull_subscribe(f"{self._prefix}.>", durable=group,
                                              stream=self._stream, config=config)
            try:
                return await sub.fetch(batch, timeout=FETCH_WAIT)
            except TimeoutError:
                return []  # nothing new within FETCH_WAIT: ask again
            except APIError:
                # Typically the stream or consumer was deleted under us: set both up again.
                stale, sub = sub, None
                await self._quietly(stale.unsubscribe())
                raise

        try:
            while True:
                for msg in await self._call(fetch, "fetch"):
                    envelope = decode(msg.data, subject=msg.subject, group=group)
                    if envelope is None:
                        await msg.term()  # nobody could ever handle it: stop redelivering
                        continue
                    yield Delivery(envelope, msg.ack)
        except BusClosed:
            return
        finally:
            if sub is not None:
                await self._quietly(sub.unsubscribe())

    # -- listen and history ----------------------------------------------------------------

    def listen(self) -> AsyncIterator[Envelope]:
        return self._listen()

    async def _listen(self) -> AsyncIterator[Envelope]:
        box = Mailbox(self._listen_buffer)
        self._mailboxes.append(box)

        async def on_message(msg: Msg) -> None:
            box.put(msg.data)  # never blocks: a slow reader loses the oldest, see Mailbox

        async def subscribe() -> Subscription:
            await self._connect()
            assert self._nc is not None
            subscription = await self._nc.subscribe(f"{self._prefix}.>", cb=on_message)
            await self._nc.flush()  # the server has the subscription: we are listening now
            return subscription

        sub: Subscription | None = None
        try:
            sub = await self._call(subscribe, "listen")
            async for envelope in box.messages():
                yield envelope
        except BusClosed:
            return
        finally:
            self._mailboxes.remove(box)
            if sub is not None:
                await self._quietly(sub.unsubscribe())

    def history(self, since: datetime) -> AsyncIterator[Envelope]:
        return self._history(since)

    async def _history(self, since: datetime) -> AsyncIterator[Envelope]:
        try:
            js = await self._life.run(self._connect())
            last = (await self._life.run(js.stream_info(self._stream))).state.last_seq
            # Ephemeral, unacked; the server removes it a minute after we stop reading.
            info = await self._life.run(js.add_consumer(self._stream, ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since,
                ack_policy=AckPolicy.NONE, inactive_threshold=60.0, mem_storage=True)))
            if not info.num_pending:
                return
            sub = await self._life.run(js.pull_subscribe_bind(info.name, stream=self._stream))
            try:
                async for envelope in self._read_until(sub, last):
                    yield envelope
            finally:
                await self._quietly(sub.unsubscribe())
                await self._quietly(js.delete_consumer(self._stream, info.name))
        except BusClosed:
            return

    async def _read_until(self, sub: JetStreamContext.PullSubscription,
                          last: int) -> AsyncIterator[Envelope]:
        while True:
            for msg in await self._life.run(sub.fetch(PAGE, timeout=FETCH_WAIT)):
                if msg.metadata.sequence.stream > last:
                    return  # published after the call
                if (envelope := decode(msg.data, subject=msg.subject)) is not None:
                    yield envelope
                if msg.metadata.sequence.stream == last or msg.metadata.num_pending == 0:
                    return

    async def _quietly(self, cleanup: Awaitable[Any]) -> None:
        """Best-effort cleanup that must not mask the real outcome (or fail after close())."""
        if self._life.closed:
            if asyncio.iscoroutine(cleanup):
                cleanup.close()
            return
        with contextlib.suppress(Exception):
            await cleanup

    async def _on_reconnected(self) -> None:
        log.info("bus.nats_reconnected")
        for box in self._mailboxes:  # core NATS kept nothing for them while the link was down
            box.reconnected()

    async def ping(self) -> None:
        await self._connect()  # connects first if no one has yet
        assert self._nc is not None
        if not self._nc.is_connected:
            raise ConnectionError("NATS is disconnected (reconnecting)")
        await self._nc.flush(timeout=PING_TIMEOUT)

    async def close(self) -> None:
        await self._life.close()  # ends pending fetches before the connection goes
        for box in self._mailboxes:
            box.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()


async def _on_error(exc: Exception) -> None:
    log.warning("bus.nats_error", error=repr(exc))


async def _on_disconnected() -> None:
    log.warning("bus.nats_disconnected")


