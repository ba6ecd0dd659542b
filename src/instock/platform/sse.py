"""Serving a Server-Sent Events stream: the one loop every SSE route runs (live stock, the
drops' waiting room).

A stream asks its feed for frames, sends a comment line after each quiet `heartbeat` (proxies
and load balancers close idle connections), and says goodbye when the process stops: the drain
wakes the feed, the stream sends what it holds, then its farewell (reconnect after a randomised
`retry:`), and ends, so the client comes back through the load balancer to a process that stays
(platform/drain.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from fastapi.responses import StreamingResponse
from prometheus_client import Gauge
from starlette.types import Message, Receive, Scope, Send

from instock.platform.drain import Drain

FIRST_RETRY = "retry: 2000\n\n"  # how long EventSource waits before reconnecting by itself
PING = ": ping\n\n"
FIRST_RETRY_BYTES, PING_BYTES = FIRST_RETRY.encode(), PING.encode()


class Feed(Protocol):
    """What a stream is fed from: one client's pending frames, woken by whoever has news."""

    async def next(self, heartbeat: float) -> str:
        """The frames to send now (`event:`/`data:` lines ending in a blank line), or "" after
        `heartbeat` seconds of quiet."""

    def wake(self) -> None:
        """Return from `next` at once (the process is stopping)."""

    def close(self) -> None:
        """The client is gone: forget it."""


def event_stream(feed: Feed, drain: Drain, heartbeat: float,
                 connections: Gauge | None = None) -> StreamingResponse:
    """The streaming response of one SSE client; `connections` counts the open ones."""
    return EventStream(feed, drain, heartbeat, connections)


class EventStream(StreamingResponse):
    """One SSE client's response, served by its own loop rather than StreamingResponse's.

    Starlette runs each stream in an anyio task group (a second task and a cancel scope per
    client, to hear it leave: uvicorn's ASGI 2.3 `send` never says the client is gone), and
    re-encodes every frame through an async generator. A waiting room holds ten thousand
    streams in one process, each sent a frame every few seconds: here the stream is the
    request's own task, one plain task per client waits for its disconnect and wakes the
    feed, and the constant frames are bytes made once."""

    def __init__(self, feed: Feed, drain: Drain, heartbeat: float,
                 connections: Gauge | None) -> None:
        super().__init__(_NO_BODY, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.feed, self.drain, self.heartbeat = feed, drain, heartbeat
        self.connections = connections
        self.gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        feed, drain = self.feed, self.drain
        if self.connections is not None:
            self.connections.inc()
        listener = asyncio.create_task(self._listen(receive))
        try:
            with drain.track(feed.wake):
                await send({"type": "http.response.start", "status": self.status_code,
                            "headers": self.raw_headers})
                await send(_body(FIRST_RETRY_BYTES))
                while not drain.closing:
                    frame = await feed.next(self.heartbeat)
                    if self.gone:
                        return
                    if frame:
                        await send(_body(frame.encode()))
                    elif not drain.closing:
                        await send(_body(PING_BYTES))
                await send(_body(drain.sse_farewell().encode()))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            listener.cancel()
            feed.close()
            if self.connections is not None:
                self.connections.dec()

    async def _listen(self, receive: Receive) -> None:
        """Wait for the client to leave, then wake the feed so the stream ends."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.feed.wake()


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an (empty) async generator


_NO_BODY = _no_body()
