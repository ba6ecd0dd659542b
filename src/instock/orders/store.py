"""Orders persistence: orders, carts and their holds, sagas. Nothing else.

An order's lines, history and holds are small and always read with it, so they are JSON on its
row. Every write of an order or a saga is conditional on the version it was read at: two
processes can never both move the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.orders.model import (
    Cart,
    CartItem,
    CartStatus,
    Order,
    OrderLine,
    OrderStatus,
    Saga,
    SagaKind,
    SagaStatus,
    StatusChange,
    Step,
)
from instock.platform.db import (
    Money,
    UTCDateTime,
    insert_for,
    metadata,
    prebuilt,
    rows_where,
    set_where,
)
from instock.platform.errors import VersionConflict
from instock.platform.personal import scrub_documents

orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=True, index=True),
    sa.Column("external_id", sa.String(128), nullable=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", Money, nullable=False),
    sa.Column("paid", Money, nullable=False),
    sa.Column("refunded", Money, nullable=False),
    sa.Column("payment_id", sa.String(36), nullable=True),
    sa.Column("lines", sa.JSON, nullable=False),
    sa.Column("reservation_ids", sa.JSON, nullable=False),
    sa.Column("fulfilled", sa.JSON, nullable=False),
    sa.Column("history", sa.JSON, nullable=False),
    sa.Column("refund_refs", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The caller's Idempotency-Key (hashed with the caller) of the checkout that placed it: a
    # retry finds the order instead of placing another (migration 0013).
    sa.Column("idempotency_scope", sa.String(64), nullable=True, unique=True),
    # A marketplace delivers an order more than once; it becomes one order.
    sa.UniqueConstraint("channel", "external_id", name="uq_orders_channel_external_id"),
    # The reconciler asks which orders changed since its last pass (migration 0015).
    sa.Index("ix_orders_updated_at", "updated_at"),
)

# Which order holds each reservation: the reconciler asks it of the stock's committed
# reservations, since an order keeps its reservation ids as JSON (migration 0015). Written
# when an order is placed or adopts its holds, in the same transaction.
order_reservations = sa.Table(
    "order_reservations", metadata,
    sa.Column("reservation_id", sa.String(36), primary_key=True),
    sa.Column("order_id", sa.String(36), nullable=False, index=True),
)

carts = sa.Table(
    "carts", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # open | checked_out
    sa.Column("order_id", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("touched_at", UTCDateTime, nullable=False),
)

# One hold per item added: adding never puts at risk what the cart already holds.
cart_items = sa.Table(
    "cart_items", metadata,
    sa.Column("cart_id", sa.String(36), sa.ForeignKey("carts.id"), primary_key=True),
    sa.Column("reservation_id", sa.String(36), primary_key=True),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

sagas = sa.Table(
    "sagas", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("order_id", sa.String(36), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("failure", sa.String(500), nullable=True),
    sa.Column("data", sa.JSON, nullable=False, info={"personal": True}),  # the order's terms
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    # Whoever runs a saga leases it; a process that dies loses the lease when it runs out.
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_sagas_status_next_attempt_at", "status", "next_attempt_at"),
)


# ---------------------------------------------------------------------------------------------
# Orders


def _order_row(order: Order, now: datetime) -> dict[str, Any]:
    return {
        "id": order.id, "channel": order.channel, "customer_id": order.customer_id,
        "external_id": order.external_id, "status": order.status.value,
        "currency": order.currency, "total": order.total, "paid": order.paid,
        "refunded": order.refunded, "payment_id": order.payment_id,
        "lines": [{"sku": line.sku, "quantity": line.quantity,
                   "unit_price": str(line.unit_price)} for line in order.lines],
        "reservation_ids": list(order.reservation_ids), "fulfilled": dict(order.fulfilled),
        "history": [{"status": c.status.value, "at": c.at.isoformat(), "reason": c.reason}
                    for c in order.history],
        "refund_refs": list(order.refund_refs),
        "version": order.version, "created_at": order.created_at, "updated_at": now,
    }


def _order(row: Any) -> Order:
    return Order(
        id=row.id, customer_id=row.customer_id, channel=row.channel, currency=row.currency,
        lines=[OrderLine(line["sku"], line["quantity"], Decimal(line["unit_price"]))
               for line in row.lines],
        created_at=row.created_at, external_id=row.external_id,
        reservation_ids=list(row.reservation_ids), status=OrderStatus(row.status),
        payment_id=row.payment_id, paid=row.paid, refunded=row.refunded,
        fulfilled=dict(row.fulfilled),
        history=[StatusChange(OrderStatus(c["status"]), datetime.fromisoformat(c["at"]),
                              c["reason"]) for c in row.history],
        refund_refs=list(row.refund_refs), version=row.version)


# Every checkout inserts its order, its saga and (from a cart, or once it holds its stock) the
# order's reservations: built once, the values given at execution (see `platform.db.prebuilt`).
_INSERT_ORDER = orders.insert()
_INSERT_KEYED_ORDER = prebuilt(lambda dialect: insert_for(dialect, orders)
                               .on_conflict_do_nothing().returning(orders.c.id))
_LINK = prebuilt(lambda dialect: insert_for(dialect, order_reservations)
                 .on_conflict_do_nothing())
_INSERT_SAGA = sagas.insert()


async def insert_order(conn: AsyncConnection, order: Order, now: datetime,
                       idempotency_scope: str | None = None) -> bool:
    """Insert the order; False (nothing written) if one was placed with this scope already."""
    row = {**_order_row(order, now), "idempotency_scope": idempotency_scope}
    if idempotency_scope is None:
        await conn.execute(_INSERT_ORDER, row)
    elif (await conn.execute(_INSERT_KEYED_ORDER(conn), row)).first() is None:
        return False
    await link_reservations(conn, order.id, order.reservation_ids)
    return True


async def link_reservations(conn: AsyncConnection, order_id: str,
                            reservation_ids: Sequence[str]) -> None:
    if reservation_ids:
        await conn.execute(_LINK(conn), [{"reservation_id": r, "order_id": order_id}
                                         for r in reservation_ids])


async def holders(conn: AsyncConnection, reservation_ids: Sequence[str]
                  ) -> dict[str, tuple[str, OrderStatus]]:
    """The order (id, status) holding each of these reservations, for those an order holds."""
    found: dict[str, tuple[str, OrderStatus]] = {}
    ids = list(reservation_ids)
    for start in range(0, len(ids), 1_000):  # bounded IN lists
        rows = await conn.execute(
            sa.select(order_reservations.c.reservation_id, orders.c.id, orders.c.status)
            .join(orders, orders.c.id == order_reservations.c.order_id)
            .where(order_reservations.c.reservation_id.in_(ids[start:start + 1_000])))
        found.update({r.reservation_id: (r.id, OrderStatus(r.status)) for r in rows})
    return found


async def changed_orders(conn: AsyncConnection, since: datetime | None,
                         statuses: Sequence[OrderStatus], limit: int,
                         ids: Sequence[str] = ()) -> list[tuple[str, OrderStatus, list[str]]]:
    """(id, status, reservation ids) of orders in these statuses changed since `since` (or
    among `ids`)."""
    query = (sa.select(orders.c.id, orders.c.status, orders.c.reservation_ids)
             .where(orders.c.status.in_([s.value for s in statuses]))
             .order_by(orders.c.updated_at.desc()).limit(limit))
    if since is not None:
        query = query.where(orders.c.updated_at > since)
    if ids:
        query = query.where(orders.c.id.in_(list(ids)))
    return [(r.id, OrderStatus(r.status), list(r.reservation_ids))
            for r in await conn.execute(query)]


async def order_placed_by(conn: AsyncConnection, idempotency_scope: str) -> Order | None:
    row = (await conn.execute(sa.select(orders).where(
        orders.c.idempotency_scope == idempotency_scope))).first()
    return None if row is None else _order(row)


# Every saga step reads and writes its order and saves itself: these statements are built once
# and reused (see `platform.db.prebuilt`); the values to set are given at execution.
_ORDER = sa.select(orders).where(orders.c.id == sa.bindparam("id"))
_UPDATE_ORDER = orders.update().where(orders.c.id == sa.bindparam("at_id"),
                                      orders.c.version == sa.bindparam("at_version"))
_SAVE_SAGA = sagas.update().where(sagas.c.id == sa.bindparam("at_id"),
                                  sagas.c.lease_owner == sa.bindparam("at_owner")).values(
    version=sagas.c.version + 1)
_SAGA = sa.select(sagas).where(sagas.c.id == sa.bindparam("id"))


async def update_order(conn: AsyncConnection, order: Order, version_before: int,
                       now: datetime) -> None:
    """Conditional on the version it was read at: a concurrent change makes this one fail."""
    row = _order_row(order, now)
    del row["id"], row["created_at"]
    result = await conn.execute(_UPDATE_ORDER,
                                {"at_id": order.id, "at_version": version_before, **row})
    if result.rowcount != 1:
        raise VersionConflict(f"order {order.id} changed concurrently")


async def get_order(conn: AsyncConnection, order_id: str) -> Order | None:
    row = (await conn.execute(_ORDER, {"id": order_id})).first()
    return None if row is None else _order(row)


async def order_by_external_id(conn: AsyncConnection, channel: str,
                               external_id: str) -> Order | None:
    row = (await conn.execute(sa.select(orders).where(
        orders.c.channel == channel, orders.c.external_id == external_id))).first()
    return None if row is None else _order(row)


async def list_orders(conn: AsyncConnection, customer_id: str | None, status: str | None,
                      limit: int) -> list[Order]:
    query = sa.select(orders).order_by(orders.c.id.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(orders.c.customer_id == customer_id)
    if status is not None:
        query = query.where(orders.c.status == status)
    return [_order(row) for row in await conn.execute(query)]


# ---------------------------------------------------------------------------------------------
# Carts


async def insert_cart(conn: AsyncConnection, cart_id: str, channel: str,
                      customer_id: str | None, now: datetime) -> None:
    await conn.execute(carts.insert().values(id=cart_id, channel=channel,
                                             customer_id=customer_id, status=CartStatus.OPEN,
                                             order_id=None, created_at=now, touched_at=now))


async def get_cart(conn: AsyncConnection, cart_id: str) -> Cart | None:
    row = (await conn.execute(sa.select(carts).where(carts.c.id == cart_id))).first()
    if row is None:
        return None
    items = (await conn.execute(sa.select(cart_items).where(cart_items.c.cart_id == cart_id)
                                .order_by(cart_items.c.reservation_id))).all()
    return Cart(row.id, row.channel, row.customer_id, CartStatus(row.status), row.order_id,
                [CartItem(i.reservation_id, i.sku, i.quantity, i.expires_at) for i in items])


async def add_cart_item(conn: AsyncConnection, cart_id: str, reservation_id: str, sku: str,
                        quantity: int, expires_at: datetime) -> None:
    await conn.execute(cart_items.insert().values(cart_id=cart_id, reservation_id=reservation_id,
                                                  sku=sku, quantity=quantity,
                                                  expires_at=expires_at))


async def remove_cart_items(conn: AsyncConnection, cart_id: str,
                            reservation_ids: Sequence[str]) -> None:
    await conn.execute(cart_items.delete().where(cart_items.c.cart_id == cart_id,
                                                 cart_items.c.reservation_id.in_(reservation_ids)))


async def touch_cart(conn: AsyncConnection, cart_id: str, now: datetime,
                     expiries: dict[str, datetime]) -> None:
    await conn.execute(carts.update().where(carts.c.id == cart_id).values(touched_at=now))
    for reservation_id, expires_at in expiries.items():
        await conn.execute(cart_items.update().where(
            cart_items.c.cart_id == cart_id, cart_items.c.reservation_id == reservation_id)
            .values(expires_at=expires_at))


async def check_out_cart(conn: AsyncConnection, cart_id: str, order_id: str) -> bool:
    """Close an open cart for this order; False when it was not open (checked out already)."""
    result = await conn.execute(carts.update().where(
        carts.c.id == cart_id, carts.c.status == CartStatus.OPEN).values(
            status=CartStatus.CHECKED_OUT, order_id=order_id))
    return result.rowcount == 1


# ---------------------------------------------------------------------------------------------
# Sagas


def _saga_row(saga: Saga) -> dict[str, Any]:
    return {"kind": saga.kind.value, "order_id": saga.order_id, "status": saga.status.value,
            "plan": [step.value for step in saga.plan], "attempts": saga.attempts,
            "failure": saga.failure, "data": dict(saga.data),
            "next_attempt_at": saga.next_attempt_at}


def _saga(row: Any) -> Saga:
    return Saga(id=row.id, kind=SagaKind(row.kind), order_id=row.order_id,
                plan=[Step(step) for step in row.plan], next_attempt_at=row.next_attempt_at,
                status=SagaStatus(row.status), attempts=row.attempts, failure=row.failure,
                data=dict(row.data))


async def insert_saga(conn: AsyncConnection, saga: Saga, now: datetime, owner: str | None,
                      lease_until: datetime | None) -> None:
    await conn.execute(_INSERT_SAGA, {
        "id": saga.id, **_saga_row(saga), "lease_owner": owner, "lease_until": lease_until,
        "version": 1, "created_at": now, "updated_at": now})


async def save_saga(conn: AsyncConnection, saga: Saga, owner: str, now: datetime,
                    lease_until: datetime | None) -> None:
    """Store the saga's progress, only while `owner` still holds its lease."""
    result = await conn.execute(_SAVE_SAGA, {
        "at_id": saga.id, "at_owner": owner, **_saga_row(saga),
        "lease_owner": owner if lease_until else None, "lease_until": lease_until,
        "updated_at": now})
    if result.rowcount != 1:
        raise LeaseLost(f"saga {saga.id} is no longer leased by {owner}")


