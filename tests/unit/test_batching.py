"""Group commit and the single-flight memo, with real asyncio concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from instock.platform.batching import GroupCommit
from instock.platform.memo import Memo


class Ledger:
    """A stand-in for a transaction: records each batch, answers each request in order."""

    def __init__(self, stock: int, fail_on: set[int] | None = None) -> None:
        self.stock = stock
        self.batches: list[list[int]] = []
        self.fail_on = fail_on or set()

    async def decide(self, key: str, requests: Sequence[int]) -> list[str | Exception]:
        self.batches.append(list(requests))
        await asyncio.sleep(0.01)  # the "commit": everything arriving meanwhile queues
        if self.fail_on & set(requests):
            raise RuntimeError(f"batch with {sorted(self.fail_on & set(requests))} broke")
        answers: list[str | Exception] = []
        for n in requests:
            if self.stock > 0:
                self.stock -= 1
                answers.append(f"{key}:{n}")
            else:
                answers.append(LookupError(f"{n} sold out"))
        return answers


async def test_concurrent_requests_share_batches_and_are_decided_in_arrival_order() -> None:
    ledger = Ledger(stock=30)
    lane = GroupCommit(ledger.decide, max_batch=25)
    outcomes = await asyncio.gather(*(lane.submit("sku", n) for n in range(100)),
                                    return_exceptions=True)
    assert outcomes[:30] == [f"sku:{n}" for n in range(30)]  # the first 30 to arrive win
    assert all(isinstance(o, LookupError) for o in outcomes[30:])
    assert [n for batch in ledger.batches for n in batch] == list(range(100))
    assert max(len(b) for b in ledger.batches) == 25 and len(ledger.batches) < 10
    assert lane.stats.requests == 100 and len(lane) == 0


async def test_a_lone_request_is_decided_alone_without_waiting_for_company() -> None:
    ledger = Ledger(stock=10)
    lane = GroupCommit(ledger.decide)
    assert await lane.submit("sku", 1) == "sku:1"
    assert await lane.submit("sku", 2) == "sku:2"
    assert ledger.batches == [[1], [2]]


async def test_keys_are_independent_lanes() -> None:
    ledger = Ledger(stock=1000)
    lane = GroupCommit(ledger.decide)
    a, b = await asyncio.gather(lane.submit("a", 1), lane.submit("b", 2))
    assert (a, b) == ("a:1", "b:2")
    assert sorted(ledger.batches) == [[1], [2]]


async def test_a_failed_batch_is_retried_one_by_one_so_only_the_culprit_fails() -> None:
    ledger = Ledger(stock=1000, fail_on={7})
    lane = GroupCommit(ledger.decide)
    first = asyncio.ensure_future(lane.submit("sku", 0))  # holds the lane while the rest queue
    await asyncio.sleep(0)
    rest = await asyncio.gather(*(lane.submit("sku", n) for n in range(1, 12)),
                                return_exceptions=True)
    assert await first == "sku:0"
    assert isinstance(rest[6], RuntimeError)  # request 7, alone
    assert [o for i, o in enumerate(rest, start=1) if i != 7] == [
        f"sku:{n}" for n in range(1, 12) if n != 7]
    assert lane.stats.split == 1


async def test_a_caller_that_gave_up_is_not_decided_for() -> None:
    ledger = Ledger(stock=1000)
    lane = GroupCommit(ledger.decide)
    first = asyncio.ensure_future(lane.submit("sku", 0))
    await asyncio.sleep(0)
    quitter = asyncio.ensure_future(lane.submit("sku", 1))
    stayer = asyncio.ensure_future(lane.submit("sku", 2))
    await asyncio.sleep(0)
    quitter.cancel()
    assert await stayer == "sku:2" and await first == "sku:0"
    assert [n for batch in ledger.batches for n in batch] == [0, 2]
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_memo_loads_once_for_concurrent_misses_and_expires() -> None:
    loads: list[str] = []

    async def load(key: str) -> str:
        loads.append(key)
        await asyncio.sleep(0.01)
        return key.upper()

    memo = Memo(load, ttl_seconds=0.05)
    assert await asyncio.gather(*(memo.get("web") for _ in range(500))) == ["WEB"] * 500
    assert loads == ["web"]
    await asyncio.sleep(0.06)
    assert await memo.get("web") == "WEB" and loads == ["web", "web"]
    memo.forget("web")
    await memo.get("web")
    assert loads == ["web"] * 3


async def test_memo_shares_a_failure_and_tries_again_next_time() -> None:
    calls = 0

    async def load(key: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LookupError("down")
        return key

    memo = Memo(load, ttl_seconds=10)
    results = await asyncio.gather(memo.get("k"), memo.get("k"), return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results) and calls == 1
    assert await memo.get("k") == "k" and calls == 2


async def test_memo_without_ttl_only_shares_overlapping_loads() -> None:
    loads = 0

    async def load(key: str) -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return loads

    memo = Memo(load, ttl_seconds=0)
    assert await asyncio.gather(*(memo.get("k") for _ in range(100))) == [1] * 100
    assert await memo.get("k") == 2  # nothing kept: the next ask loads again


async def test_claims_keep_two_requests_on_one_row_out_of_one_batch() -> None:
    """Requests on one lane batch across keys of their own, but a batch stops, in arrival
    order, at the first request whose claims overlap one already in it."""
    ledger = Ledger(stock=1000)
    lane = GroupCommit(ledger.decide, claims=lambda n: {n % 3})
    outcomes = await asyncio.gather(*(lane.submit("lane", n) for n in range(9)))
    assert outcomes == [f"lane:{n}" for n in range(9)]
    # All nine queue before the lane's task first runs: each batch ends where a claim repeats.
    assert ledger.batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
