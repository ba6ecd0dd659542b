"""Capacity persistence: a capacity drop's checkouts as heard from inventory, what they measure,
and the rate segments written from that (the tables are declared in `store`)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.drops import model
from instock.drops.model import capacity as capacity_model
from instock.drops.store import drop_checkouts, drop_from_row, drop_rate_segments, drops
from instock.platform.db import dialect_insert

THROUGH, EXPIRED = "through", "expired"


async def admitting_drops(conn: AsyncConnection, now: datetime) -> list[model.Drop]:
    """The capacity drops started and not over: the ones whose rate is measured now."""
    rows = await conn.execute(sa.select(drops).where(
        drops.c.admission == model.Admission.CAPACITY.value, drops.c.starts_at <= now,
        sa.or_(drops.c.ends_at.is_(None), drops.c.ends_at > now)))
    return [drop_from_row(row) for row in rows]


async def admitting_within(conn: AsyncConnection, earliest: datetime,
                           latest: datetime) -> list[model.Drop]:
    """The capacity drops admitting at some moment between `earliest` and `latest`: those of
    `admitting_drops` at each moment in between are among them (a consumer's one read for a
    batch of events; it picks each event's drops by `Drop.started` and `Drop.over`)."""
    rows = await conn.execute(_ADMITTING_WITHIN, {"earliest": earliest, "latest": latest})
    return [drop_from_row(row) for row in rows]


_ADMITTING_WITHIN = sa.select(drops).where(
    drops.c.admission == model.Admission.CAPACITY.value,
    drops.c.starts_at <= sa.bindparam("latest"),
    sa.or_(drops.c.ends_at.is_(None), drops.c.ends_at > sa.bindparam("earliest")))


async def began(conn: AsyncConnection, drop_id: str, reservation_id: str, at: datetime) -> None:
    """A checkout of the drop began (a reservation was created); heard twice, it is one."""
    await conn.execute(dialect_insert(conn, drop_checkouts).on_conflict_do_nothing(), [{
        "drop_id": drop_id, "reservation_id": reservation_id, "reserved_at": at}])


async def ended(conn: AsyncConnection, drop_id: str, reservation_id: str, at: datetime,
                outcome: str) -> None:
    """A checkout of the drop ended; the first end heard counts. Heard before its beginning
    (events of one reservation may cross on the bus), it begins then too."""
    insert = dialect_insert(conn, drop_checkouts)
    await conn.execute(insert.on_conflict_do_update(
        index_elements=[drop_checkouts.c.drop_id, drop_checkouts.c.reservation_id],
        set_={"ended_at": sa.func.coalesce(drop_checkouts.c.ended_at, insert.excluded.ended_at),
              "outcome": sa.func.coalesce(drop_checkouts.c.outcome, insert.excluded.outcome)},
    ), [{"drop_id": drop_id, "reservation_id": reservation_id, "reserved_at": at,
         "ended_at": at, "outcome": outcome}])


async def throughput(conn: AsyncConnection, drop_id: str, since: datetime,
                     now: datetime) -> capacity_model.Throughput:
    """The drop's checkouts since then (capacity_model.Throughput): through, and open or expired."""
    row = (await conn.execute(sa.select(
        sa.func.count().filter(drop_checkouts.c.ended_at >= since,
                               drop_checkouts.c.outcome == THROUGH),
        sa.func.count().filter(sa.or_(
            drop_checkouts.c.ended_at.is_(None),
            sa.and_(drop_checkouts.c.ended_at >= since,
                    drop_checkouts.c.outcome == EXPIRED)))).where(
        drop_checkouts.c.drop_id == drop_id))).one()
    return capacity_model.Throughput(int(row[0]), int(row[1]), (now - since).total_seconds())


async def add_segment(conn: AsyncConnection, drop_id: str, segment: model.Segment,
                      measured: capacity_model.Throughput, now: datetime) -> bool:
    """Append the drop's rate from `segment.from_at`; False when one is already there for that
    moment (another process measured the same period first: theirs stands)."""
    done = await conn.execute(dialect_insert(conn, drop_rate_segments).values(
        drop_id=drop_id, from_at=segment.from_at, rate=segment.rate, written_at=now,
        through=measured.through, open=measured.open, seconds=measured.seconds,
    ).on_conflict_do_nothing())
    return bool(done.rowcount)
