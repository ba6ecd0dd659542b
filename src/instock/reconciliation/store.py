"""Reconciliation's tables: the marks database triggers leave when stock is changed behind the
code's back, the checkpoints each level was last verified at, where each pass got to, and the
drifts found. The triggers are installed by migration 0014."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.bus.outbox import outbox
from instock.platform.db import UTCDateTime, metadata, upsert
from instock.reconciliation.model import Drift, DriftStatus

marks = sa.Table(
    "reconcile_marks", metadata,
    sa.Column("sku", sa.String(128), primary_key=True),
    sa.Column("location", sa.String(64), primary_key=True),  # "" for the SKU as a whole
    sa.Column("reason", sa.String(128), nullable=False),
    sa.Column("whole", sa.Boolean, nullable=False),  # the ledger was edited: fold it all
    sa.Column("n", sa.BigInteger, nullable=False),  # marks so far: a mark made meanwhile stays
)

checkpoints = sa.Table(
    "reconcile_checkpoints", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("location", sa.String(64), primary_key=True),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("checked_at", UTCDateTime, nullable=False),
)

cursors = sa.Table(
    "reconcile_cursors", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("position", sa.String(128), nullable=False),
)

drifts = sa.Table(
    "drifts", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("sku", sa.String(128), nullable=False),
    sa.Column("location", sa.String(64), nullable=False),
    sa.Column("expected", sa.JSON, nullable=False),
    sa.Column("actual", sa.JSON, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("units", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detected_at", UTCDateTime, nullable=False),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("decided_at", UTCDateTime, nullable=True),
    sa.Column("note", sa.String(500), nullable=True),
    sa.Index("ix_drifts_status", "status"),
)

STOCK_CHANGED = "inventory.stock_changed.v1"


async def changed_skus(conn: AsyncConnection, since: datetime | None) -> set[str]:
    """SKUs whose stock changed since `since`, as the outbox tells (every stock change writes
    its event there, in its own transaction)."""
    query = sa.select(outbox.c.subject).distinct().where(outbox.c.type == STOCK_CHANGED)
    if since is not None:
        query = query.where(outbox.c.created_at > since)
    return set((await conn.execute(query)).scalars())


async def read_marks(conn: AsyncConnection, limit: int) -> list[tuple[str, str, str, bool, int]]:
    rows = await conn.execute(sa.select(marks.c.sku, marks.c.location, marks.c.reason,
                                        marks.c.whole, marks.c.n).limit(limit))
    return [(r.sku, r.location, r.reason, bool(r.whole), int(r.n)) for r in rows]


async def clear_marks(conn: AsyncConnection, seen: Iterable[tuple[str, str, int]]) -> None:
    """Delete the marks a pass handled, unless marked again since it read them."""
    for sku, location, n in seen:
        await conn.execute(marks.delete().where(marks.c.sku == sku, marks.c.location == location,
                                                marks.c.n == n))


async def load_checkpoints(conn: AsyncConnection, skus: Iterable[str]
                           ) -> dict[tuple[str, str], dict[str, Any]]:
    rows = await conn.execute(sa.select(checkpoints).where(checkpoints.c.sku.in_(list(skus))))
    return {(r.sku, r.location): dict(r.state) for r in rows}


async def save_checkpoints(conn: AsyncConnection, states: dict[tuple[str, str], dict[str, Any]],
                           at: datetime) -> None:
    if states:
        await upsert(conn, checkpoints, [
            {"sku": sku, "location": location, "state": state, "checked_at": at}
            for (sku, location), state in states.items()], ["sku", "location"])


async def cursor(conn: AsyncConnection, name: str) -> str | None:
    return (await conn.execute(sa.select(cursors.c.position)
                               .where(cursors.c.name == name))).scalar_one_or_none()


async def move_cursor(conn: AsyncConnection, name: str, position: str) -> None:
    await upsert(conn, cursors, [{"name": name, "position": position}], ["name"])


def _drift(row: Any) -> Drift:
    return Drift(row.id, row.kind, row.sku, row.location, dict(row.expected), dict(row.actual),
                 row.detail, row.detected_at, DriftStatus(row.status), row.units,
                 row.decided_by, row.decided_at, row.note)


async def open_drifts(conn: AsyncConnection) -> list[Drift]:
    query = sa.select(drifts).where(drifts.c.status == DriftStatus.OPEN.value)
    return [_drift(r) for r in await conn.execute(query.order_by(drifts.c.detected_at))]


async def list_drifts(conn: AsyncConnection, status: DriftStatus | None, limit: int) -> list[Drift]:
    query = sa.select(drifts).order_by(drifts.c.detected_at.desc()).limit(limit)
    if status is not None:
        query = query.where(drifts.c.status == status.value)
    return [_drift(r) for r in await conn.execute(query)]


async def get_drift(conn: AsyncConnection, drift_id: str, lock: bool = False) -> Drift | None:
    query = sa.select(drifts).where(drifts.c.id == drift_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _drift(row) if row is not None else None


async def insert_drift(conn: AsyncConnection, drift: Drift) -> None:
    await conn.execute(drifts.insert().values(**_values(drift)))


async def update_drift(conn: AsyncConnection, drift: Drift) -> None:
    values = _values(drift)
    del values["id"]
    await conn.execute(drifts.update().where(drifts.c.id == drift.id).values(**values))


def _values(drift: Drift) -> dict[str, Any]:
    return {"id": drift.id, "kind": drift.kind, "sku": drift.sku, "location": drift.location,
            "expected": drift.expected, "actual": drift.actual, "detail": drift.detail[:4000],
            "units": drift.units, "status": drift.status.value,
            "detected_at": drift.detected_at, "decided_by": drift.decided_by,
            "decided_at": drift.decided_at, "note": drift.note}


async def count_open(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(drifts).where(
        drifts.c.status == DriftStatus.OPEN.value))).scalar_one())
