"""Waitlist persistence."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import UTCDateTime, metadata, rows_where, upsert
from instock.waitlist.model import Entry, Wave

waitlist = sa.Table(
    "waitlist", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("notified_at", UTCDateTime, nullable=True),
)

# One row per SKU whose back-in-stock telling is in progress (model.Wave): durable, so a
# process killed between waves is followed by another that goes on where it stopped.
waves = sa.Table(
    "waitlist_waves", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("cause", sa.String(64), nullable=False),
    sa.Column("waves", sa.Integer, nullable=False),
    sa.Column("next_at", UTCDateTime, nullable=False, index=True),
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


async def mark_notified(conn: AsyncConnection, sku: str, at: datetime, limit: int) -> list[Entry]:
    """Claim the first `limit` still-waiting entries of the SKU (first subscribed first),
    atomically: a row claimed here cannot be claimed by a concurrent transaction (the UPDATE's
    WHERE is re-checked after the row lock)."""
    if limit <= 0:
        return []
    first = (sa.select(waitlist.c.customer_id)
             .where(waitlist.c.sku == sku, waitlist.c.notified_at.is_(None))
             .order_by(waitlist.c.created_at, waitlist.c.customer_id).limit(limit))
    result = await conn.execute(
        waitlist.update().where(waitlist.c.sku == sku, waitlist.c.notified_at.is_(None),
                                waitlist.c.customer_id.in_(first))
        .values(notified_at=at)
        .returning(waitlist.c.sku, waitlist.c.customer_id, waitlist.c.created_at))
    return [Entry(r.sku, r.customer_id, r.created_at) for r in result]


PERSONAL_TABLES = frozenset({"waitlist"})


async def export_customer(conn: AsyncConnection, customer_id: str) -> list[dict[str, object]]:
    return await rows_where(conn, waitlist.c.customer_id, customer_id)


async def forget_customer(conn: AsyncConnection, customer_id: str) -> None:
    """A wait is kept for no other purpose than telling them: it goes."""
    await conn.execute(waitlist.delete().where(waitlist.c.customer_id == customer_id))
async def anyone_waiting(conn: AsyncConnection, sku: str) -> bool:
    found = await conn.execute(sa.select(waitlist.c.customer_id).where(
        waitlist.c.sku == sku, waitlist.c.notified_at.is_(None)).limit(1))
    return found.first() is not None


async def wave(conn: AsyncConnection, sku: str, *, lock: bool = False) -> Wave | None:
    query = sa.select(waves).where(waves.c.sku == sku)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else Wave(row.sku, row.cause, row.waves, row.next_at)


async def due_waves(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    rows = await conn.execute(sa.select(waves.c.sku).where(waves.c.next_at <= now)
                              .order_by(waves.c.next_at).limit(limit))
    return [row.sku for row in rows]


async def save_wave(conn: AsyncConnection, sku: str, state: Wave | None) -> None:
    """Record the wave's next look, or end it (None)."""
    if state is None:
        await conn.execute(waves.delete().where(waves.c.sku == sku))
        return
    await upsert(conn, waves, [{"sku": state.sku, "cause": state.cause, "waves": state.waves,
                                "next_at": state.next_at}], ["sku"])

