"""Serving a Server-Sent Events stream: the one loop every SSE route runs (live stock, the
drops' waiting room).

A stream asks its feed for frames, sends a comment line after each quiet `heartbeat` (proxies
and load balancers close idle connections), and says goodbye when the process stops: the drain
wakes the feed, the stream sends what it holds, then its farewell (reconnect after a randomised
`retry:`), and ends, so the client comes back through the load balancer to a process that stays
(platform/drain.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from fastapi.responses import StreamingResponse
from prometheus_client import Gauge

from instock.platform.drain import Drain

FIRST_RETRY = "retry: 2000\n\n"  # how long EventSource waits before reconnecting by itself
PING = ": ping\n\n"


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

    async def frames() -> AsyncIterator[str]:
        if connections is not None:
            connections.inc()
        try:
            with drain.track(feed.wake):
                yield FIRST_RETRY
                while not drain.closing:
                    frame = await feed.next(heartbeat)
                    if frame:
                        yield frame
                    elif not drain.closing:
                        yield PING
                yield drain.sse_farewell()
        finally:
            feed.close()
            if connections is not None:
                connections.dec()

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
