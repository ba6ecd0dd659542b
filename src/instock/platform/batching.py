"""Group commit: concurrent requests for the same key are decided together, in arrival order.

Each key has a FIFO queue and at most one drain task. The first request of an idle key starts
the drain at once (no waiting to fill a batch, so a quiet key pays no extra latency); every
request that arrives while a batch is in flight joins the next one. The durable cost of a batch
(one transaction, one disk flush) is shared by everyone in it, which is what lets one hot key
serve thousands of requests a second.

A lane may be shared by requests on different keys of their own (`claims`: say, the SKUs each
one writes): a batch then holds requests whose claims do not overlap, and stops, in arrival order,
at the first one that would, which starts the next batch. So no batch writes a row twice and each
request's answer is its own state, as if it had run alone.

A batch that fails as a whole is split: each of its requests is tried alone, so one request that
breaks something is answered with its own error and never takes its neighbours down with it.
No request is dropped: every caller gets its outcome or an exception.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from instock.platform import held, tracing
from instock.platform.telemetry import LANE_BATCH_SIZE
from instock.platform.tracing import SpanContext

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
T = TypeVar("T")

log = structlog.get_logger(__name__)



@dataclass
class _Waiting(Generic[R, T]):
    request: R
    answer: asyncio.Future[T]
    # The requester's span (None when tracing is off): the batch's span links to every one.
    trace: SpanContext | None = None


@dataclass
class _Lane(Generic[R, T]):
    queue: deque[_Waiting[R, T]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    largest: int = 0
    split: int = 0  # batches that failed whole and were retried one request at a time


class GroupCommit(Generic[K, R, T]):
    """`submit(key, request)` waits for the batch its request lands in and returns its outcome."""

    def __init__(self, decide: Callable[[K, Sequence[R]], Awaitable[Sequence[T | Exception]]],
                 max_batch: int = 2000, name: str = "lane",
                 claims: Callable[[R], Iterable[Hashable]] | None = None) -> None:
        # `decide` answers each request of a batch, in order: its result, or the error meant
        # for that caller alone. If it raises, the whole batch failed.
        self._decide = decide
        self._max_batch = max_batch
        self._claims = claims
        self._lanes: dict[K, _Lane[R, T]] = {}
        self.stats = BatchStats()
        self._sizes = LANE_BATCH_SIZE.labels(name)  # one series per kind of lane, not per key

    async def submit(self, key: K, request: R) -> T:
        hold = held.writing()
        if hold is not None:  # the batch's transaction could wait on what this request holds
            await hold.settle()
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        waiting = _Waiting(request, answer, tracing.current_span_context())
        lane.queue.append(waiting)
        if lane.task is None:
            lane.task = held.detached(self._drain(key, lane), name=f"group-commit:{key}")
        return await waiting.answer

    async def _drain(self, key: K, lane: _Lane[R, T]) -> None:
        try:
            while lane.queue:
                batch = self._take(lane.queue)
                if batch:
                    await self._run(key, batch)
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(key) is lane:
                del self._lanes[key]

    def _take(self, queue: deque[_Waiting[R, T]]) -> list[_Waiting[R, T]]:
        """The oldest requests still wanted (a caller that gave up is not decided for), up to
        the first whose claims overlap an earlier one's."""
        batch: list[_Waiting[R, T]] = []
        claimed: set[Hashable] = set()
        while queue and len(batch) < self._max_batch:
            waiting = queue[0]
            if waiting.answer.done():
                queue.popleft()
                continue
            if self._claims is not None:
                wanted = set(self._claims(waiting.request))
                if batch and not claimed.isdisjoint(wanted):
                    break
                claimed |= wanted
            batch.append(queue.popleft())
        return batch

    async def _run(self, key: K, batch: list[_Waiting[R, T]]) -> None:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        self._sizes.observe(len(batch))
        try:
            # Under its first request (alone, the batch is that request's own work), linked
            # to every other one it decides for.
            with tracing.span("group_commit", links=(w.trace for w in batch),
                              parent=batch[0].trace, attributes={"batch.size": len(batch)}):
                outcomes = await self._decide(key, [w.request for w in batch])
        except Exception as exc:
            if len(batch) == 1:
                _answer(batch[0], exc)
                return
            self.stats.split += 1
            log.warning("batch_failed_split", key=str(key), size=len(batch), error=repr(exc))
            for waiting in batch:
                await self._run(key, [waiting])
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            _answer(waiting, outcome)

    def __len__(self) -> int:
        """Keys with requests queued or in flight."""
        return len(self._lanes)


def _answer(waiting: _Waiting[R, T], outcome: T | Exception) -> None:
    if waiting.answer.done():  # the caller was cancelled while its batch ran
        return
    if isinstance(outcome, Exception):
        waiting.answer.set_exception(outcome)
    else:
        waiting.answer.set_result(outcome)
