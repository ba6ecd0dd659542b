"""Payments persistence: one row per payment, found by our id, the authorisation's idempotency
key, the order, or the provider's id."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.payments.model import Payment, PaymentStatus
from instock.platform.db import Money, UTCDateTime, insert_for, metadata, prebuilt

payments = sa.Table(
    "payments", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("order_id", sa.String(64), nullable=False, index=True),
    sa.Column("provider", sa.String(16), nullable=False),
    # Known once the provider answered; webhooks name the payment by it.
    sa.Column("provider_ref", sa.String(128), nullable=True, index=True),
    # The authorisation's key: a retried authorisation finds its payment by it.
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("amount_captured", Money, nullable=False),
    sa.Column("amount_refunded", Money, nullable=False),
    sa.Column("decline_reason", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

MUTABLE = ("provider_ref", "status", "amount_captured", "amount_refunded", "decline_reason",
           "updated_at")


def _payment(row: Any) -> Payment:
    return Payment(row.id, row.order_id, row.provider, row.provider_ref, row.amount,
                   row.currency, PaymentStatus(row.status), row.amount_captured,
                   row.amount_refunded, row.decline_reason, row.updated_at, row.idempotency_key)


# Every authorisation records its payment first: built once (see `platform.db.prebuilt`).
_ADD = prebuilt(lambda dialect: insert_for(dialect, payments).on_conflict_do_nothing()
                .returning(payments.c.id))


async def add(conn: AsyncConnection, payment: Payment) -> bool:
    """Record a new payment; False (and nothing written) when its key is already taken."""
    values = {column: getattr(payment, column) for column in MUTABLE}
    inserted = await conn.execute(_ADD(conn), {
        "id": payment.id, "order_id": payment.order_id, "provider": payment.provider,
        "idempotency_key": payment.idempotency_key, "amount": payment.amount,
        "currency": payment.currency, "created_at": payment.updated_at, **values})
    return inserted.first() is not None


# A checkout's saga reads and writes its payment at several steps: built once and reused (see
# `platform.db.prebuilt`), with and without FOR UPDATE (SQLite ignores it: its writer already
# holds the database).
_UPDATE = payments.update().where(payments.c.id == sa.bindparam("at_id"))
_BY_ID = sa.select(payments).where(payments.c.id == sa.bindparam("value"))
_BY_KEY = sa.select(payments).where(payments.c.idempotency_key == sa.bindparam("value"))
_BY_ID_LOCKED = _BY_ID.with_for_update()


# The row as the caller knows it: every column a merge may change is what it was.
_UPDATE_FROM = payments.update().where(
    payments.c.id == sa.bindparam("at_id"),
    *(payments.c[column].is_not_distinct_from(sa.bindparam(f"was_{column}"))
      for column in MUTABLE))


async def update_from(conn: AsyncConnection, before: Payment, after: Payment) -> bool:
    """Write `after` if the payment's row is still `before` (compare-and-set); False (and
    nothing written) if it was changed since."""
    result = await conn.execute(_UPDATE_FROM, {
        "at_id": after.id, **{column: getattr(after, column) for column in MUTABLE},
        **{f"was_{column}": getattr(before, column) for column in MUTABLE}})
    return result.rowcount == 1


async def update(conn: AsyncConnection, payment: Payment) -> None:
    await conn.execute(_UPDATE, {"at_id": payment.id,
                                 **{column: getattr(payment, column) for column in MUTABLE}})


async def _one(conn: AsyncConnection, query: sa.Select[Any], value: str) -> Payment | None:
    row = (await conn.execute(query, {"value": value})).first()
    return _payment(row) if row is not None else None


async def get(conn: AsyncConnection, payment_id: str, *, lock: bool = False) -> Payment | None:
    return await _one(conn, _BY_ID_LOCKED if lock else _BY_ID, payment_id)


async def by_key(conn: AsyncConnection, idempotency_key: str) -> Payment | None:
    return await _one(conn, _BY_KEY, idempotency_key)


async def by_provider_ref(conn: AsyncConnection, provider: str, provider_ref: str, *,
                          lock: bool = False) -> Payment | None:
    query = sa.select(payments).where(payments.c.provider == provider,
                                      payments.c.provider_ref == sa.bindparam("value"))
    return await _one(conn, query.with_for_update() if lock else query, provider_ref)


async def of_order(conn: AsyncConnection, order_id: str) -> list[Payment]:
    rows = await conn.execute(sa.select(payments).where(payments.c.order_id == order_id)
                              .order_by(payments.c.created_at, payments.c.id))
    return [_payment(row) for row in rows]
