"""The transactional outbox: events are written in the same transaction as the change.

Each row is a CloudEvents 1.0 envelope (DESIGN.md §3). A relay (issue 3) moves rows to the bus;
until then they wait here, so no event is lost and none exists for a rolled-back change.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform import tracing
from instock.platform.bus.envelope import DomainEvent, envelope
from instock.platform.db import (
    UTCDateTime,
    after_commit,
    insert_rows,
    metadata,
    signal,
    utcnow,
)

OUTBOX_SIGNAL = "instock_outbox"

outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("subject", sa.String(128), nullable=False, info={"personal": True}),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=True),
    sa.Column("envelope", sa.JSON, nullable=False, info={"personal": True}),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    sa.Column("published_at", UTCDateTime, nullable=True),
)
# The relay's work queue: only rows still to publish, oldest first.
sa.Index("ix_outbox_unpublished", outbox.c.created_at, outbox.c.id,
         postgresql_where=outbox.c.published_at.is_(None),
         sqlite_where=outbox.c.published_at.is_(None))


# An event to add, the correlation id of the request that caused it, and that request's W3C
# traceparent (None: the current span's, the writer's own).
Outgoing = tuple[DomainEvent, str | None, str | None]


async def add(conn: AsyncConnection, events: Iterable[DomainEvent],
              correlation_id: str | None = None) -> None:
    await add_each(conn, [(event, correlation_id, None) for event in events])


async def add_each(conn: AsyncConnection, events: Iterable[Outgoing]) -> None:
    """Add events, each with the correlation id and trace of the request that caused it."""
    rows = rows_of(events)
    if rows:
        await insert_rows(conn, outbox, rows)
        announce(conn, rows)


def rows_of(events: Iterable[Outgoing]) -> list[dict[str, Any]]:
    """The outbox rows of events, for a writer that inserts them itself (and then calls
    `announce`): inventory's one-statement stock writes."""
    rows = []
    now = utcnow()  # one transaction, one time: a batch of a drop adds thousands of events
    time = now.isoformat()
    here = tracing.current_traceparent()  # None at once when tracing is off
    for event, correlation_id, traceparent in events:
        doc = envelope(event, correlation_id, traceparent=traceparent or here, time=time)
        rows.append({"id": doc["id"], "subject": doc["subject"], "type": doc["type"],
                     "sequence": doc.get("sequence"), "envelope": doc, "created_at": now})
    return rows


def announce(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """After inserting outbox rows: wake the relay and this process's caches at commit."""
    if conn.dialect.name != "postgresql":
        # The relay wakes on commit instead of polling. On PostgreSQL the outbox's own
        # trigger sends the NOTIFY from this INSERT (migration 0012): no round trip more.
        signal(conn, OUTBOX_SIGNAL)
    # This process's read caches hear of the change at commit, before the bus carries it.
    after_commit(conn, (row["envelope"] for row in rows))


async def unpublished(conn: AsyncConnection) -> tuple[int, datetime | None]:
    """How many events wait for the relay, and when the oldest of them was written."""
    row = (await conn.execute(
        sa.select(sa.func.count(), sa.func.min(outbox.c.created_at))
        .where(outbox.c.published_at.is_(None)))).one()
    oldest = row[1]
    if isinstance(oldest, str):  # SQLite hands an aggregate back untyped
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(row[0]), oldest
