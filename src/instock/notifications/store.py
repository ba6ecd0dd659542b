"""Notification persistence: one row per notification, claimed by senders like an outbox.
No address is stored: the customers context is asked for it at send time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.notifications.model import Notification, Status
from instock.platform.db import UTCDateTime, dialect_insert, metadata

notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("recipient", sa.String(64), nullable=False, info={"personal": True}),
    sa.Column("customer_id", sa.String(64), nullable=True, index=True, info={"personal": True}),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("cause", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("suppression", sa.String(32), nullable=True),
    sa.Column("error", sa.String(500), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    # When a queued notification may be sent (again). A claim pushes it to the end of its
    # lease, so a sender killed mid-send gives it back when the lease runs out.
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("lease", sa.String(36), nullable=True),
    sa.Column("provider_message_id", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("recipient", "reason", "subject", "cause", "channel",
                        name="uq_notifications_key"),
    sa.Index("ix_notifications_status_due", "status", "due_at"),
    sa.Index("ix_notifications_recipient_sent", "recipient", "sent_at"),
)

PERSONAL_TABLES = frozenset({"notifications"})


def _notification(row: Any) -> Notification:
    return Notification(row.id, row.recipient, row.customer_id, row.reason, row.subject,
                        row.cause, row.channel, row.data, row.created_at, Status(row.status),
                        row.due_at, row.attempts, row.suppression, row.error,
                        row.provider_message_id, row.sent_at)


async def queue(conn: AsyncConnection, items: list[Notification]) -> None:
    """Insert the notifications whose key is new; one already there (the same event again)
    is left as it is."""
    if not items:
        return
    await conn.execute(dialect_insert(conn, notifications).on_conflict_do_nothing(), [
        {"id": n.id, "recipient": n.recipient, "customer_id": n.customer_id,
         "reason": n.reason, "subject": n.subject, "cause": n.cause, "channel": n.channel,
         "data": n.data, "status": n.status.value, "attempts": n.attempts,
         "due_at": n.due_at or n.created_at, "created_at": n.created_at} for n in items])


async def claim(conn: AsyncConnection, now: datetime, lease: str, lease_until: datetime,
                limit: int) -> list[Notification]:
    """Take up to `limit` due notifications (oldest first), counting the attempt; SKIP LOCKED
    on PostgreSQL so several senders take different rows."""
    due = [notifications.c.status == Status.QUEUED.value, notifications.c.due_at <= now]
    candidates = (sa.select(notifications.c.id).where(*due)
                  .order_by(notifications.c.due_at, notifications.c.id).limit(limit)
                  .with_for_update(skip_locked=True))
    claimed = await conn.execute(
        notifications.update().where(notifications.c.id.in_(candidates), *due)
        .values(lease=lease, due_at=lease_until, attempts=notifications.c.attempts + 1)
        .returning(notifications.c.id))
    ids = [row.id for row in claimed]
    if not ids:
        return []
    rows = await conn.execute(sa.select(notifications).where(notifications.c.id.in_(ids))
                              .order_by(notifications.c.created_at, notifications.c.id))
    return [_notification(row) for row in rows]


async def finish(conn: AsyncConnection, notification_id: str, lease: str,
                 **values: Any) -> bool:
    """Record a claim's outcome if the claim still holds (a sender slower than its lease lost
    the row to another)."""
    result = await conn.execute(notifications.update().where(
        notifications.c.id == notification_id, notifications.c.lease == lease)
        .values(lease=None, **values))
    return bool(result.rowcount)


async def sent_since(conn: AsyncConnection, recipient: str, since: datetime) -> int:
    found = await conn.execute(sa.select(sa.func.count()).select_from(notifications).where(
        notifications.c.recipient == recipient, notifications.c.sent_at >= since,
        notifications.c.status == Status.SENT.value))
    return int(found.scalar_one())


async def queued_due_by(conn: AsyncConnection, moment: datetime) -> int:
    found = await conn.execute(sa.select(sa.func.count()).select_from(notifications).where(
        notifications.c.status == Status.QUEUED.value, notifications.c.due_at <= moment))
    return int(found.scalar_one())


async def sent_times(conn: AsyncConnection) -> list[tuple[datetime, datetime]]:
    rows = await conn.execute(sa.select(notifications.c.created_at, notifications.c.sent_at)
                              .where(notifications.c.status == Status.SENT.value))
    return [(row.created_at, row.sent_at) for row in rows]


async def of_customer(conn: AsyncConnection, customer_id: str, limit: int) -> list[Notification]:
    rows = await conn.execute(sa.select(notifications)
                              .where(notifications.c.customer_id == customer_id)
                              .order_by(notifications.c.created_at.desc(),
                                        notifications.c.id.desc()).limit(limit))
    return [_notification(row) for row in rows]


async def get(conn: AsyncConnection, notification_id: str) -> Notification | None:
    row = (await conn.execute(sa.select(notifications)
                              .where(notifications.c.id == notification_id))).first()
    return None if row is None else _notification(row)


async def erase(conn: AsyncConnection, customer_id: str, pseudonym: str, now: datetime) -> None:
    """Nothing queued goes out any more; what was sent is kept for counts, under the
    pseudonym (the rows hold no contact data, only whom they were for)."""
    await conn.execute(notifications.update().where(
        notifications.c.customer_id == customer_id,
        notifications.c.status == Status.QUEUED.value)
        .values(status=Status.SUPPRESSED.value, suppression="erased", lease=None, due_at=now))
    await conn.execute(notifications.update().where(
        notifications.c.customer_id == customer_id)
        .values(customer_id=pseudonym, recipient=pseudonym))
