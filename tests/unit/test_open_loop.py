"""The benches' open-loop sender: on schedule, never slowed by answers, never early."""

from __future__ import annotations

import asyncio
import time

import uvloop

from instock.bench.local import open_loop


def test_no_request_counts_from_a_moment_after_it_was_sent() -> None:
    """uvloop's timers may end a sleep up to a millisecond early: a request started then must
    count its latency from when it really started, not from its later due time."""
    starts: list[tuple[float, float]] = []

    async def one(i: int, due: float) -> None:
        starts.append((due, time.monotonic()))

    schedule = uvloop.run(open_loop(1000, 0.5, one, drain=1.0))
    assert schedule.unfinished == 0 and len(starts) == 500
    assert all(due <= started for due, started in starts)


def test_a_slow_answer_does_not_delay_the_next_request() -> None:
    begun: list[float] = []

    async def one(i: int, due: float) -> None:
        begun.append(time.monotonic())
        await asyncio.sleep(0.2 if i == 0 else 0)

    schedule = uvloop.run(open_loop(100, 0.1, one, drain=1.0))
    assert len(begun) == 10 and begun[1] - begun[0] < 0.15  # not after the 0.2 s answer
    assert schedule.unfinished == 0