class LeaseLost(Exception):
    """Another process took over the saga (this one was too slow, or thought dead)."""


async def get_saga(conn: AsyncConnection, saga_id: str) -> Saga | None:
    row = (await conn.execute(_SAGA, {"id": saga_id})).first()
    return None if row is None else _saga(row)


async def sagas_of(conn: AsyncConnection, order_id: str) -> list[Saga]:
    rows = await conn.execute(sa.select(sagas).where(sagas.c.order_id == order_id)
                              .order_by(sagas.c.created_at, sagas.c.id))
    return [_saga(row) for row in rows]


async def due_saga_ids(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Unfinished sagas whose next attempt is due and that nobody holds a live lease on."""
    rows = await conn.execute(
        sa.select(sagas.c.id).where(
            sagas.c.status.in_([SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value]),
            sagas.c.next_attempt_at <= now,
            sa.or_(sagas.c.lease_until.is_(None), sagas.c.lease_until < now))
        .order_by(sagas.c.next_attempt_at).limit(limit))
    return [row.id for row in rows]


async def claim_saga(conn: AsyncConnection, saga_id: str, owner: str, now: datetime,
                     lease_until: datetime) -> Saga | None:
    """Take the lease of a saga nobody holds (or whose holder's lease ran out)."""
    result = await conn.execute(sagas.update().where(
        sagas.c.id == saga_id,
        sagas.c.status.in_([SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value]),
        sa.or_(sagas.c.lease_until.is_(None), sagas.c.lease_until < now,
               sagas.c.lease_owner == owner))
        .values(lease_owner=owner, lease_until=lease_until, updated_at=now))
    if result.rowcount != 1:
        return None
    return await get_saga(conn, saga_id)


# ---------------------------------------------------------------------------------------------
# A customer's data (export and erasure)

PERSONAL_TABLES = frozenset({"orders", "carts", "sagas"})


async def export_customer(conn: AsyncConnection, customer_id: str) -> dict[str, Any]:
    return {"orders": await rows_where(conn, orders.c.customer_id, customer_id),
            "carts": await rows_where(conn, carts.c.customer_id, customer_id)}


async def pseudonymise_customer(conn: AsyncConnection, customer_id: str,
                                pseudonym: str) -> None:
    """Orders are financial records the law keeps (amounts, dates, lines): they stay, naming
    the pseudonym. The checkout's idempotency scope goes (it hashes the customer's name)."""
    await set_where(conn, orders.c.customer_id, customer_id, customer_id=pseudonym,
                    idempotency_scope=None)
    await set_where(conn, carts.c.customer_id, customer_id, customer_id=pseudonym)
    await scrub_documents(conn, sagas.c.data, sagas.c.id, customer_id, pseudonym)
