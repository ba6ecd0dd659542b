"""Pieces every bus adapter shares: lifetimes, bounded listener mailboxes, decoding, URLs."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog

from instock.platform.bus.base import Envelope, gap
from instock.platform.retry import retry

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_LISTEN_BUFFER = 10_000


class BusClosed(Exception):
    """Raised inside an adapter when close() interrupts an operation; iterators end on it."""


class Lifetime:
    """The open/closed state of a networked bus, and the blocking operations it must interrupt.

    Blocking broker reads (XREADGROUP BLOCK, a JetStream fetch) cannot be woken by anything else,
    so they run as tasks that close() cancels, and waits for, BEFORE the connection goes: some
    clients (nats-py) turn a cancellation that arrives after their connection closed into a
    connection error, which a retry loop would then happily retry.
    """

    def __init__(self) -> None:
        self.closed = False
        self._tasks: set[asyncio.Future[Any]] = set()

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`, or raise BusClosed if the bus closes (or is closed) first."""
        task = asyncio.ensure_future(awaitable)
        if self.closed:
            task.cancel()
            raise BusClosed
        self._tasks.add(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self.closed and task.cancelled():
                raise BusClosed from None
            task.cancel()  # our caller was cancelled: take the operation down with it
            raise
        except Exception:
            if self.closed:
                raise BusClosed from None  # an error caused by the closing connection
            raise
        finally:
            self._tasks.discard(task)

    async def persist(self, operation: Callable[[], Awaitable[T]], *,
                      retry_on: tuple[type[Exception], ...], what: str) -> T:
        """run() an operation of a long-lived iterator, retrying it until it works."""
        async def attempt() -> T:
            if self.closed:
                raise BusClosed
            return await operation()
        return await self.run(_keep_trying(attempt, retry_on=retry_on, what=what))

    async def close(self, grace: float = 5.0) -> None:
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)


async def _keep_trying(operation: Callable[[], Awaitable[T]], *,
                      retry_on: tuple[type[Exception], ...], what: str) -> T:
    """Run `operation` until it succeeds, logging each failure.

    Worker processes outlive broker restarts and network blips, so consume()/listen() wait them
    out instead of dying. Backoff comes from the project's retry helper (capped at 5 s); it is
    restarted every few attempts because its exponent is not meant for unbounded attempt counts.
    """
    def warn(exc: Exception) -> None:
        log.warning("bus.retrying", operation=what, error=repr(exc))

    while True:
        try:
            return await retry(operation, retry_on=retry_on, attempts=8, base_delay=0.1,
                               max_delay=5.0, on_retry=warn)
        except retry_on as exc:
            warn(exc)


class Mailbox:
    """One listener's bounded buffer: when full, appending drops the oldest message."""

    def __init__(self, size: int) -> None:
        self._items: deque[str | bytes] = deque(maxlen=size)
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = 0
        self.missed = False  # the connection dropped: what was published meanwhile is lost

    def put(self, item: str | bytes) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def reconnected(self) -> None:
        """The connection came back: the reader is told it may have missed messages."""
        self.missed = True
        self._ready.set()

    async def get(self) -> str | bytes | None:
        """The next message, or None once closed. One reader per mailbox."""
        while not self.closed:
            if self._items:
                return self._items.popleft()
            if self.missed:
                return b""  # nothing to read, but messages() has a gap to report
            self._ready.clear()
            await self._ready.wait()
        return None

    async def messages(self) -> AsyncIterator[Envelope]:
        """Decode until closed; a GAP envelope where messages were dropped (this reader lagged)
        or missed (the connection was down)."""
        while (item := await self.get()) is not None:
            if self.dropped or self.missed:
                log.warning("bus.listener_gap", dropped=self.dropped, reconnected=self.missed,
                            reason="oldest messages dropped (listener fell behind) or missed "
                                   "(connection was down)")
                self.dropped, self.missed = 0, False
                yield gap()
            if item and (envelope := decode(item, source="listen")) is not None:
                yield envelope


def decode(raw: str | bytes | None, **where: object) -> Envelope | None:
    """The envelope in a stored message, or None (logged) if it is not one.

    Anything can be written to a broker subject or stream key; one foreign or corrupt message
    must not kill every consumer that reads it, again and again.
    """
    try:
        envelope = orjson.loads(raw) if raw is not None else None
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict):
        log.error("bus.undecodable_message", **where)
        return None
    return envelope


def query_params(url: str) -> dict[str, str]:
    """The last value of each query parameter of a bus URL."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
