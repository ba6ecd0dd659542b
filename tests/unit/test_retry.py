"""The one retry helper: bounded attempts with jittered backoff."""

from __future__ import annotations

import pytest

from instock.platform.errors import VersionConflict
from instock.platform.retry import retry


async def test_retries_a_lost_race_then_succeeds() -> None:
    calls: list[int] = []
    retried: list[Exception] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise VersionConflict("lost the race")
        return "done"

    assert await retry(flaky, retry_on=(VersionConflict,), attempts=5, base_delay=0.0001,
                       on_retry=retried.append) == "done"
    assert len(calls) == 3 and len(retried) == 2


async def test_gives_up_after_the_bound_with_the_clear_error() -> None:
    calls: list[int] = []

    async def always_conflicts() -> None:
        calls.append(1)
        raise VersionConflict("lost the race")

    with pytest.raises(VersionConflict) as info:
        await retry(always_conflicts, retry_on=(VersionConflict,), attempts=4, base_delay=0.0001)
    assert len(calls) == 4 and info.value.status == 409


async def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    async def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not a race")

    with pytest.raises(ValueError):
        await retry(broken, retry_on=(VersionConflict,), attempts=4)
    assert len(calls) == 1


async def test_excepted_subclasses_are_not_retried() -> None:
    class Unavailable(Exception):
        pass

    class Open(Unavailable):  # a breaker that is open: retrying at once is pointless
        pass

    calls: list[int] = []

    async def open_circuit() -> None:
        calls.append(1)
        raise Open("open")

    with pytest.raises(Open):
        await retry(open_circuit, retry_on=(Unavailable,), except_for=(Open,), attempts=4,
                    base_delay=0.0001)
    assert len(calls) == 1
