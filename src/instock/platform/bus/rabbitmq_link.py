"""The RabbitMQ Streams bus's connection (see rabbitmq.py): one stream-protocol connection per
bus, made again whenever it breaks, and the few things the bus does over it.

rstream's Producer and Consumer are not used: they reconnect on a schedule of their own (sleeps
of 1-8 s and more), and they connect to the host the broker *advertises* for a stream's leader,
which is the node's host name (`localhost` or the machine's name here) and often does not
resolve from a client, in a container or behind a load balancer. Every connection made here goes
to the host and port of the URL instead: a single node, or a load balancer in front of a cluster
(any node serves a publisher; a reader needs a replica on its node, which RabbitMQ places on
every node of a small cluster by default). rstream's `Client` does the framing.

Publishes go over a connection of their own. The broker handles one connection's frames in
order, and on a connection that also carries many subscriptions (a process's twenty-odd consumer
groups each read the stream and the groups' control stream) it confirmed a publish 1-2 s late,
against about a millisecond on a connection that only publishes (measured with twenty groups
and a publisher on one bus: a relay's events, and every member's lease records, waited that
long before a consumer could see them).

A connection that breaks (broker restart, network cut) fails what waits on it at once (pending
publisher confirms, subscriptions, requests); the next operation connects again. A half-open
connection, which would otherwise go unnoticed for minutes, is found by a round trip every
WATCH_EVERY seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

import structlog
from rstream import exceptions as rstream_errors
from rstream import schema
from rstream.client import Client
from rstream.connection import ConnectionClosed
from rstream.constants import OffsetType

from instock.platform.bus.common import BusClosed, query_params

log = structlog.get_logger(__name__)
T = TypeVar("T")
Use = Literal["read", "publish"]

CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 5.0
PUBLISH_TIMEOUT = 10.0
HEARTBEAT = 10  # seconds; the protocol's own heartbeat (the broker proposes 60)
WATCH_EVERY = 5.0
FRAME_MAX = 1 << 20
_MAX_IDS = 255  # subscription and publisher ids are one byte
_DISPATCH = 0  # the name of our one Deliver handler in rstream's registry


class Lost(ConnectionError):
    """The connection an operation ran on broke; the next operation connects again."""


# What a long-lived iterator waits out and tries again (a broker restart, a cut, a deleted stream).
TRANSIENT: tuple[type[Exception], ...] = (OSError, TimeoutError, ConnectionClosed,
                                          rstream_errors.ServerError)


@dataclass(frozen=True)
class Address:
    """Where the broker's stream port is and how to log in, from the bus URL."""

    host: str
    port: int
    vhost: str
    username: str
    password: str
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Address:
        parts = urlsplit(url)
        tls = parts.scheme.lower() == "rabbitmqs"
        # The URL's own port is AMQP's (5672), kept so the URL reads like any RabbitMQ URL; the
        # stream protocol listens elsewhere (5552, TLS 5551) unless `stream_port` says otherwise.
        port = int(query_params(url).get("stream_port", 5551 if tls else 5552))
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(host=parts.hostname or "127.0.0.1", port=port, vhost=vhost,
                   username=unquote(parts.username or "guest"),
                   password=unquote(parts.password or "guest"), tls=tls)


def messages(frame: schema.Deliver) -> Iterator[tuple[int, bytes]]:
    """(offset, body) of each message in a delivered chunk. Offsets grow but have gaps: the
    broker's offset-tracking entries take offsets of their own."""
    for index, body in enumerate(frame.get_messages()):
        yield frame.chunk_first_offset + index, bytes(body)


class Subscription:
    """One subscription's chunks, taken one at a time. Credit-based: the broker sends at most
    `credit` chunks ahead of the reader, so a slow reader holds up nobody and buffers little."""

    def __init__(self, connection: _Connection, sub_id: int, stream: str,
                 wake: asyncio.Event) -> None:
        self.connection = connection
        self.id = sub_id
        self.stream = stream
        self._chunks: deque[schema.Deliver] = deque()
        self._wake = wake
        self.lost = False

    def push(self, frame: schema.Deliver) -> None:
        self._chunks.append(frame)
        self._wake.set()

    def fail(self) -> None:
        self.lost = True
        self._wake.set()

    async def take(self) -> schema.Deliver | None:
        """The next chunk if one has arrived (the wake event is set when one does)."""
        if not self._chunks:
            return None
        frame = self._chunks.popleft()
        if not self.lost:
            await self.connection.client.credit(self.id, 1)  # one out, one more may come
        return frame


