"""Driving buyers at a strategy, and turning what they were told into one row of numbers."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

Advance = Callable[[int], None]
Attempt = Callable[[int], Awaitable[str | None]]

# A buyer whose request failed (not refused: failed) waits this long before the next one in
# sustained mode, so a failing strategy cannot spin the event loop.
ERROR_PAUSE = 0.01
TICK = 0.1  # how often the sustained mode's progress bar moves
# instock's own count of writes that lost a race and were retried (platform/telemetry.py).
CONFLICTS_METRIC = "instock_version_conflicts_total"


class Strategy(Protocol):
    name: str

    async def attempt(self, buyer: int) -> str | None:
        """One reservation of one unit for `buyer`: the id confirmed to the buyer, None when
        refused as sold out. Raises when the request failed."""

    async def restock(self, units: int) -> None:
        """Receive `units` more (sustained mode, once the SKU sold out)."""

    async def settle(self) -> dict[str, Any]:
        """After the buyers: let background work finish (a write-behind); extra JSON fields."""

    async def check(self, ids: list[str]) -> Check:
        """What the system of record holds after the run."""

    def conflicts(self) -> int:
        """Retries the strategy needed: version conflicts, batches tried again."""


class ProcessDied(Exception):
    """The process answering the buyers is gone: this request and every later one fail."""


@dataclass(frozen=True)
class Check:
    found: int  # how many of the confirmed ids the system of record holds
    on_hand: int
    reserved: int


class Answer(Enum):
    CONFIRMED = "confirmed"
    REFUSED = "refused"
    FAILED = "failed"
    DIED = "died"


@dataclass
class Tally:
    """Everything the buyers were told, with times (perf_counter seconds)."""

    started: float = 0.0
    finished: float = 0.0
    deadline: float = math.inf  # sustained mode: when buyers stopped asking
    last_confirmed: float = 0.0
    last_answered: float = 0.0  # when the last buyer got an answer (confirmed or refused)
    confirmed_in_time: int = 0  # confirmations answered by the deadline
    latencies: list[float] = field(default_factory=list)  # answered ones: confirmed or refused
    ids: list[str] = field(default_factory=list)
    refused: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None

    @property
    def attempts(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


async def ask(attempt: Attempt, buyer: int, tally: Tally) -> Answer:
    """One request, timed from its start to its answer."""
    asked = time.perf_counter()
    try:
        reservation_id = await attempt(buyer)
    except Exception as exc:
        kind = getattr(exc, "kind", type(exc).__name__)
        tally.errors[kind] += 1
        tally.first_error = tally.first_error or f"{kind}: {exc}"[:300]
        return Answer.DIED if isinstance(exc, ProcessDied) else Answer.FAILED
    answered = time.perf_counter()
    tally.latencies.append(answered - asked)
    tally.last_answered = max(tally.last_answered, answered)
    if reservation_id is None:
        tally.refused += 1
        return Answer.REFUSED
    tally.ids.append(reservation_id)
    tally.last_confirmed = answered
    if answered <= tally.deadline:
        tally.confirmed_in_time += 1
    return Answer.CONFIRMED


async def drop(attempt: Attempt, buyers: int, advance: Advance) -> Tally:
    """Every buyer waits at one barrier, then makes one attempt; all at once."""
    tally = Tally()
    go = asyncio.Event()

    async def buyer(i: int) -> None:
        await go.wait()
        await ask(attempt, i, tally)
        advance(1)

    tasks = [asyncio.create_task(buyer(i)) for i in range(buyers)]
    await asyncio.sleep(0)  # each task runs up to the barrier before the clock starts
    tally.started = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    tally.finished = time.perf_counter()
    return tally


class Restocker:
    """Receives `units` more whenever a buyer finds the SKU sold out; one restock at a time.

    A refusal counts only if its request started after the last restock had landed: one that
    started before may have been decided on the stock the restock has since replaced."""

    def __init__(self, strategy: Strategy, units: int) -> None:
        self.strategy, self.units = strategy, units
        self.restocks = 0
        self.failed = 0  # restocks that raised: the next refusal tries again
        self.landed = 0.0  # perf_counter when the last restock had committed
        self.pending: asyncio.Future[None] | None = None

    async def sold_out(self, asked: float, deadline: float) -> None:
        """A buyer asking at `asked` was refused: restock if that is news, and wait for it."""
        if asked >= self.landed and self.pending is None:
            self.pending = asyncio.ensure_future(self._restock())
        if self.pending is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.pending),
                                       max(0.0, deadline - time.perf_counter()))

    async def _restock(self) -> None:
        try:
            await self.strategy.restock(self.units)
            self.restocks += 1
            self.landed = time.perf_counter()
        except Exception:
            self.failed += 1
        finally:
            self.pending = None

    async def close(self) -> None:
        if self.pending is not None:  # a restock still running when time ran out
            await asyncio.shield(self.pending)


async def sustained(strategy: Strategy, buyers: int, units: int, seconds: float,
                    advance: Advance) -> tuple[Tally, Restocker]:
    """Buyers ask again and again for `seconds`; a refused one waits for the restock its
    refusal set off."""
    tally = Tally()
    restocker = Restocker(strategy, units)
    go = asyncio.Event()

    async def buyer(i: int) -> None:
        await go.wait()
        while time.perf_counter() < tally.deadline:
            asked = time.perf_counter()
            answer = await ask(strategy.attempt, i, tally)
            if answer is Answer.REFUSED:
                await restocker.sold_out(asked, tally.deadline)
            elif answer is Answer.FAILED:
                await asyncio.sleep(ERROR_PAUSE)
            elif answer is Answer.DIED:
                return

    tasks = [asyncio.create_task(buyer(i)) for i in range(buyers)]
    await asyncio.sleep(0)
    tally.started = time.perf_counter()
    tally.deadline = tally.started + seconds
    go.set()
    ticker = asyncio.create_task(_tick(tally.deadline, advance))
    await asyncio.gather(*tasks)
    tally.finished = time.perf_counter()
    ticker.cancel()
    await restocker.close()
    return tally, restocker


async def _tick(deadline: float, advance: Advance) -> None:
    while time.perf_counter() < deadline:
        await asyncio.sleep(TICK)
        advance(1)


def ticks(seconds: float) -> int:
    """The sustained mode's progress bar length."""
    return max(1, round(seconds / TICK))


