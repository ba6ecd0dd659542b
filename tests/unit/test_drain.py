"""Stopping gracefully (platform/drain.py): live connections sent away and waited for, the
batches in hand finished before background work is cancelled, nothing new started."""

from __future__ import annotations

import asyncio

from instock.platform.drain import Drain, Duties, in_hand


async def test_live_connections_are_closed_and_waited_for() -> None:
    drain = Drain(seconds=2)
    closed: list[str] = []
    ended = asyncio.Event()

    async def stream(name: str) -> None:
        woken = asyncio.Event()
        with drain.track(woken.set):
            await woken.wait()
            await asyncio.sleep(0.05)  # its farewell takes a moment
            closed.append(name)
        ended.set()

    async def socket_close() -> None:
        closed.append("socket")

    tasks = [asyncio.create_task(stream(n)) for n in ("a", "b")]
    await asyncio.sleep(0)
    with drain.track(socket_close):
        assert drain.live == 3
        drain.begin()
        assert drain.draining and not drain.closing
        waiting = asyncio.create_task(drain.close_live(timeout=0.5))
        await asyncio.sleep(0.2)
    assert await waiting == 3
    assert sorted(closed) == ["a", "b", "socket"] and drain.live == 0 and drain.closing
    await asyncio.gather(*tasks)


def test_the_sse_farewell_says_reconnect_and_when() -> None:
    frame = Drain().sse_farewell()
    lines = frame.splitlines()
    assert lines[0].startswith("retry: ") and 250 <= int(lines[0].split()[1]) <= 2500
    assert lines[1] == "event: reconnect" and frame.endswith("\n\n")


async def test_a_batch_in_hand_is_finished_and_no_new_one_starts() -> None:
    finished, started = [], []
    go = asyncio.Event()

    async def consumer() -> None:
        n = 0
        while True:
            n += 1
            async with in_hand():
                started.append(n)
                await go.wait()
                await asyncio.sleep(0.05)
                finished.append(n)

    duties = Duties([consumer()])
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(duties.stop(grace=5))
    await asyncio.sleep(0.01)
    go.set()
    await stopping
    assert finished == [1] and started == [1]  # the first finished; the second never began
    assert all(task.done() for task in duties.tasks)


async def test_work_outside_duties_is_not_held() -> None:
    async with in_hand():  # no tracker: a no-op
        pass


async def test_a_batch_that_will_not_finish_is_cancelled_after_the_grace() -> None:
    async def stuck() -> None:
        async with in_hand():
            await asyncio.sleep(3600)

    duties = Duties([stuck()])
    await asyncio.sleep(0.01)
    await asyncio.wait_for(duties.stop(grace=0.1), timeout=2)
    assert duties.tasks[0].cancelled()
