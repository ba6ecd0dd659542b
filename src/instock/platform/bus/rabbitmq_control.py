"""The consumer groups' control stream read once per bus (per process), each record handed to
the members of its group (rabbitmq_groups.py says what the records are).

Why one reader and not one per member: the broker sends every record to every subscription. A
process runs some twenty groups; with a subscription per member, two processes made forty,
each taking every record of every group (and giving credit back for each), and those
deliveries crowded out the events' own: twenty groups of two members handled 3,000 of 6,000
deliveries in 30 s, against all of them in under 5 s with the groups' records apart. Here a
process takes each record once.

The feed keeps the records of the last `window` (the broker's timestamps) so that a member that
joins later folds the same recent history as one that was there. If the subscription breaks,
it is made again from the start of the window, and the `epoch` changes: members then rebuild
their views from the records kept for the new epoch, as after their own reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Protocol

from rstream.constants import OffsetType

from instock.platform.bus.common import BusClosed, Lifetime
from instock.platform.bus.rabbitmq_leases import Record
from instock.platform.bus.rabbitmq_link import TRANSIENT, Link, Lost, messages

CREDIT = 16  # chunks of the control stream on their way


class Listener(Protocol):
    group: str

    def hear(self, ts: int, record: Record) -> None: ...

    def wake(self) -> None: ...


class ControlFeed:
    def __init__(self, link: Link, life: Lifetime, control: str) -> None:
        self._link, self._life, self._control = link, life, control
        self.window_ms = 0
        self.epoch = 0  # one per subscription made: a member's view belongs to one
        self.ready = asyncio.Event()  # subscribed, for the current epoch
        self._kept: deque[tuple[int, Record]] = deque()
        self._listeners: dict[str, set[Listener]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def ready_for(self, window_ms: int) -> None:
        """Until the feed reads the control stream (from `window_ms` back, or further)."""
        self.window_ms = max(self.window_ms, window_ms)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await self.ready.wait()

    def join(self, listener: Listener) -> list[tuple[int, Record]]:
        """Hear the group's records from now on; the ones kept of it so far (for the epoch
        the feed is in: call once `ready_for` returned)."""
        self._listeners.setdefault(listener.group, set()).add(listener)
        return [(ts, r) for ts, r in self._kept if r.group == listener.group]

    def leave(self, listener: Listener) -> None:
        self._listeners.get(listener.group, set()).discard(listener)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        # _read returns only by an error: a broker restart or a cut reads the window again,
        # with the bus's one retry loop, as the members' own subscriptions do.
        with contextlib.suppress(BusClosed):
            await self._life.persist(self._read, retry_on=TRANSIENT, what="group control stream")

    async def _read(self) -> None:
        self.ready.clear()
        window = self.window_ms
        sub = await self._link.subscribe(self._control, OffsetType.TIMESTAMP,
                                         int(time.time() * 1000) - window, credit=CREDIT,
                                         wake=self._wake)
        self.epoch += 1
        self._kept.clear()
        self.ready.set()
        for listeners in self._listeners.values():  # their views are of the last epoch
            for listener in list(listeners):
                listener.wake()
        try:
            while True:
                self._wake.clear()
                while (frame := await sub.take()) is not None:
                    for _, body in messages(frame):
                        if (record := Record.decode(body)) is None:
                            continue
                        self._kept.append((frame.timestamp, record))
                        for listener in list(self._listeners.get(record.group, ())):
                            listener.hear(frame.timestamp, record)
                    while self._kept and self._kept[0][0] < frame.timestamp - self.window_ms:
                        self._kept.popleft()
                if sub.lost:
                    raise Lost("the control stream's subscription ended")
                await self._life.run(self._wake.wait())
        finally:
            self.ready.clear()
            await self._link.unsubscribe(sub)
