"""Versioned flags in memory and in a real Redis: newest version wins, every flag expires."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from instock.platform.flags import LocalFlags, RedisFlags, VersionedFlags
from tests.support import REDIS_URL

HOMES = ["memory"] + (["redis"] if REDIS_URL else [])


@pytest.fixture(params=HOMES)
async def flags(request: pytest.FixtureRequest) -> AsyncIterator[VersionedFlags]:
    home: VersionedFlags
    if request.param == "redis":
        assert REDIS_URL is not None
        home = RedisFlags(REDIS_URL, ttl_seconds=0.3, namespace=f"test-{uuid.uuid4().hex}")
    else:
        home = LocalFlags(ttl_seconds=0.3)
    yield home
    await home.close()


async def test_a_newer_state_wins_and_an_older_one_is_ignored(flags: VersionedFlags) -> None:
    await flags.record({"A": (5, True), "B": (1, False)})
    assert await flags.raised(["A", "B", "C"]) == {"A"}
    await flags.record({"A": (6, False)})  # stock came back at version 6
    await flags.record({"A": (5, True)})  # a late writer of version 5 must not undo that
    assert await flags.raised(["A"]) == set()
    await flags.record({"A": (6, True)})  # the same version again may say it (same state)
    assert await flags.raised(["A"]) == {"A"}


async def test_every_flag_expires_after_its_ttl(flags: VersionedFlags) -> None:
    await flags.record({"A": (1, True)})
    assert await flags.raised(["A"]) == {"A"}
    await asyncio.sleep(0.4)
    assert await flags.raised(["A"]) == set()


@pytest.mark.skipif(REDIS_URL is None, reason="needs INSTOCK_TEST_REDIS_URL")
async def test_redis_flags_are_shared_between_processes_views() -> None:
    assert REDIS_URL is not None
    namespace = f"test-{uuid.uuid4().hex}"
    one, other = (RedisFlags(REDIS_URL, 5.0, namespace) for _ in range(2))
    try:
        await one.record({"A": (3, True)})
        assert await other.raised(["A"]) == {"A"}
        await other.record({"A": (4, False)})
        assert await one.raised(["A"]) == set()
    finally:
        await one.close()
        await other.close()


async def test_memory_flags_hear_other_processes_through_observe() -> None:
    flags = LocalFlags(ttl_seconds=5)
    await flags.record({"A": (3, True)})
    flags.observe("A", (2, False))  # an old event arriving late changes nothing
    assert await flags.raised(["A"]) == {"A"}
    flags.observe("A", (4, False))
    assert await flags.raised(["A"]) == set()


async def test_redis_down_means_no_shortcut_not_a_failure() -> None:
    nothing_listens = "redis://127.0.0.1:1/0"
    flags = RedisFlags(nothing_listens, ttl_seconds=1, namespace="down")
    try:
        await flags.record({"A": (1, True)})  # logged, not raised: the commit already happened
        assert await flags.raised(["A"]) == set()  # the database will decide
    finally:
        await flags.close()
