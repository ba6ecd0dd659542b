"""Recommendation tables: what is in stock, as last told by inventory events."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import UTCDateTime, metadata, upsert

# A projection of inventory.stock_changed events (this context never reads inventory's tables):
# recommendations filter on it so no list shows a sold-out item.
item_availability = sa.Table(
    "item_availability", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("available", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


async def save_availability(conn: AsyncConnection, sku: str, version: int, available: int,
                            at: datetime) -> None:
    await upsert(conn, item_availability, [{"sku": sku, "version": version,
                                            "available": available, "updated_at": at}], ["sku"])


async def availability(conn: AsyncConnection, skus: list[str]) -> dict[str, tuple[int, int]]:
    """SKU -> (version, available) for the SKUs the projection knows."""
    rows = await conn.execute(sa.select(item_availability).where(
        item_availability.c.sku.in_(skus)))
    return {row.sku: (row.version, row.available) for row in rows}
