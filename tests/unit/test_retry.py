"""The one retry helper: bounded attempts with jittered backoff."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.platform.errors import VersionConflict
from instock.platform.retry import backoff, retry


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


# -- the one backoff formula -------------------------------------------------------------------


def test_the_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff(n, base=1.0, cap=300.0) for n in (0, 1, 2, 3)] == [1.0, 1.0, 2.0, 4.0]
    assert backoff(100, base=1.0, cap=300.0) == 300.0
    assert backoff(10**6, base=0.4, cap=60.0) == 60.0  # no overflow however long it failed


@given(failures=st.integers(1, 2000), base=st.floats(0.01, 1000), cap=st.floats(0.01, 1e6),
       jitter=st.floats(0, 1), draw=st.floats(0, 1))
def test_a_jittered_wait_lies_in_its_share_of_the_bound_and_the_shortest_never_shrinks(
        failures: int, base: float, cap: float, jitter: float, draw: float) -> None:
    bound = backoff(failures, base=base, cap=cap)
    wait = backoff(failures, base=base, cap=cap, jitter=jitter, draw=draw)
    assert bound * (1 - jitter) * (1 - 1e-12) <= wait <= bound <= cap
    assert backoff(failures + 1, base=base, cap=cap, jitter=jitter, draw=0.0) >= backoff(
        failures, base=base, cap=cap, jitter=jitter, draw=0.0)


async def test_an_error_that_asks_for_a_wait_gets_it_and_a_permanent_one_is_not_retried() -> None:
    class Refused(Exception):
        def __init__(self, retryable: bool, asked: float | None = None) -> None:
            super().__init__("refused")
            self.retryable, self.asked = retryable, asked

    waits: list[float] = []
    errors = [Refused(True, asked=0.05), Refused(False)]
    calls: list[int] = []

    async def call() -> None:
        calls.append(1)
        raise errors[len(calls) - 1]

    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    with pytest.raises(Refused) as info:
        await retry(call, retry_on=(Refused,), attempts=5, base_delay=10.0, max_delay=10.0,
                    retry_if=lambda exc: exc.retryable, wait_asked=lambda exc: exc.asked,
                    on_retry=lambda exc: waits.append(loop_time() - started))
    assert len(calls) == 2 and not info.value.retryable  # the permanent error ended it
    assert len(waits) == 1 and waits[0] < 0.05  # one retry, told before its wait
    assert 0.05 <= loop_time() - started < 5  # waited as asked, not the 10 s backoff
