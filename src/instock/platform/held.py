"""A request's write transaction held open until its response is written into it.

A client that retries a write must get the answer to the write that committed. If the server
commits the change and dies before it stores the response, a retry would find nothing, or a
request still "in progress" that never ends. So a request with an `Idempotency-Key` asks the
database to hold its write transaction open when the service's block ends; the response is
rendered, stored in that same transaction, and only then committed (see idempotency.py).

Whatever the request does next with the database settles the hold first, so no code has to know
about it: another write commits the held one (after `on_first_commit`, which records that the
request has started and cannot be run again from scratch), and a read reads through the held
connection (it sees the request's own writes; so do tasks it awaits, such as GraphQL's field
resolvers). Only the request's own task holds a write. Work that must be durable step by step,
because it calls out between steps (a saga paying with a provider), runs inside
`Database.durable()`; a task that serves more than this request (a group commit's batches, a
shared load) is started with `detached`, outside the request's hold.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from instock.platform.db import Database

# Written when a request first commits something, in that transaction.
FirstCommit = Callable[[AsyncConnection], Awaitable[None]]
T = TypeVar("T")

_current: ContextVar[Hold | None] = ContextVar("instock_held_write", default=None)


class Hold:
    def __init__(self, on_first_commit: FirstCommit) -> None:
        self.on_first_commit = on_first_commit
        self.started = False  # something of this request has committed
        # Readers of one request may run concurrently (GraphQL resolvers); a connection serves
        # one statement at a time.
        self.lock = asyncio.Lock()
        self._held: tuple[Database, AsyncConnection, AsyncExitStack] | None = None
        self._task = asyncio.current_task()

    @property
    def writes_here(self) -> bool:
        """Whether a write in the running task is this request's to hold."""
        return asyncio.current_task() is self._task

    def keep(self, db: Database, conn: AsyncConnection, stack: AsyncExitStack) -> None:
        assert self._held is None, "one write transaction is held at a time"
        self._held = (db, conn, stack)

    @asynccontextmanager
    async def _reading(self, conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
        async with self.lock:
            yield conn

    @property
    def holding(self) -> bool:
        return self._held is not None

    async def settle(self, last: FirstCommit | None = None, *, claim: bool = True) -> None:
        """Commit the held transaction, if any, after `last` (the response) or, the first time
        and if `claim`, `on_first_commit`. Rolls it back if either raises."""
        if self._held is None:
            return
        db, conn, stack = self._held
        self._held = None
        async with self.lock:
            try:
                if last is not None:
                    await last(conn)
                elif claim and not self.started:
                    await self.on_first_commit(conn)
                    self.started = True
            except BaseException as exc:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            await db.commit(conn, stack)

    async def discard(self) -> None:
        """Roll the held transaction back, if any (the request failed after its write)."""
        if self._held is not None:
            _, _, stack = self._held
            self._held = None
            error = RuntimeError("the request failed after its write")
            await stack.__aexit__(RuntimeError, error, None)


def current() -> Hold | None:
    return _current.get()


def reading(db: Database) -> AbstractAsyncContextManager[AsyncConnection] | None:
    """The held write transaction of the running request on `db`, to read through (its own
    writes are not committed yet), if it holds one."""
    hold = _current.get()
    if hold is None or hold._held is None or hold._held[0] is not db:
        return None
    return hold._reading(hold._held[1])


def writing() -> Hold | None:
    """The hold a write in the running task belongs to, if any."""
    hold = _current.get()
    return hold if hold is not None and hold.writes_here else None


def detached(work: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Start `work` as a task outside any request's hold: it serves others as well, so it must
    neither read a request's uncommitted writes nor have its own writes wait for a response."""
    context = contextvars.copy_context()
    context.run(_current.set, None)
    return asyncio.create_task(work, name=name, context=context)


@contextmanager
def holding(hold: Hold | None) -> Iterator[None]:
    """Writes and reads of the code run inside use `hold` (None: no hold, commit at once)."""
    token = _current.set(hold)
    try:
        yield
    finally:
        _current.reset(token)
