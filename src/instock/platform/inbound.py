"""Inbound webhooks, acknowledged at once and processed through the outbox and the bus.

A sender (a payment provider, a marketplace) retries until it gets a 2xx, so it must get one
fast, and it delivers some events twice. `receive` records the sender's event id and writes the
context's event to the outbox in one transaction: a duplicate finds the receipt and adds
nothing, and the relay publishes the event for a consumer to act on, with the bus's retries and
dead letters behind it. Checking the signature happens before, in the context's service.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.bus import outbox
from instock.platform.bus.envelope import DomainEvent
from instock.platform.db import Database, UTCDateTime, dialect_insert, metadata, utcnow

webhook_receipts = sa.Table(
    "webhook_receipts", metadata,
    sa.Column("source", sa.String(64), primary_key=True),  # "payments:sandbox", "channel:stockx"
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
)


async def record(conn: AsyncConnection, source: str, event_id: str) -> bool:
    """Add the receipt in the caller's transaction; False when it was already there."""
    inserted = await conn.execute(
        dialect_insert(conn, webhook_receipts)
        .values(source=source, event_id=event_id, received_at=utcnow())
        .on_conflict_do_nothing().returning(webhook_receipts.c.event_id))
    return inserted.first() is not None


async def receive(db: Database, source: str, event_id: str, event: DomainEvent,
                  correlation_id: str | None = None) -> bool:
    """Take one delivery: True when it is new (its event is in the outbox), False for a repeat."""
    async with db.write() as conn:
        if not await record(conn, source, event_id):
            return False
        await outbox.add(conn, [event], correlation_id)
        return True
