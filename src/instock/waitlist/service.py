"""Waitlist use cases, and the consumer that turns back-in-stock events into notices."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from instock.catalog.service import CatalogService
from instock.inventory.events import BackInStock
from instock.platform.bus import Envelope, outbox
from instock.platform.bus.consumer import ConsumerSpec
from instock.platform.db import Database, utcnow
from instock.platform.errors import NotFound
from instock.waitlist import model, store


class WaitlistService:
    def __init__(self, db: Database, catalog: CatalogService) -> None:
        self.db = db
        self.catalog = catalog

    async def join(self, sku: str, customer_id: str) -> model.Entry:
        if await self.catalog.unknown_skus({sku}):
            raise NotFound(f"SKU {sku} does not exist")
        entry = model.Entry(sku, customer_id, utcnow())
        async with self.db.write() as conn:
            await store.save(conn, entry)
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


async def on_back_in_stock(conn: AsyncConnection, envelope: Envelope) -> None:
    """Claim the waiting entries and write one notice each, in the consumer's transaction:
    together with its inbox row this makes every notice exist exactly once."""
    data = envelope["data"]
    claimed = await store.mark_notified(conn, data["sku"], utcnow())
    await outbox.add(conn, model.notices(claimed, int(data["available"]), envelope["id"]),
                     envelope.get("correlationid"))


NOTIFIER = ConsumerSpec("waitlist-notifier", frozenset({BackInStock.type}),
                        on_back_in_stock)
