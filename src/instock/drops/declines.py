"""Failed payment attempts, heard from checkout, for the bot scoring (drops/bots.py).

The orders context says when a checkout's payment was declined (`order.payment_failed.v1`,
written with the saga's failure); the `drops-payments` consumer keeps one row per such
checkout in a drops table, at the time orders wrote it, and the scoring counts the shopper's
rows within `bots.FAILED_PAYMENTS_WINDOW`. Drops never reads orders' or payments' tables: a
failure heard late (consumer lag) counts from when it happened, and until it is heard it does
not count at all.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from instock.drops import bots, store
from instock.platform.bus import Envelope
from instock.platform.bus.consumer import ConsumerSpec

PAYMENT_FAILED = "order.payment_failed.v1"


async def on_payment_failed(conn: AsyncConnection, envelope: Envelope) -> None:
    data = envelope["data"]
    customer = data.get("customer_id")
    if not customer:  # a guest's checkout: no shopper to score
        return
    at = datetime.fromisoformat(str(envelope["time"]))
    await store.add_payment_failure(conn, str(data["order_id"]), str(customer), at,
                                    prune_before=at - bots.FAILED_PAYMENTS_WINDOW)


async def failed_payments(conn: AsyncConnection, customer_id: str, now: datetime) -> int:
    """The shopper's failed payment attempts that count now."""
    return await store.payment_failures(conn, customer_id, now - bots.FAILED_PAYMENTS_WINDOW)


# Unordered: each failure is news of its own (its subject is the order that failed).
PAYMENT_FAILURES = ConsumerSpec(
    "drops-payments", frozenset({PAYMENT_FAILED}), on_payment_failed, ordered=False,
    wants=lambda e: bool((e.get("data") or {}).get("customer_id")))
