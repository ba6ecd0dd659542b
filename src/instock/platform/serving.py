"""Running the API under uvicorn with a graceful stop (issue 22): `instock serve` uses this.

Uvicorn alone, told to stop, closes its listening socket at once and then waits for the
requests in flight: a load balancer still sending traffic there gets refused connections until
its health checks notice, and SSE and WebSocket clients are cut without a word (or, with no
shutdown timeout, keep the process alive for ever). `DrainingServer` puts the steps in the
order a fleet needs them:

1. SIGTERM: the app's `Drain` begins, `/readyz` answers 503 "draining"; everything else is
   served as before for `INSTOCK_DRAIN_SECONDS` while the load balancer takes the process out.
   (SIGINT, a person's Ctrl-C with no balancer in front, skips the wait.)
2. Live connections are sent away with a reconnect hint (platform/drain.py).
3. Uvicorn's own graceful shutdown: stop accepting, finish the requests in flight within
   `INSTOCK_SHUTDOWN_TIMEOUT_SECONDS`, run the lifespan's shutdown (background work finishes
   its batch in hand), exit.

A second signal skips to step 3 at once, a third SIGINT forces the exit (as uvicorn does).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from instock.platform.drain import Drain

log = structlog.get_logger(__name__)
LIVE_CLOSE_TIMEOUT = 5.0  # seconds live clients get to take their hint before uvicorn stops


def find_drain(app: Any) -> Drain | None:
    """The app's drain state, through whatever ASGI wrappers uvicorn put around it."""
    for _ in range(8):
        drain = getattr(getattr(app, "state", None), "drain", None)
        if isinstance(drain, Drain):
            return drain
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler, between two bytecodes of the loop's thread: only hand the
        # work to the loop (call_soon_threadsafe writes to its self-pipe, which is safe here).
        if self._draining is not None or self._loop is None or not self.started:
            super().handle_exit(sig, frame)  # a second signal, or one before serving began
            return
        self._captured_signals.append(sig)
        self._loop.call_soon_threadsafe(self._begin, sig)

    def _begin(self, sig: int) -> None:
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain(sig))

    async def _drain(self, sig: int) -> None:
        drain = find_drain(self.config.loaded_app)
        try:
            if drain is not None:
                drain.begin()
                if sig == signal.SIGTERM and drain.seconds > 0:
                    await self._sleep_unless_told(drain.seconds)
                if not self.should_exit:
                    await drain.close_live(LIVE_CLOSE_TIMEOUT)
        finally:
            self.should_exit = True  # uvicorn's own graceful shutdown from here

    async def _sleep_unless_told(self, seconds: float) -> None:
        """Sleep, but end early when a second signal asked for the exit now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.should_exit and loop.time() < deadline:
            await asyncio.sleep(min(0.05, deadline - loop.time()))


class _DrainingProcess(multiprocess.Process):
    """A `--workers N` child whose server is a `DrainingServer` (uvicorn's supervisor sends
    each child SIGTERM when told to stop)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


@contextlib.contextmanager
def _draining_children() -> Iterator[None]:
    # uvicorn's supervisor makes its children from the module's `Process` in three places
    # (start, restart after a crash, SIGHUP reload); naming ours there covers them all.
    original = multiprocess.Process
    multiprocess.Process = _DrainingProcess  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = original  # type: ignore[misc]


def run(app: str, *, workers: int = 1, **options: Any) -> None:
    """`uvicorn.run(app, factory=True, workers=…, **options)` with `DrainingServer`s."""
    config = uvicorn.Config(app, factory=True, workers=workers, **options)
    if workers > 1:
        sock = config.bind_socket()
        with _draining_children():
            multiprocess.Multiprocess(config, sockets=[sock]).run()
        return
    server = DrainingServer(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
