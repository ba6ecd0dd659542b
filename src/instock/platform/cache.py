"""Caches whose entries are grouped by owner (a shopper's lists): read one entry, drop a whole
group at once when its owner changes. In this process's memory, or in Redis for every process.

A cache is only a shortcut: Redis being down or slow counts as a miss and a lost write is logged,
never an error for the caller.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

# Seconds to wait for Redis before doing without it.
REDIS_TIMEOUT = 0.5


def connect_redis(url: str, max_connections: int = 32) -> aioredis.Redis:
    """A client whose callers queue for a connection rather than fail, and time out quickly."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
    return aioredis.Redis(connection_pool=pool)


class GroupedCache(ABC):
    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds

    @abstractmethod
    async def get(self, group: str, key: str) -> Any | None: ...

    @abstractmethod
    async def put(self, group: str, key: str, value: Any) -> None: ...

    @abstractmethod
    async def drop(self, groups: Iterable[str]) -> None: ...

    async def ping(self) -> None:
        """Raise unless the store behind the cache answers (a local cache always does)."""
        return None

    async def close(self) -> None:
        return None


class LocalCache(GroupedCache):
    """Values are kept as JSON bytes, as in Redis: the same values round-trip either way, and a
    hundred thousand cached lists are a hundred thousand objects for the garbage collector to
    walk, not millions of small dicts."""

    def __init__(self, ttl_seconds: float, max_groups: int = 100_000) -> None:
        super().__init__(ttl_seconds)
        self.max_groups = max_groups
        self._groups: OrderedDict[str, dict[str, tuple[bytes, float]]] = OrderedDict()

    async def get(self, group: str, key: str) -> Any | None:
        found = self._groups.get(group, {}).get(key)
        if found is None or time.monotonic() - found[1] >= self.ttl:
            return None
        return orjson.loads(found[0])

    async def put(self, group: str, key: str, value: Any) -> None:
        self._groups.setdefault(group, {})[key] = (orjson.dumps(value), time.monotonic())
        self._groups.move_to_end(group)
        if len(self._groups) > self.max_groups:
            self._groups.popitem(last=False)

    async def drop(self, groups: Iterable[str]) -> None:
        for group in groups:
            self._groups.pop(group, None)


class RedisCache(GroupedCache):
    """One Redis hash per group: a read is one HGET, dropping a group one DEL."""

    def __init__(self, url: str, ttl_seconds: float, namespace: str) -> None:
        super().__init__(ttl_seconds)
        self._redis = connect_redis(url)
        self._prefix = f"instock:cache:{namespace}:"

    async def get(self, group: str, key: str) -> Any | None:
        try:
            raw = await self._redis.hget(self._prefix + group, key)
        except (RedisError, OSError) as exc:
            log.warning("cache_unreadable", error=repr(exc))
            return None
        return None if raw is None else orjson.loads(raw)

    async def put(self, group: str, key: str, value: Any) -> None:
        name = self._prefix + group
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(name, key, orjson.dumps(value))
                pipe.pexpire(name, max(1, round(self.ttl * 1000)))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("cache_unwritten", error=repr(exc))

    async def drop(self, groups: Iterable[str]) -> None:
        names = [self._prefix + group for group in groups]
        if not names:
            return
        try:
            await self._redis.delete(*names)
        except (RedisError, OSError) as exc:
            log.warning("cache_not_dropped", error=repr(exc))

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def grouped_cache(redis_url: str | None, ttl_seconds: float, namespace: str) -> GroupedCache:
    if redis_url:
        return RedisCache(redis_url, ttl_seconds, namespace)
    return LocalCache(ttl_seconds)
