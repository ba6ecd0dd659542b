"""Waitlist use cases, and back-in-stock telling in waves: the consumer of
`inventory.back_in_stock.v1` sends the first wave, a worker the next ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.catalog.service import CatalogService
from instock.inventory.events import BackInStock
from instock.inventory.service import InventoryService
from instock.platform.bus import Envelope, outbox
from instock.platform.bus.consumer import ConsumerSpec
from instock.platform.db import Database, utcnow
from instock.platform.errors import NotFound
from instock.platform.retry import keep_running
from instock.waitlist import model, store
from instock.waitlist.events import WaitlistJoined

log = structlog.get_logger(__name__)
DUE_WAVES_PER_ROUND = 100


@dataclass(frozen=True)
class WaveSettings:
    factor: int = 2  # k: a wave tells at most k x available customers
    interval: float = 60.0  # seconds between waves of one SKU

    @property
    def poll(self) -> float:
        """How often the worker looks for due waves: often enough to keep the interval."""
        return max(0.05, min(1.0, self.interval / 4))


class WaitlistService:
    def __init__(self, db: Database, catalog: CatalogService,
                 inventory: InventoryService | None = None,
                 waves: WaveSettings | None = None) -> None:
        self.db = db
        self.catalog = catalog
        self.inventory = inventory
        self.waves = waves or WaveSettings()

    async def join(self, sku: str, customer_id: str) -> model.Entry:
        if await self.catalog.unknown_skus({sku}):
            raise NotFound(f"SKU {sku} does not exist")
        entry = model.Entry(sku, customer_id, utcnow())
        async with self.db.write() as conn:
            await store.save(conn, entry)
            await outbox.add(conn, [WaitlistJoined(sku=sku, joined_at=entry.created_at)])
        return entry

    async def leave(self, sku: str, customer_id: str) -> None:
        async with self.db.write() as conn:
            if not await store.delete(conn, sku, customer_id):
                raise NotFound(f"{customer_id} is not waiting for {sku}")

    async def of_customer(self, customer_id: str) -> list[model.Entry]:
        async with self.db.read() as conn:
            return await store.of_customer(conn, customer_id)

    async def export_subject(self, customer_id: str) -> dict[str, object]:
        async with self.db.read() as conn:
            return {"waits": await store.export_customer(conn, customer_id)}

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        async with self.db.write() as conn:
            await store.forget_customer(conn, customer_id)

    # -- waves ------------------------------------------------------------------------------

    def notifier(self) -> ConsumerSpec:
        """The consumer that starts a wave when a SKU is back in stock."""
        return ConsumerSpec("waitlist-notifier", frozenset({BackInStock.type}),
                            self.on_back_in_stock)

    async def on_back_in_stock(self, conn: AsyncConnection, envelope: Envelope) -> None:
        """The first wave, sized to the units the event says are back, in the consumer's
        transaction: with its inbox row, every notice exists exactly once. A restock while a
        wave runs starts it over from this event (the units are news)."""
        data = envelope["data"]
        # one wave writer per SKU at a time
        running = await store.wave(conn, data["sku"], lock=True)
        if running is None and not await store.anyone_waiting(conn, data["sku"]):
            return  # no wave to start over and nobody to tell: two reads, no writes
        await self._wave(conn, data["sku"], str(envelope["id"]), 0, int(data["available"]),
                         envelope.get("correlationid"))

    async def _wave(self, conn: AsyncConnection, sku: str, cause: str, waves_before: int,
                    available: int, correlation_id: str | None) -> int:
        now = utcnow()
        claimed = model.in_line(await store.mark_notified(
            conn, sku, now, model.wave_size(available, self.waves.factor)))
        await outbox.add(conn, model.notices(claimed, available, cause), correlation_id)
        state = model.after_wave(sku, cause, waves_before, len(claimed),
                                 await store.anyone_waiting(conn, sku), now,
                                 timedelta(seconds=self.waves.interval))
        await store.save_wave(conn, sku, state)
        if claimed or waves_before:  # a restock nobody waited for is not news
            log.info("back_in_stock_wave", sku=sku, cause=cause, wave=waves_before + 1,
                     available=available, told=len(claimed), more=state is not None)
        return len(claimed)

    async def run_waves(self) -> None:
        """Send the next waves as they come due, forever (several processes may run it: each
        SKU's wave row is locked by whoever sends its wave)."""
        await keep_running(self.next_waves, "back_in_stock_waves", pause=self.waves.poll)

    async def next_waves(self) -> int:
        """One round: each due wave re-checks the SKU's stock and tells k x available more
        (none when it sold out again: the wave ends). How many customers were told."""
        assert self.inventory is not None, "waves need the inventory service"
        async with self.db.read() as conn:
            due = await store.due_waves(conn, utcnow(), DUE_WAVES_PER_ROUND)
        told = 0
        for sku in due:
            try:
                available = (await self.inventory.stock(sku)).available
            except NotFound:
                available = 0  # the SKU is gone: nothing to tell anyone
            async with self.db.write() as conn:
                current = await store.wave(conn, sku, lock=True)
                if current is None or current.next_at > utcnow():
                    continue  # another process sent it, or a restock started it over
                told += await self._wave(conn, sku, current.cause, current.waves, available,
                                         None)
        return told
