"""The one retry helper: bounded attempts, exponential backoff with full jitter (tenacity)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

T = TypeVar("T")
log = structlog.get_logger(__name__)


async def retry(operation: Callable[[], Awaitable[T]], *, retry_on: tuple[type[Exception], ...],
                attempts: int, base_delay: float = 0.002, max_delay: float = 0.1,
                on_retry: Callable[[Exception], None] | None = None,
                except_for: tuple[type[Exception], ...] = ()) -> T:
    """Run `operation`; on a `retry_on` error (that is not one of `except_for`) wait a jittered
    backoff and try again.

    Full jitter (a random wait up to the exponential bound, `base_delay * 2**attempt` capped
    at `max_delay`) keeps competing writers from retrying in lockstep. After `attempts` tries
    the last error propagates as it was raised. `except_for` names subclasses of `retry_on`
    that must not be retried (an open circuit breaker among provider errors).
    """
    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, retry_on) and not isinstance(exc, except_for)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if isinstance(exc, Exception):
                on_retry(exc)

    # tenacity's window for attempt n is multiplier * 2**(n-1): doubling the base keeps the
    # bound this helper always had (base_delay * 2**n after the n-th failure).
    async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts), retry=retry_if_exception(retryable),
            wait=wait_random_exponential(multiplier=base_delay * 2, max=max_delay),
            before_sleep=before_sleep, reraise=True):
        with attempt:
            return await operation()
    raise AssertionError("unreachable")  # reraise=True: the last error propagated above


async def keep_running(work: Callable[[], Awaitable[object]], what: str, *, pause: float = 1.0,
                       **context: Any) -> None:
    """Run `work` again and again for the life of the process, `pause` seconds apart.

    Long-lived workers (relay, consumers, live listener, sweeper) use it so that an outage of
    the database or the bus is logged and outlived instead of ending them.
    """
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{what}_failed", **context)
        await asyncio.sleep(pause)
