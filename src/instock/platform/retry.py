"""The one retry helper (bounded attempts, jittered exponential backoff, on tenacity) and the
one backoff formula, which everything that waits before trying again uses: this helper, the
checkout saga, marketplace pushes and orders, webhook deliveries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from instock.platform.origin import WORK_ORIGIN

T = TypeVar("T")
log = structlog.get_logger(__name__)


def backoff(failures: int, *, base: float, cap: float, jitter: float = 0.0,
            draw: float = 1.0) -> float:
    """Seconds to wait after `failures` failures in a row (1-based; 0 counts as 1).

    The bound doubles per failure from `base` up to `cap`. `jitter` is the share of the bound
    that is drawn at random: 0 waits the bound itself, 0.5 somewhere in its upper half (still
    growing failure by failure, but receivers that come back after an outage are not hit by
    everything queued in the same second), 1 anywhere up to it (full jitter: competing writers
    do not retry in lockstep). `draw` in [0, 1] is the caller's random draw (1: the top).
    """
    bound = min(cap, base * 2 ** min(max(failures - 1, 0), 60))  # 2**1100 overflows a float
    return bound * (1.0 - jitter * (1.0 - draw))


async def retry(operation: Callable[[], Awaitable[T]], *, retry_on: tuple[type[Exception], ...],
                attempts: int, base_delay: float = 0.002, max_delay: float = 0.1,
                on_retry: Callable[[Exception], None] | None = None,
                except_for: tuple[type[Exception], ...] = (),
                retry_if: Callable[[Any], bool] | None = None,
                wait_asked: Callable[[Any], float | None] | None = None) -> T:
    """Run `operation`; on a `retry_on` error (that is not one of `except_for`, and that
    `retry_if` accepts when given) wait a jittered backoff and try again.

    Full jitter (a random wait up to the exponential bound, `base_delay * 2**n` after the n-th
    failure, capped at `max_delay`) keeps competing writers from retrying in lockstep. An error
    for which `wait_asked` returns seconds (a 429's Retry-After) is waited out as asked, capped
    at `max_delay`. After `attempts` tries the last error propagates as it was raised.
    `except_for` names subclasses of `retry_on` that must not be retried (an open circuit
    breaker among provider errors); `retry_if` judges one error (one that says it is permanent).
    """
    def retryable(exc: BaseException) -> bool:
        return (isinstance(exc, retry_on) and not isinstance(exc, except_for)
                and (retry_if is None or retry_if(exc)))

    def delay(exc: BaseException | None, failures: int) -> float:
        asked = wait_asked(exc) if wait_asked is not None and exc is not None else None
        if asked is not None:
            return min(asked, max_delay)
        return backoff(failures, base=base_delay, cap=max_delay, jitter=1.0,
                       draw=random.random())  # noqa: S311 - jitter, not a secret

    def told(exc: BaseException | None) -> None:
        if on_retry is not None and isinstance(exc, Exception):
            on_retry(exc)

    # The first attempt outside tenacity: almost every call succeeds at once, and tenacity's
    # machinery for one call (its retrying object, call state, a thread-local, a future with
    # its lock: some fifty objects in reference cycles) is garbage only the cyclic collector
    # frees, a pause in the middle of other requests. Its first wait and hook are as tenacity
    # would run them (the wait, then `before_sleep`, then the sleep).
    try:
        return await operation()
    except Exception as exc:
        if attempts <= 1 or not retryable(exc):
            raise
        pause = delay(exc, 2)  # tenacity's attempt_number + 1 after the first attempt
        told(exc)
    await asyncio.sleep(pause)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return delay(exc, state.attempt_number + 2)  # counting the first attempt, above

    def before_sleep(state: RetryCallState) -> None:
        if state.outcome is not None:
            told(state.outcome.exception())

    async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts - 1), retry=retry_if_exception(retryable),
            wait=wait, before_sleep=before_sleep, reraise=True):
        with attempt:
            return await operation()
    raise AssertionError("unreachable")  # reraise=True: the last error propagated above


async def keep_running(work: Callable[[], Awaitable[object]], what: str, *, pause: float = 1.0,
                       origin: str | None = None, **context: Any) -> None:
    """Run `work` again and again for the life of the process, `pause` seconds apart.

    Long-lived workers (relay, consumers, live listener, sweeper) use it so that an outage of
    the database or the bus is logged and outlived instead of ending them. Their database work
    is counted as `origin` (default: `what`) on /metrics (instock_db_statements_total{origin}).
    """
    WORK_ORIGIN.set(origin or what)  # this task's own context: the caller's is untouched
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{what}_failed", **context)
        await asyncio.sleep(pause)
