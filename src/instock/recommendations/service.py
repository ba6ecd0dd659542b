"""Recommendation use cases that run against the live system (offline evaluation: evaluate.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.bus import Envelope
from instock.platform.bus.consumer import ConsumerSpec
from instock.platform.db import utcnow
from instock.recommendations import store


async def on_stock_changed(conn: AsyncConnection, envelope: Envelope) -> None:
    """Keep the in-stock projection: the consumer framework already drops older sequences."""
    data = envelope["data"]
    await store.save_availability(conn, data["sku"], int(data["sku_version"]),
                                  int(data["totals"]["available"]), utcnow())


AVAILABILITY = ConsumerSpec("recs-availability", frozenset({"inventory.stock_changed.v1"}),
                            on_stock_changed)
