"""Versioned flags: per key, a yes/no about some aggregate, tagged with the aggregate's version.

Used to answer "is this SKU sold out?" without the database. Writers may race and arrive late, so
a write only lands if its version is newer than the one stored: a stale "sold out" can never
overwrite a newer "back in stock". Every flag also expires after `ttl` seconds, which bounds how
long a lost write (a process killed between its commit and its flag update) can mislead.

Two homes: this process's memory (the default), or Redis, shared by every process.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import cast

import structlog
from redis.exceptions import RedisError

from instock.platform.cache import connect_redis
from instock.platform.memo import Memo

log = structlog.get_logger(__name__)

# A state: the aggregate's version and whether the flag is raised at that version.
State = tuple[int, bool]


class VersionedFlags(ABC):
    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds

    @abstractmethod
    async def raised(self, keys: Iterable[str]) -> set[str]:
        """The keys whose flag is up (and younger than the ttl)."""

    @abstractmethod
    async def record(self, states: Mapping[str, State]) -> None:
        """Store each state unless a newer version is already stored."""

    def observe(self, key: str, state: State) -> None:  # noqa: B027 - most homes need nothing
        """A state heard from elsewhere (another process's event). Only memory needs it:
        Redis already holds what every process wrote."""

    async def close(self) -> None:
        return None


class LocalFlags(VersionedFlags):
    def __init__(self, ttl_seconds: float) -> None:
        super().__init__(ttl_seconds)
        self._states: dict[str, tuple[int, bool, float]] = {}

    async def raised(self, keys: Iterable[str]) -> set[str]:
        now = time.monotonic()
        return {key for key in keys
                if (found := self._states.get(key)) is not None and found[1]
                and now - found[2] < self.ttl}

    async def record(self, states: Mapping[str, State]) -> None:
        for key, state in states.items():
            self.observe(key, state)

    def observe(self, key: str, state: State) -> None:
        version, up = state
        found = self._states.get(key)
        if found is None or found[0] <= version:
            self._states[key] = (version, up, time.monotonic())


# KEYS: flag keys; ARGV: ttl in ms, then a version and a 0/1 per key. A flag is "version:0|1".
_RECORD = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[2 * i])
  local stored = redis.call('GET', key)
  if not stored or tonumber(string.match(stored, '^(%d+):')) <= version then
    redis.call('SET', key, ARGV[2 * i] .. ':' .. ARGV[2 * i + 1], 'PX', ttl)
  end
end
return 0
"""


class RedisFlags(VersionedFlags):
    """Flags every process shares. Redis being down or slow must not fail a reservation: a
    flag is only a shortcut, so an unanswered ask counts as "not raised" (the database decides)
    and an unwritten state is logged; what was written before expires within the ttl."""

    def __init__(self, url: str, ttl_seconds: float, namespace: str) -> None:
        super().__init__(ttl_seconds)
        # A drop asks thousands of times at once: callers wait for a connection rather than
        # fail, and concurrent asks for the same keys share one round trip (`_reading`).
        self._redis = connect_redis(url)
        self._prefix = f"instock:flags:{namespace}:"
        self._record = self._redis.register_script(_RECORD)
        self._reading = Memo(self._read, ttl_seconds=0)

    async def raised(self, keys: Iterable[str]) -> set[str]:
        wanted = tuple(sorted(set(keys)))
        if not wanted:
            return set()
        return set(await self._reading.get(wanted))

    async def _read(self, wanted: tuple[str, ...]) -> set[str]:
        try:
            values = await self._redis.mget([self._prefix + key for key in wanted])
        except (RedisError, OSError) as exc:
            log.warning("flags_unreadable", error=repr(exc))
            return set()
        # Raw bytes (no decode_responses): the typing stubs say str, the wire says b"7:1".
        return {key for key, value in zip(wanted, values, strict=True)
                if value is not None and cast(bytes, value).endswith(b":1")}

    async def record(self, states: Mapping[str, State]) -> None:
        if not states:
            return
        args: list[int | str] = [max(1, round(self.ttl * 1000))]
        for version, up in states.values():
            args += [version, int(up)]
        try:
            await self._record(keys=[self._prefix + key for key in states], args=args)
        except (RedisError, OSError) as exc:
            log.warning("flags_unwritten", keys=sorted(states), error=repr(exc))

    async def close(self) -> None:
        await self._redis.aclose()


def versioned_flags(redis_url: str | None, ttl_seconds: float, namespace: str) -> VersionedFlags:
    if redis_url:
        return RedisFlags(redis_url, ttl_seconds, namespace)
    return LocalFlags(ttl_seconds)
