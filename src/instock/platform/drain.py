"""Stopping without dropping anyone: leave the load balancer's rotation, send live clients
elsewhere with a hint to come back, finish the work in hand, then exit (issue 22).

Two halves, one per kind of process:

- An API process (`Drain`, one per app, `app.state.drain`): told to stop, it first answers
  `/readyz` 503 "draining" while it goes on serving for `INSTOCK_DRAIN_SECONDS` (long enough
  for the load balancer's health checks to take it out: HAProxy's `inter 500ms fall 2` need
  ~1 s); then every live connection registered here is closed with a reconnect hint (SSE: a
  `reconnect` event with a `retry:` field; WebSocket and GraphQL over WebSocket: close code
  1012 "service restart"), and only then does uvicorn stop accepting and finish the requests
  in flight (platform/serving.py runs that sequence).
- Background work (`Duties`, for `instock worker all` and an API process's own duties): a
  batch in hand (a consumer's burst, a relay's publish) is finished before the tasks are
  cancelled; nothing new starts once stopping. What is cancelled is safe to cancel anyway
  (a transaction rolls back, an unacked delivery is redelivered), so this only spares the
  next process work done twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextvars import ContextVar
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instock.platform.errors import problem_document

log = structlog.get_logger(__name__)

# RFC 6455 §7.4.1 (IANA registry): "the service is restarted; a client may reconnect, and if it
# chooses to do so, should reconnect using a randomized delay of 5 - 30 s". Browsers and the
# GraphQL clients surface it as a close they can act on, unlike 1001 "going away".
RESTART_CLOSE_CODE = 1012
RESTART_REASON = "service restart"
# An SSE client told to reconnect waits a random time in this window (ms): the clients of one
# stopping process do not all land on the others in the same instant.
RECONNECT_WINDOW_MS = (250, 2500)
CANCEL_TIMEOUT = 5.0  # seconds cancelled background tasks get to unwind

# Something that ends one live connection: called once when live clients are sent away. It may
# be a coroutine function (a WebSocket close) or a plain one (waking an SSE writer that then
# says goodbye itself).
Closer = Callable[[], Awaitable[None] | None]


class Drain:
    """One API process's stopping state, and the live connections it must send away."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds  # how long /readyz says "draining" while requests still come
        self.draining = False  # set: /readyz answers 503, the load balancer takes us out
        self.closing = False  # set: live connections are being closed with a reconnect hint
        self._live: dict[int, Closer] = {}
        self._next = 0
        self._emptied: asyncio.Event | None = None

    def begin(self) -> None:
        if not self.draining:
            log.info("draining", seconds=self.seconds, live=len(self._live))
        self.draining = True

    @property
    def live(self) -> int:
        return len(self._live)

    @contextlib.contextmanager
    def track(self, close: Closer) -> Iterator[None]:
        """Register a live connection for as long as the block runs."""
        key, self._next = self._next, self._next + 1
        self._live[key] = close
        try:
            yield
        finally:
            del self._live[key]
            if not self._live and self._emptied is not None:
                self._emptied.set()

    async def close_live(self, timeout: float = 5.0) -> int:
        """Send every live connection away (each with its reconnect hint) and wait, at most
        `timeout` seconds, until they have all ended; how many there were."""
        self.draining = self.closing = True
        closers = list(self._live.values())
        if not closers:
            return 0
        self._emptied = asyncio.Event()
        for close in closers:
            try:
                outcome = close()
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # a client already gone: nothing to send it
                log.debug("live_close_failed", exc_info=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._emptied.wait()
        log.info("live_connections_closed", closed=len(closers), left=len(self._live))
        return len(closers)

    def sse_farewell(self) -> str:
        """The last frames of an SSE stream: reconnect after a randomised delay (`retry:`, which
        EventSource obeys) and an event saying why, for clients that read it."""
        retry_ms = random.randint(*RECONNECT_WINDOW_MS)  # noqa: S311 - spreading load, no secret
        body = json.dumps({"reason": RESTART_REASON, "retry_ms": retry_ms})
        return f"retry: {retry_ms}\nevent: reconnect\ndata: {body}\n\n"


class CloseWhileDraining:
    """ASGI middleware: while draining, every HTTP response says `Connection: close`.

    A load balancer keeps idle connections to each server and reuses them. Uvicorn's graceful
    stop closes the idle ones, and a request the balancer sends on one at that instant gets no
    answer: HAProxy then closes its *client's* connection without a response (so the client
    may retry), which a client that does not retry sees as an error. A draining process that
    closes each connection after its answer leaves none idle to be cut.
    """

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.drain.draining:
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


def readiness_refusal() -> dict[str, Any]:
    """The problem document of /readyz while draining (the caller renders it)."""
    return problem_document(503, "draining", "Draining",
                            "this process is stopping: it finishes what it has and takes "
                            "no new work")


# -- background work -------------------------------------------------------------------------


class WorkInHand:
    """Counts the batches background tasks hold. Once `stop` is called no new batch starts
    (the task asking waits to be cancelled), and `stop` returns when those in hand are done."""

    def __init__(self) -> None:
        self.stopping = False
        self._held = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        if self.stopping:
            await asyncio.Event().wait()  # parked: the cancellation that follows ends it
        self._held += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._held -= 1
            if not self._held:
                self._idle.set()

    async def stop(self, timeout: float) -> bool:
        """Let the batches in hand finish (at most `timeout` seconds); True if they all did."""
        self.stopping = True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("work_in_hand_unfinished", batches=self._held, timeout=timeout)
            return False
        return True


# The tracker of the duties a task was started under (`Duties`): a context variable, because
# each task copies the context it is created in, so a consumer or relay finds its own process's
# (or test app's) tracker without one being threaded through every constructor.
_CURRENT: ContextVar[WorkInHand | None] = ContextVar("instock_work_in_hand", default=None)


def in_hand() -> contextlib.AbstractAsyncContextManager[None]:
    """Hold one batch of background work: it is finished, not cancelled, when the process
    stops gracefully (outside `Duties`, a no-op)."""
    tracker = _CURRENT.get()
    return tracker.batch() if tracker is not None else contextlib.nullcontext()


class Duties:
    """Background coroutines run as tasks under one `WorkInHand`, stopped gracefully."""

    def __init__(self, work: list[Coroutine[Any, Any, None]]) -> None:
        self.tracker = WorkInHand()
        token = _CURRENT.set(self.tracker)
        try:  # the tasks copy the context now, tracker included
            self.tasks = [asyncio.create_task(w) for w in work]
        finally:
            _CURRENT.reset(token)

    async def stop(self, grace: float) -> None:
        """Finish the batches in hand (at most `grace` seconds), then cancel every task."""
        await self.tracker.stop(grace)
        for task in self.tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self.tasks, timeout=CANCEL_TIMEOUT)
        for task in stuck:  # a task that swallowed its cancellation: say where it hangs
            log.error("duty_not_cancelled", task=repr(task),
                      frames=[f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}"
                             for f in task.get_stack(limit=20)])


async def run_until_signalled(work: list[Coroutine[Any, Any, None]], grace: float) -> None:
    """Run background work until SIGTERM or SIGINT, then stop it gracefully (`Duties.stop`):
    `instock worker all`. A duty that ends by itself (they run forever) ends the run too, its
    error raised after the others were stopped."""
    loop = asyncio.get_running_loop()
    told = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, told.set)
    duties = Duties(work)
    waiter = asyncio.create_task(told.wait())
    try:
        done, _ = await asyncio.wait([waiter, *duties.tasks],
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        waiter.cancel()
        log.info("worker_stopping", grace=grace)
        await duties.stop(grace)
    for task in done - {waiter}:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
