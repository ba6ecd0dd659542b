"""Waitlist persistence."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import UTCDateTime, metadata, rows_where, upsert
from instock.waitlist.model import Entry

waitlist = sa.Table(
    "waitlist", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("notified_at", UTCDateTime, nullable=True),
)


async def save(conn: AsyncConnection, entry: Entry) -> None:
    """Add or renew a wait (a customer told before waits again)."""
    await upsert(conn, waitlist, [{"sku": entry.sku, "customer_id": entry.customer_id,
                                   "created_at": entry.created_at, "notified_at": None}],
                 ["sku", "customer_id"])


async def delete(conn: AsyncConnection, sku: str, customer_id: str) -> bool:
    result = await conn.execute(waitlist.delete().where(waitlist.c.sku == sku,
                                                        waitlist.c.customer_id == customer_id))
    return bool(result.rowcount)


async def of_customer(conn: AsyncConnection, customer_id: str) -> list[Entry]:
    rows = await conn.execute(sa.select(waitlist).where(waitlist.c.customer_id == customer_id)
                              .order_by(waitlist.c.created_at))
    return [Entry(r.sku, r.customer_id, r.created_at, r.notified_at) for r in rows]


async def mark_notified(conn: AsyncConnection, sku: str, at: datetime) -> list[Entry]:
    """Claim every still-waiting entry of the SKU, atomically: a row claimed here cannot be
    claimed by a concurrent transaction (its WHERE is re-checked after the row lock)."""
    result = await conn.execute(
        waitlist.update().where(waitlist.c.sku == sku, waitlist.c.notified_at.is_(None))
        .values(notified_at=at)
        .returning(waitlist.c.sku, waitlist.c.customer_id, waitlist.c.created_at))
    return [Entry(r.sku, r.customer_id, r.created_at) for r in result]


PERSONAL_TABLES = frozenset({"waitlist"})


async def export_customer(conn: AsyncConnection, customer_id: str) -> list[dict[str, object]]:
    return await rows_where(conn, waitlist.c.customer_id, customer_id)


async def forget_customer(conn: AsyncConnection, customer_id: str) -> None:
    """A wait is kept for no other purpose than telling them: it goes."""
    await conn.execute(waitlist.delete().where(waitlist.c.customer_id == customer_id))
