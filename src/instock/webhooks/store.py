"""Webhooks persistence: subscriptions, the delivery queue (which is also the delivery log) and
every attempt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import UTCDateTime, dialect_insert, metadata
from instock.platform.ids import new_id
from instock.platform.personal import documents_mentioning, scrub_documents
from instock.webhooks.model import Attempt, Delivery, Next, Status, Subscription

subscriptions = sa.Table(
    "webhook_subscriptions", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("event_types", sa.JSON, nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("subscription_id", sa.String(36), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(128), nullable=False),
    sa.Column("envelope", sa.JSON, nullable=False, info={"personal": True}),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # When a pending delivery may be attempted next. A claim pushes it to the end of its lease,
    # so a worker that dies mid-attempt gives the delivery back when the lease runs out.
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("lease", sa.String(36), nullable=True),  # the claim holding it, if any
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    # One delivery per event and subscriber, however often the bus hands the event over
    # (the fan-out's inbox already ensures it; this holds through `instock events replay` too).
    sa.UniqueConstraint("subscription_id", "event_id"),
)
# The workers' queue: only pending deliveries, soonest due first.
sa.Index("ix_webhook_deliveries_due", deliveries.c.due_at,
         postgresql_where=deliveries.c.status == "pending",
         sqlite_where=deliveries.c.status == "pending")

attempts = sa.Table(
    "webhook_attempts", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("delivery_id", sa.String(36), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
)


# -- subscriptions ---------------------------------------------------------------------------


def _subscription(row: Any) -> Subscription:
    return Subscription(row.id, row.url, tuple(row.event_types), row.secret, row.description,
                        row.active, row.created_at, row.updated_at)


def _subscription_row(s: Subscription) -> dict[str, Any]:
    return {"id": s.id, "url": s.url, "event_types": list(s.event_types), "secret": s.secret,
            "description": s.description, "active": s.active, "created_at": s.created_at,
            "updated_at": s.updated_at}


async def insert_subscription(conn: AsyncConnection, s: Subscription) -> None:
    await conn.execute(subscriptions.insert().values(**_subscription_row(s)))


async def update_subscription(conn: AsyncConnection, s: Subscription) -> None:
    row = _subscription_row(s)
    del row["id"], row["created_at"]
    await conn.execute(subscriptions.update().where(subscriptions.c.id == s.id).values(**row))


async def subscription(conn: AsyncConnection, subscription_id: str,
                       lock: bool = False) -> Subscription | None:
    query = sa.select(subscriptions).where(subscriptions.c.id == subscription_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _subscription(row) if row is not None else None


async def all_subscriptions(conn: AsyncConnection,
                            active_only: bool = False) -> list[Subscription]:
    query = sa.select(subscriptions).order_by(subscriptions.c.created_at, subscriptions.c.id)
    if active_only:
        query = query.where(subscriptions.c.active.is_(True))
    return [_subscription(row) for row in await conn.execute(query)]


async def delete_subscription(conn: AsyncConnection, subscription_id: str) -> bool:
    """Remove the subscription with its deliveries and their attempts (a claim in flight finds
    its delivery gone and changes nothing)."""
    own = sa.select(deliveries.c.id).where(deliveries.c.subscription_id == subscription_id)
    await conn.execute(attempts.delete().where(attempts.c.delivery_id.in_(own)))
    await conn.execute(deliveries.delete().where(deliveries.c.subscription_id == subscription_id))
    result = await conn.execute(subscriptions.delete()
                                .where(subscriptions.c.id == subscription_id))
    return bool(result.rowcount)


# -- the queue -------------------------------------------------------------------------------


def delivery_row(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "subscription_id": d.subscription_id, "event_id": d.event_id,
            "event_type": d.event_type, "envelope": d.envelope, "status": d.status.value,
            "attempts": d.attempts, "due_at": d.due_at, "created_at": d.created_at}


async def queue(conn: AsyncConnection, queued: Sequence[Delivery]) -> None:
    """Add deliveries; one already queued for the same event and subscription is left alone."""
    if queued:
        await conn.execute(dialect_insert(conn, deliveries).on_conflict_do_nothing(),
                           [delivery_row(d) for d in queued])


@dataclass(frozen=True)
class Claim:
    """A delivery a worker holds until `lease_until`, with where and how to send it."""

    delivery: Delivery
    lease: str
    url: str
    secret: str


async def claim(conn: AsyncConnection, now: datetime, lease: str, lease_until: datetime,
                limit: int, delivery_id: str | None = None) -> list[Claim]:
    """Take up to `limit` due deliveries of active subscriptions, counting the attempt.

    On PostgreSQL the candidates are locked with SKIP LOCKED, so concurrent workers take
    different rows instead of queueing behind each other; the UPDATE's own conditions make a
    row already taken by another worker (whose lease moved `due_at`) drop out either way. On
    SQLite a write transaction holds the whole database, so claims are serialised anyway.
    """
    active = sa.select(subscriptions.c.id).where(subscriptions.c.active.is_(True))
    due = [deliveries.c.status == Status.PENDING.value, deliveries.c.due_at <= now]
    if delivery_id is not None:
        due.append(deliveries.c.id == delivery_id)
    candidates = (sa.select(deliveries.c.id)
                  .where(*due, deliveries.c.subscription_id.in_(active))
                  .order_by(deliveries.c.due_at).limit(limit)
                  .with_for_update(skip_locked=True))
    claimed = await conn.execute(
        deliveries.update().where(deliveries.c.id.in_(candidates), *due)
        .values(lease=lease, due_at=lease_until, attempts=deliveries.c.attempts + 1)
        .returning(deliveries.c.id))
    ids = [row.id for row in claimed]
    if not ids:
        return []
    rows = await conn.execute(
        sa.select(deliveries, subscriptions.c.url, subscriptions.c.secret)
        .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
        .where(deliveries.c.id.in_(ids)).order_by(deliveries.c.due_at))
    return [Claim(_delivery(row), lease, row.url, row.secret) for row in rows]


async def finish(conn: AsyncConnection, delivery_id: str, lease: str, after: Next,
                 attempt: Attempt) -> bool:
    """Record an attempt's outcome, if the claim still holds (a worker slower than its lease
    has lost the delivery to another; its outcome is logged but decides nothing)."""
    values: dict[str, Any] = {"status": after.status.value, "lease": None,
                              "last_status_code": attempt.status_code,
                              "last_error": attempt.error}
    if after.due_at is not None:
        values["due_at"] = after.due_at
    if after.status is Status.DELIVERED:
        values["delivered_at"] = attempt.at
    result = await conn.execute(deliveries.update().where(
        deliveries.c.id == delivery_id, deliveries.c.lease == lease).values(**values))
    held = bool(result.rowcount)
    if held or await exists(conn, delivery_id):  # a deleted subscription's: nothing to log
        await conn.execute(attempts.insert().values(
            id=new_id(), delivery_id=delivery_id, number=attempt.number,
            at=attempt.at, status_code=attempt.status_code, error=attempt.error,
            duration_ms=attempt.duration_ms))
    return held


async def exists(conn: AsyncConnection, delivery_id: str) -> bool:
    found = await conn.execute(sa.select(deliveries.c.id).where(deliveries.c.id == delivery_id))
    return found.first() is not None


async def requeue(conn: AsyncConnection, delivery_id: str, now: datetime) -> bool:
    """Put a delivered or dead delivery back in the queue with its attempts reset."""
    result = await conn.execute(
        deliveries.update().where(deliveries.c.id == delivery_id,
                                  deliveries.c.status.in_([Status.DELIVERED.value,
                                                           Status.DEAD.value]))
        .values(status=Status.PENDING.value, attempts=0, due_at=now, lease=None,
                delivered_at=None))
    return bool(result.rowcount)


# -- the log ---------------------------------------------------------------------------------


def _delivery(row: Any, log: tuple[Attempt, ...] = ()) -> Delivery:
    return Delivery(row.id, row.subscription_id, row.event_id, row.event_type, row.envelope,
                    Status(row.status), row.attempts, row.due_at, row.created_at,
                    row.delivered_at, row.last_status_code, row.last_error, log)


async def delivery(conn: AsyncConnection, delivery_id: str) -> Delivery | None:
    row = (await conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)
                              )).first()
    if row is None:
        return None
    return _delivery(row, tuple((await _attempts(conn, [delivery_id])).get(delivery_id, [])))


async def deliveries_of(conn: AsyncConnection, subscription_id: str | None,
                        status: Status | None, limit: int,
                        before: str | None = None) -> list[Delivery]:
    """Newest first, each with its attempts; `before` (a delivery id) pages on; every
    subscription's when `subscription_id` is None."""
    query = sa.select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)  # UUIDv7: time
    if subscription_id is not None:
        query = query.where(deliveries.c.subscription_id == subscription_id)
    if status is not None:
        query = query.where(deliveries.c.status == status.value)
    if before is not None:
        query = query.where(deliveries.c.id < before)
    rows = list(await conn.execute(query))
    logs = await _attempts(conn, [row.id for row in rows])
    return [_delivery(row, tuple(logs.get(row.id, []))) for row in rows]


async def _attempts(conn: AsyncConnection, delivery_ids: list[str]) -> dict[str, list[Attempt]]:
    if not delivery_ids:
        return {}
    rows = await conn.execute(sa.select(attempts).where(attempts.c.delivery_id.in_(delivery_ids))
                              .order_by(attempts.c.at, attempts.c.id))
    found: dict[str, list[Attempt]] = {}
    for r in rows:
        found.setdefault(r.delivery_id, []).append(
            Attempt(r.delivery_id, r.number, r.at, r.status_code, r.error, r.duration_ms))
    return found


# -- a customer's data (export and erasure) -----------------------------------------------------

PERSONAL_TABLES = frozenset({"webhook_deliveries"})


async def export_customer(conn: AsyncConnection, customer_id: str) -> list[Any]:
    """The events naming them that went, or go, to subscribers."""
    return await documents_mentioning(conn, deliveries.c.envelope, customer_id)


async def pseudonymise_customer(conn: AsyncConnection, customer_id: str,
                                pseudonym: str) -> None:
    await scrub_documents(conn, deliveries.c.envelope, deliveries.c.id, customer_id, pseudonym)