class _Connection:
    """One connection and what lives on it: subscriptions, publishers, pending confirms."""

    client: Client  # set right after: the client's closed-handler is this object's fail()

    def __init__(self) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subscriptions: dict[int, Subscription] = {}
        self.publishers: dict[str, int] = {}
        self.confirms: dict[int, asyncio.Future[None]] = {}
        self.publishing_id = 0
        self.write_lock = asyncio.Lock()
        self.declare_lock = asyncio.Lock()  # two callers must not declare one id twice
        self._next_sub = 0

    @property
    def alive(self) -> bool:
        return not self.lost.done() and self.client.is_connection_alive()

    def new_sub_id(self) -> int:
        # Round robin, not the lowest free id: a chunk still on its way for a subscription just
        # ended must not reach a new one that got its id.
        for _ in range(_MAX_IDS):
            self._next_sub = self._next_sub % (_MAX_IDS - 1) + 1
            if self._next_sub not in self.subscriptions:
                return self._next_sub
        raise Lost("no subscription id left on this connection")

    def dispatch(self, frame: schema.Deliver) -> None:
        if (sub := self.subscriptions.get(frame.subscription_id)) is not None:
            sub.push(frame)

    def on_confirm(self, frame: schema.PublishConfirm) -> None:
        for publishing_id in frame.publishing_ids:
            if (future := self.confirms.pop(publishing_id, None)) and not future.done():
                future.set_result(None)

    def on_error(self, frame: schema.PublishError) -> None:
        for error in frame.errors:
            if (future := self.confirms.pop(error.publishing_id, None)) and not future.done():
                future.set_exception(rstream_errors.ServerError.from_code(error.response_code)(
                    f"publish refused (code {error.response_code})"))

    def fail(self, *_: object) -> None:
        """The connection broke (or the broker closed it): fail everything waiting on it."""
        if self.lost.done():
            return
        self.lost.set_result(None)
        for future in self.confirms.values():
            if not future.done():
                future.set_exception(Lost("connection lost before the broker confirmed"))
        self.confirms.clear()
        for sub in self.subscriptions.values():
            sub.fail()


