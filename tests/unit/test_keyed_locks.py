"""In-process keyed locks: exclusive per key, arrival order, no deadlock, nothing left behind."""

from __future__ import annotations

import asyncio

from instock.platform.keyed_locks import KeyedLocks


async def test_one_holder_per_key_in_arrival_order_and_cleaned_up() -> None:
    locks = KeyedLocks()
    inside: set[int] = set()
    order: list[int] = []

    async def worker(i: int) -> None:
        async with locks.hold(["HOT"]):
            assert not inside, "two holders of one key at once"
            inside.add(i)
            order.append(i)
            await asyncio.sleep(0)
            inside.discard(i)

    await asyncio.gather(*(worker(i) for i in range(50)))
    assert order == list(range(50))
    assert len(locks) == 0


async def test_overlapping_key_sets_in_any_order_do_not_deadlock() -> None:
    locks = KeyedLocks()
    done: list[int] = []

    async def worker(i: int, keys: list[str]) -> None:
        async with locks.hold(keys):
            await asyncio.sleep(0)
            done.append(i)

    sets = [["A", "B"], ["B", "A"], ["C", "A"], ["B", "C", "A"]] * 10
    await asyncio.wait_for(asyncio.gather(*(worker(i, k) for i, k in enumerate(sets))), 5)
    assert len(done) == len(sets) and len(locks) == 0


async def test_different_keys_do_not_wait_for_each_other() -> None:
    locks = KeyedLocks()
    async with locks.hold(["A"]):
        await asyncio.wait_for(_enter(locks, "B"), 1)


async def _enter(locks: KeyedLocks, key: str) -> None:
    async with locks.hold([key]):
        pass