async def measure(strategy: Strategy, *, units: int, buyers: int, mode: str, seconds: float,
                  advance: Advance) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """Run the buyers, let the strategy settle, check the record: its row and latencies."""
    restocks: dict[str, int] = {}
    if mode == "drop":
        tally = await drop(strategy.attempt, buyers, advance)
    else:
        tally, restocker = await sustained(strategy, buyers, units, seconds, advance)
        restocks = {"restocks": restocker.restocks, "restocks_failed": restocker.failed}
    extras = await strategy.settle()
    check = await strategy.check(tally.ids)
    stocked = units * (1 + restocks.get("restocks", 0))
    body = row(strategy.name, tally, stocked, check, strategy.conflicts(), sustained=mode != "drop")
    return {**body, **restocks, **extras}, np.array(tally.latencies) * 1000


def row(name: str, tally: Tally, stocked: int, check: Check, conflicts: int, *,
        sustained: bool) -> dict[str, Any]:
    """The strategy's JSON row. Bad results are reported, never smoothed: `oversold` is the
    larger of units confirmed beyond stock and units the record holds reserved beyond on_hand;
    `lost` counts confirmed ids the record does not hold."""
    confirmed = len(tally.ids)
    elapsed = max(tally.finished - tally.started, 1e-9)
    if sustained:  # what was confirmed while buyers were asking, over that time
        throughput = tally.confirmed_in_time / (tally.deadline - tally.started)
    else:  # a drop is over when the last unit is confirmed (the refusals after it are cheap)
        throughput = confirmed / max(tally.last_confirmed - tally.started, 1e-9)
    ms = np.array(tally.latencies) * 1000
    return {
        "name": name, "confirmed": confirmed, "refused": tally.refused,
        "errors": sum(tally.errors.values()), "error_kinds": dict(tally.errors),
        "first_error": tally.first_error,
        "oversold": max(0, confirmed - stocked, check.reserved - check.on_hand),
        "lost": len(set(tally.ids)) - check.found,
        "duplicate_ids": confirmed - len(set(tally.ids)),
        "throughput_rps": round(throughput, 1),
        **percentiles(ms),
        "conflicts": conflicts,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(tally.attempts / elapsed, 1),
        "stocked": stocked, "db_on_hand": check.on_hand, "db_reserved": check.reserved,
        "db_excess": max(0, check.reserved - check.on_hand),
        **({"confirmed_by_deadline": tally.confirmed_in_time} if sustained else
           # A drop's promise: by when every buyer knew (no answer at all counts as never).
           {"answered_within_ms": round((tally.last_answered - tally.started) * 1000, 2)
            if tally.latencies and not tally.errors else None}),
    }


def percentiles(ms: NDArray[np.float64]) -> dict[str, float | None]:
    if not len(ms):
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}