class Link:
    """The bus's connection, (re)made on demand; `streams` are created if missing on each one."""

    def __init__(self, address: Address, streams: Sequence[tuple[str, dict[str, str]]]) -> None:
        self._address = address
        self._streams = streams
        # Two connections: subscriptions and requests on "read", publishes on "publish".
        self._conns: dict[Use, _Connection | None] = {"read": None, "publish": None}
        self._lock = asyncio.Lock()
        self._watchdog: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._create = True
        self.closed = False

    async def connection(self, use: Use = "read") -> _Connection:
        if self.closed:
            raise BusClosed
        conn = self._conns[use]
        if conn is not None and conn.alive:
            return conn
        async with self._lock:
            if self.closed:
                raise BusClosed
            conn = self._conns[use]
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                self._retire(conn)
            fresh = await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT)
            self._conns[use] = fresh
            if self._watchdog is None:
                self._watchdog = asyncio.create_task(self._watch())
            return fresh

    async def _connect(self) -> _Connection:
        address = self._address
        conn = _Connection()
        client = conn.client = Client(
            address.host, address.port, frame_max=FRAME_MAX, heartbeat=HEARTBEAT,
            ssl_context=ssl.create_default_context() if address.tls else None,
            connection_name="instock", connection_closed_handler=conn.fail)
        # rstream reports a lost connection only for clients that carry a stream name.
        client.add_stream(self._streams[0][0])
        try:
            await client.start()
            # rstream's own Close handler raises inside its reader; ours fails the connection.
            client.remove_handler(schema.Close, "_on_close")
            client.add_handler(schema.Close, conn.fail, name="instock")
            await client.authenticate(vhost=address.vhost, username=address.username,
                                      password=address.password)
            client.add_handler(schema.Deliver, conn.dispatch, name=str(_DISPATCH))
            await client.run_queue_listener_task(_DISPATCH, conn.dispatch)
            client.add_handler(schema.PublishConfirm, conn.on_confirm, name="instock")
            client.add_handler(schema.PublishError, conn.on_error, name="instock")
            # A stream deleted or moved: everything is set up again on a new connection.
            client.add_handler(schema.MetadataUpdate, conn.fail, name="instock")
            for name, arguments in self._streams if self._create else ():
                if not await client.stream_exists(name):
                    with contextlib.suppress(rstream_errors.StreamAlreadyExists):
                        await client.create_stream(name, arguments)
        except BaseException:
            self._retire(conn)
            raise
        return conn

    def _retire(self, conn: _Connection) -> None:
        """Drop a connection at once, tidying its client up behind."""
        conn.fail()
        _abort(conn.client)
        task = asyncio.create_task(_stop_tasks(conn.client))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def request(self, conn: _Connection, operation: Awaitable[T],
                      timeout: float = REQUEST_TIMEOUT) -> T:
        """Await a request on `conn`; Lost as soon as the connection breaks, and a request not
        answered in time breaks it (a half-open connection never answers)."""
        task = asyncio.ensure_future(operation)
        either: set[asyncio.Future[Any]] = {task, conn.lost}
        try:
            done, _ = await asyncio.wait(either, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            _abandon(task)
            raise
        if task in done:
            return task.result()
        _abandon(task)
        if conn.lost.done():
            raise Lost("connection lost")
        self._retire(conn)
        raise TimeoutError("the broker did not answer in time")

    async def _watch(self) -> None:
        while not self.closed:
            await asyncio.sleep(WATCH_EVERY)
            for conn in list(self._conns.values()):
                if conn is not None and conn.alive:
                    with contextlib.suppress(Exception):
                        await self.request(conn, conn.client.stream_exists(self._streams[0][0]))

    # -- operations ------------------------------------------------------------------------

    async def ping(self, timeout: float) -> None:
        conn = await self.connection()
        await self.request(conn, conn.client.stream_exists(self._streams[0][0]), timeout)

    async def publish(self, stream: str, bodies: Sequence[bytes]) -> None:
        """Append `bodies` to `stream` in order; returns once the broker confirmed every one."""
        conn = await self.connection("publish")
        publisher = await self._publisher(conn, stream)
        loop = asyncio.get_running_loop()
        batch: list[schema.Message] = []
        waits: list[asyncio.Future[None]] = []
        for body in bodies:
            conn.publishing_id += 1
            waits.append(conn.confirms.setdefault(conn.publishing_id, loop.create_future()))
            batch.append(schema.Message(publishing_id=conn.publishing_id, filter_value=None,
                                        data=body))
        try:
            # One frame after another under a lock: a batch is written, and so stored, in order.
            async with conn.write_lock:
                for part in _frames(batch, conn.client.frame_max):
                    await conn.client.send_publish_frame(
                        schema.Publish(publisher_id=publisher, messages=part))
            # Every outcome gathered (a lost connection fails them all), the first error raised.
            outcomes = await self.request(
                conn, asyncio.gather(*waits, return_exceptions=True), PUBLISH_TIMEOUT)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:
            for message in batch:
                conn.confirms.pop(message.publishing_id, None)

    async def _publisher(self, conn: _Connection, stream: str) -> int:
        if (known := conn.publishers.get(stream)) is not None:
            return known
        async with conn.declare_lock:
            if (known := conn.publishers.get(stream)) is not None:
                return known
            publisher = len(conn.publishers)
            if publisher >= _MAX_IDS:
                raise Lost("no publisher id left on this connection")
            # No publisher reference: several relays publish at once, and deduplication by
            # reference would need one sequence for all of them.
            await self.request(conn, conn.client.declare_publisher(stream, "", publisher))
            conn.publishers[stream] = publisher
            return publisher

    async def subscribe(self, stream: str, kind: OffsetType, offset: int | None, *, credit: int,
                        wake: asyncio.Event) -> Subscription:
        conn = await self.connection()
        sub = Subscription(conn, conn.new_sub_id(), stream, wake)
        conn.subscriptions[sub.id] = sub
        try:
            await self.request(conn, conn.client.subscribe(
                stream, sub.id, schema.OffsetSpec.from_params(kind, offset), initial_credit=credit))
        except BaseException:
            conn.subscriptions.pop(sub.id, None)
            raise
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """End a subscription; best effort (a lost connection ended it already)."""
        conn = sub.connection
        if conn.subscriptions.pop(sub.id, None) is not None and conn.alive and not self.closed:
            with contextlib.suppress(Exception):
                await self.request(conn, conn.client.unsubscribe(sub.id))

    async def query_offset(self, stream: str, reference: str) -> int | None:
        conn = await self.connection()
        try:
            return await self.request(conn, conn.client.query_offset(stream, reference))
        except rstream_errors.OffsetNotFound:
            return None

    async def store_offsets(self, stream: str, offsets: dict[str, int], *,
                            confirm: bool = False) -> None:
        """Store offsets under their references. The protocol does not answer a store, so with
        `confirm` the last one is read back on the same connection: the broker handles one
        connection's commands in order, so every store is in by then (or the read shows not)."""
        if not offsets:
            return
        conn = await self.connection()
        for reference, offset in offsets.items():
            await conn.client.store_offset(stream, reference, offset)
        if confirm:
            reference, offset = next(reversed(offsets.items()))
            if await self.request(conn, conn.client.query_offset(stream, reference)) != offset:
                raise Lost("an offset store did not reach the broker")

    async def delete_streams(self) -> None:
        """Delete the streams, and stop making them: this link is being torn down."""
        self._create = False
        for name, _ in self._streams:
            for _attempt in range(3):  # a deletion also ends the connection (MetadataUpdate)
                conn = await self.connection()
                try:
                    if await self.request(conn, conn.client.stream_exists(name)):
                        await self.request(conn, conn.client.delete_stream(name))
                    break
                except (Lost, rstream_errors.StreamDoesNotExist):
                    continue

    async def close(self) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        conns = [conn for conn in self._conns.values() if conn is not None]
        self._conns = {"read": None, "publish": None}
        for conn in conns:
            if conn.alive:  # say goodbye, so the broker logs no connection closed abruptly
                with contextlib.suppress(Exception):
                    await self.request(conn, conn.client.sync_request(
                        schema.Close(conn.client._corr_id_seq.next(), code=1, reason="OK"),
                        resp_schema=schema.CloseResponse), timeout=1.0)
            self._retire(conn)
        if self._retiring:
            await asyncio.wait(self._retiring, timeout=2.0)


def _frames(batch: list[schema.Message], frame_max: int) -> Iterator[list[schema.Message]]:
    """`batch` in runs that each fit one Publish frame (17 bytes of frame header with its length
    prefix, and 12 per message besides its body)."""
    part: list[schema.Message] = []
    size = 17
    for message in batch:
        if part and size + 12 + len(message.data) > frame_max:
            yield part
            part, size = [], 17
        part.append(message)
        size += 12 + len(message.data)
    if part:
        yield part


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a request nobody waits for any more; if it failed first, its error was seen."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


# rstream's Client.close() says goodbye, then sleeps 0.2 s, then stops its tasks; with a
# broker that is gone it first waits 5 s for the goodbye's answer. These two do the same at once.
def _abort(client: Client) -> None:
    writer = getattr(getattr(client, "_conn", None), "_writer", None)
    if writer is not None:
        writer.transport.abort()


async def _stop_tasks(client: Client) -> None:
    """Stop the client's reader, heartbeat and delivery tasks (they would outlive the socket:
    the heartbeat sleeps, the delivery task waits on a queue nothing fills any more)."""
    for name in list(getattr(client, "_tasks", {})):
        with contextlib.suppress(Exception):
            await client.stop_task(name)
