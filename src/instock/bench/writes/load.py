"""Driving a case: closed-loop clients at saturation, or an open loop at a fixed rate, and
what their requests were told."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instock.bench.drop.measure import percentiles
from instock.bench.local import open_loop
from instock.bench.writes.plan import DRAIN_SECONDS

TICK = 0.1  # how often a phase's progress bar moves


@dataclass
class Phase:
    """One timed phase of a case. Times are time.monotonic() seconds."""

    started: float = 0.0
    finished: float = 0.0
    last_answer: float = 0.0
    answered: int = 0  # HTTP requests answered as the case expects
    latencies: list[float] = field(default_factory=list)  # of those, seconds
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the offered rate's schedule

    def answer(self, since: float) -> None:
        """A request answered as expected: its latency runs from `since` to now."""
        self.last_answer = time.monotonic()
        self.answered += 1
        self.latencies.append(self.last_answer - since)

    def fail(self, exc: Exception) -> None:
        kind = getattr(exc, "kind", type(exc).__name__)
        self.errors[kind] += 1
        self.first_error = self.first_error or f"{kind}: {exc}"[:300]

    @property
    def ms(self) -> NDArray[np.float64]:
        return np.array(self.latencies, dtype=np.float64) * 1000

    def row(self) -> dict[str, Any]:
        elapsed = max(self.finished - self.started, 1e-9)
        return {"requests": self.answered, "throughput_rps": round(self.answered / elapsed, 1),
                "elapsed_s": round(elapsed, 3), **percentiles(self.ms),
                "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
                "first_error": self.first_error, **self.extra}


# One operation of a case: `i` is its number, `due` when it was meant to start (the open
# loop's schedule; now, in a closed loop). It records its requests into the phase itself (a
# reservation then its commit are two), and raises nothing: failures go to `phase.fail`.
Operation = Callable[[int, float, Phase], Awaitable[None]]


async def saturate(operation: Operation, clients: int, seconds: float,
                   advance: Callable[[int], None], first: int = 0) -> Phase:
    """`clients` loops, each starting its next operation as its last one ends, for `seconds`:
    the most the server gives. Numbers `first`, `first + 1`, … go to the operations in the
    order they start."""
    phase = Phase()
    counter = iter(range(first, 1 << 62))
    phase.started = time.monotonic()
    deadline = phase.started + seconds

    async def client() -> None:
        while (now := time.monotonic()) < deadline:
            await operation(next(counter), now, phase)

    ticked = [0]
    ticker = asyncio.create_task(_tick(deadline, advance, ticked))
    await asyncio.gather(*(client() for _ in range(clients)))
    phase.finished = time.monotonic()  # the operations in flight at the deadline finished
    ticker.cancel()
    advance(max(0, ticks(seconds) - ticked[0]))  # the bar ends full, and stops its clock
    return phase


async def offer(operation: Operation, rate: float, seconds: float,
                advance: Callable[[int], None], first: int = 0) -> Phase:
    """Operations started at `rate` per second for `seconds` however slow earlier ones are
    (`open_loop`): latency is counted from each one's due time, so none hides."""
    phase = Phase()

    async def one(i: int, due: float) -> None:
        await operation(first + i, due, phase)

    schedule = await open_loop(rate, seconds, one, DRAIN_SECONDS, advance)
    # From the first due time to the last answer (not to the drain's end): what the server
    # answered at this rate.
    phase.started = schedule.started
    phase.finished = max(phase.last_answer, schedule.last_sent)
    phase.extra = {"offered_ops_per_s": round(rate, 1), "operations": schedule.offered,
                   "sender_late_ms": round(schedule.late_ms, 1),
                   "unfinished": schedule.unfinished}
    return phase


async def _tick(deadline: float, advance: Callable[[int], None], ticked: list[int]) -> None:
    while time.monotonic() < deadline:
        await asyncio.sleep(TICK)
        advance(1)
        ticked[0] += 1


def ticks(seconds: float) -> int:
    """A saturation phase's progress bar length."""
    return max(1, round(seconds / TICK))
