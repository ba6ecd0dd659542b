"""What consumers remember: processed event ids, the newest sequence per subject, dead letters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.bus.base import Envelope
from instock.platform.db import (
    UTCDateTime,
    any_of,
    dialect_insert,
    metadata,
    prebuilt,
    upsert,
    utcnow,
)
from instock.platform.ids import new_id

inbox = sa.Table(
    "inbox", metadata,
    sa.Column("consumer", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False, info={"personal": True}),
    sa.Column("sequence", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("processed_at", UTCDateTime, nullable=False),
)

positions = sa.Table(
    "consumer_positions", metadata,
    sa.Column("consumer", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(128), primary_key=True, info={"personal": True}),
    sa.Column("sequence", sa.BigInteger, nullable=False),
)

dead_letters = sa.Table(
    "dead_letters", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("consumer", sa.String(64), nullable=False, index=True),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("envelope", sa.JSON, nullable=False, info={"personal": True}),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("failed_at", UTCDateTime, nullable=False),
    sa.Column("replayed_at", UTCDateTime, nullable=True),
)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    consumer: str
    event_id: str
    type: str
    envelope: Envelope
    error: str
    attempts: int
    failed_at: datetime
    replayed_at: datetime | None


async def claim(conn: AsyncConnection, consumer: str, envelope: Envelope) -> bool:
    """Record the event as being processed; False if it already was. A concurrent claim of the
    same event waits for this transaction and then finds the row: only one of them proceeds."""
    result = await conn.execute(dialect_insert(conn, inbox).on_conflict_do_nothing(), [{
        "consumer": consumer, "event_id": envelope["id"], "type": envelope["type"],
        "subject": envelope.get("subject", ""), "sequence": envelope.get("sequence"),
        "outcome": "applied", "processed_at": utcnow()}])
    return bool(result.rowcount)


async def claim_many(conn: AsyncConnection, consumer: str,
                     envelopes: Sequence[Envelope]) -> set[str]:
    """`claim` for a batch in one statement: the ids of the events this call claimed."""
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for envelope in envelopes:  # an event delivered twice in one batch is one row
        rows.setdefault(str(envelope["id"]), {
            "consumer": consumer, "event_id": envelope["id"], "type": envelope["type"],
            "subject": envelope.get("subject", ""), "sequence": envelope.get("sequence"),
            "outcome": "applied", "processed_at": now})
    if not rows:
        return set()
    result = await conn.execute(dialect_insert(conn, inbox).on_conflict_do_nothing()
                                .returning(inbox.c.event_id), list(rows.values()))
    return {str(row.event_id) for row in result}


def ordering_key(envelope: Envelope) -> str:
    """What sequences are compared within: the aggregate, named by its event family and
    subject (`inventory:HOOD-M`), since a product id may equal a SKU."""
    return f"{str(envelope['type']).split('.', 1)[0]}:{envelope['subject']}"


async def position(conn: AsyncConnection, consumer: str, envelope: Envelope) -> int | None:
    """The newest sequence applied for the event's aggregate, locked until the transaction
    ends so that events of one aggregate are applied one after the other."""
    query = sa.select(positions.c.sequence).where(
        positions.c.consumer == consumer,
        positions.c.subject == ordering_key(envelope)).with_for_update()
    return (await conn.execute(query)).scalar_one_or_none()


async def positions_of(conn: AsyncConnection, consumer: str,
                       keys: Iterable[str]) -> dict[str, int]:
    """`position` of many aggregates (by `ordering_key`), locked in key order (no deadlock
    with another member of the group locking some of the same)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await conn.execute(_POSITIONS(conn), {"consumer": consumer, "subjects": wanted})
    return {row.subject: row.sequence for row in rows}


# Every consumer batch reads its positions: built once (see `platform.db.prebuilt`).
_POSITIONS = prebuilt(lambda dialect: sa.select(positions.c.subject, positions.c.sequence)
                      .where(positions.c.consumer == sa.bindparam("consumer"),
                             any_of(dialect, positions.c.subject, "subjects"))
                      .order_by(positions.c.subject).with_for_update())


async def advance_many(conn: AsyncConnection, consumer: str, newest: dict[str, int]) -> None:
    """Set the newest applied sequence of each aggregate (by `ordering_key`)."""
    await upsert(conn, positions, [{"consumer": consumer, "subject": key, "sequence": sequence}
                                   for key, sequence in sorted(newest.items())],
                 ["consumer", "subject"])


async def mark_stale_many(conn: AsyncConnection, consumer: str, event_ids: list[str]) -> None:
    if event_ids:
        await conn.execute(inbox.update().where(inbox.c.consumer == consumer,
                                                inbox.c.event_id.in_(event_ids))
                           .values(outcome="stale"))


async def advance(conn: AsyncConnection, consumer: str, envelope: Envelope) -> None:
    await upsert(conn, positions, [{"consumer": consumer, "subject": ordering_key(envelope),
                                    "sequence": envelope["sequence"]}], ["consumer", "subject"])


async def mark_stale(conn: AsyncConnection, consumer: str, envelope: Envelope) -> None:
    await conn.execute(inbox.update().where(inbox.c.consumer == consumer,
                                            inbox.c.event_id == envelope["id"])
                       .values(outcome="stale"))


async def forget_since(conn: AsyncConnection, consumer: str, since: datetime) -> None:
    """Make a consumer process again what it processed from `since` on (a replay)."""
    await conn.execute(inbox.delete().where(inbox.c.consumer == consumer,
                                            inbox.c.processed_at >= since))
    await conn.execute(positions.delete().where(positions.c.consumer == consumer))


async def bury(conn: AsyncConnection, consumer: str, envelope: Envelope, error: str,
               attempts: int) -> None:
    await conn.execute(dead_letters.insert().values(
        id=new_id(), consumer=consumer, event_id=str(envelope.get("id", "")),
        type=str(envelope.get("type", "")), envelope=envelope, error=error[:2000],
        attempts=attempts, failed_at=utcnow()))


async def list_dead(conn: AsyncConnection, consumer: str | None = None,
                    include_replayed: bool = False, limit: int = 100) -> list[DeadLetter]:
    query = sa.select(dead_letters).order_by(dead_letters.c.failed_at).limit(limit)
    if consumer:
        query = query.where(dead_letters.c.consumer == consumer)
    if not include_replayed:
        query = query.where(dead_letters.c.replayed_at.is_(None))
    return [_dead(row._mapping) for row in await conn.execute(query)]


async def mark_replayed(conn: AsyncConnection, letter_id: str) -> None:
    await conn.execute(dead_letters.update().where(dead_letters.c.id == letter_id)
                       .values(replayed_at=utcnow()))


def _dead(row: Any) -> DeadLetter:
    return DeadLetter(**{c: row[c] for c in DeadLetter.__dataclass_fields__})


async def dead_counts(conn: AsyncConnection) -> dict[str, int]:
    """Dead letters not replayed, by consumer."""
    rows = await conn.execute(
        sa.select(dead_letters.c.consumer, sa.func.count())
        .where(dead_letters.c.replayed_at.is_(None)).group_by(dead_letters.c.consumer))
    return {consumer: int(count) for consumer, count in rows.all()}
