"""The channel worker: pushes marked listings to marketplaces and carries out their orders.

It wakes when a consumer commits new work (LISTEN/NOTIFY on PostgreSQL, an in-process signal on
SQLite) and at least every `poll_seconds` (work whose retry time came, other SQLite processes).
Any number may run, in API processes and as `instock worker channels`: a channel's pushes are
made by whichever worker holds its lease, one after the other at the channel's rate; an order
is carried out by the worker that claimed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from instock.channels import model
from instock.channels.service import ORDERS_SIGNAL, PUSH_SIGNAL, ChannelsService
from instock.platform.ids import new_id

log = structlog.get_logger(__name__)


class Pacer:
    """Evenly spaced pushes per channel: at most `rate_per_second` of them, in this worker
    (the lease makes it the only one pushing to that channel)."""

    def __init__(self, rate_per_second: float) -> None:
        self.rate = rate_per_second
        self._next: dict[str, float] = {}

    async def wait(self, channel_id: str) -> None:
        now = time.monotonic()
        slot = model.next_slot(self._next.get(channel_id), now, self.rate)
        self._next[channel_id] = slot
        if slot > now:
            await asyncio.sleep(slot - now)


class ChannelWorker:
    def __init__(self, channels: ChannelsService, *, rate_per_second: float,
                 poll_seconds: float = 1.0) -> None:
        self.channels = channels
        self.pacer = Pacer(rate_per_second)
        self.poll = poll_seconds
        self.owner = f"worker:{new_id()}"
        self._draining: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            await asyncio.gather(self.run_pushes(), self.run_orders())
        finally:
            for task in self._draining.values():
                task.cancel()
            for task in self._draining.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run_pushes(self) -> None:
        async for _ in self.channels.db.signals(PUSH_SIGNAL, fallback=self.poll):
            await self.push_round()

    async def push_round(self) -> None:
        """Start draining every channel that is not being drained by this worker already."""
        for connection in await self.channels.connections():
            running = self._draining.get(connection.channel_id)
            if running is None or running.done():
                self._draining[connection.channel_id] = asyncio.create_task(
                    self._drain(connection.channel_id))

    async def _drain(self, channel_id: str) -> None:
        try:
            await self.channels.push_pending(channel_id, self.owner,
                                             lambda: self.pacer.wait(channel_id))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("channel_push_round_failed", channel=channel_id)

    async def run_orders(self) -> None:
        async for _ in self.channels.db.signals(ORDERS_SIGNAL, fallback=self.poll):
            try:
                while await self.channels.process_orders():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("marketplace_orders_round_failed")
