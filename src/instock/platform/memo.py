"""A small in-process cache of slow lookups: entries expire, and concurrent misses share a load
(with a ttl of 0 it caches nothing and only shares the loads that overlap).

Without the sharing, a burst of buyers arriving the moment an entry expires would each run the
same query (ten thousand of them at a drop's opening), queueing on the connection pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from instock.platform import held

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, load: Callable[[K], Awaitable[V]], ttl_seconds: float,
                 max_entries: int | None = None) -> None:
        self._load = load
        self._ttl = ttl_seconds
        self._max = max_entries  # beyond it the oldest entry goes: a memo of shoppers is unbounded
        self._values: dict[K, tuple[V, float]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        cached = self._values.get(key)
        if cached is not None and time.monotonic() - cached[1] < self._ttl:
            return cached[0]
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = held.detached(self._fetch(key))
        return await asyncio.shield(loading)  # one caller giving up does not cancel the rest

    async def _fetch(self, key: K) -> V:
        try:
            value = await self._load(key)
            if self._ttl > 0:  # with no ttl, a memo only shares loads that overlap
                self._values.pop(key, None)  # re-inserted last: the dict's order is age
                self._values[key] = (value, time.monotonic())
                if self._max is not None and len(self._values) > self._max:
                    del self._values[next(iter(self._values))]
            return value
        finally:
            del self._loading[key]

    def forget(self, key: K | None = None) -> None:
        """Drop one entry (or all): the next `get` loads it again."""
        if key is None:
            self._values.clear()
        else:
            self._values.pop(key, None)
