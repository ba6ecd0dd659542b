"""The one retry helper: bounded attempts, exponential backoff with full jitter."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger(__name__)


async def retry(operation: Callable[[], Awaitable[T]], *, retry_on: tuple[type[Exception], ...],
                attempts: int, base_delay: float = 0.002, max_delay: float = 0.1,
                on_retry: Callable[[Exception], None] | None = None) -> T:
    """Run `operation`; on a `retry_on` error wait a jittered backoff and try again.

    Full jitter (a random wait up to the exponential bound) keeps competing writers from
    retrying in lockstep. After `attempts` tries the last error propagates.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except retry_on as exc:
            if attempt == attempts:
                raise
            if on_retry is not None:
                on_retry(exc)
            # The exponent is capped: 2**1100 overflows a float, and the wait is capped anyway.
            await asyncio.sleep(random.uniform(
                0, min(max_delay, base_delay * 2 ** min(attempt, 60))))
    raise AssertionError("unreachable")


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
