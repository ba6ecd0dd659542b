"""In-process locks by key, taken in sorted order like the database row locks they front.

Writers of the same SKU in one process queue here, in arrival order, instead of each holding a
database connection while waiting on the row lock: with many buyers of one SKU, PostgreSQL wakes
every waiter of a row at each commit, and only one of them can win.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        ordered = sorted(set(keys))
        for key in ordered:  # count users first, so a lock is dropped only when nobody needs it
            self._users[key] = self._users.get(key, 0) + 1
            self._locks.setdefault(key, asyncio.Lock())
        try:
            async with AsyncExitStack() as stack:
                for key in ordered:
                    await stack.enter_async_context(self._locks[key])
                yield
        finally:
            for key in ordered:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
