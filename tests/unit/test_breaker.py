"""The circuit breaker: opens after N consecutive failures, fails fast, half-opens after the
cooldown, closes on a success, reopens on a failed trial; the gauge follows."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from instock.platform.breaker import Breaker, BreakerOpen
from instock.platform.ids import new_id


class Down(Exception):
    pass


class Declined(Exception):
    pass


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("instock_circuit_breaker_state", {"breaker": name})


async def fail(breaker: Breaker, exc: Exception) -> None:
    with pytest.raises(type(exc)):
        async with breaker.guard():
            raise exc


async def succeed(breaker: Breaker) -> str:
    async with breaker.guard():
        return "ok"


def breaker(threshold: int = 3, cooldown: float = 60.0) -> Breaker:
    return Breaker(f"test-{new_id()}", threshold=threshold, cooldown=cooldown,
                   is_failure=lambda exc: not isinstance(exc, Declined))


async def test_opens_after_threshold_consecutive_failures_and_fails_fast() -> None:
    b = breaker(threshold=3)
    for _ in range(2):
        await fail(b, Down())
    assert b.state == "closed" and gauge(b.name) == 0
    await fail(b, Down())
    assert b.state == "open" and gauge(b.name) == 2
    calls: list[int] = []
    with pytest.raises(BreakerOpen) as info:
        async with b.guard():
            calls.append(1)  # never reached: the call is not made
    assert calls == [] and 0 < info.value.retry_after <= 60


async def test_a_success_resets_the_count_and_excluded_errors_are_not_failures() -> None:
    b = breaker(threshold=2)
    await fail(b, Down())
    assert await succeed(b) == "ok"
    await fail(b, Down())
    assert b.state == "closed"  # not two in a row
    for _ in range(5):
        await fail(b, Declined())  # the dependency answered: it is up
    assert b.state == "closed"


async def test_half_open_after_cooldown_then_closes_on_success() -> None:
    b = breaker(threshold=1, cooldown=0.05)
    await fail(b, Down())
    assert b.state == "open"
    await asyncio.sleep(0.1)
    assert await succeed(b) == "ok"  # the trial call goes through
    assert b.state == "closed" and gauge(b.name) == 0


async def test_a_failed_trial_opens_it_again() -> None:
    # A cooldown a busy machine cannot outlast between two lines (0.05 s once did).
    b = breaker(threshold=1, cooldown=0.5)
    await fail(b, Down())
    await asyncio.sleep(0.6)
    await fail(b, Down())  # the trial fails
    assert b.state == "open" and gauge(b.name) == 2
    with pytest.raises(BreakerOpen):
        await succeed(b)


async def test_breakers_do_not_share_state() -> None:
    a, b = breaker(threshold=1), breaker(threshold=1)
    await fail(a, Down())
    assert a.state == "open" and b.state == "closed"
    assert await succeed(b) == "ok"
