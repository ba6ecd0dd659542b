"""Experiments persistence: experiments, each subject's first exposure, and the conversions
attributed to exposed subjects."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.experiments.model import Experiment, Kind, Status, Unit, Variant
from instock.platform.db import UTCDateTime, insert_missing, metadata, rows_where, set_where

experiments = sa.Table(
    "experiments", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("unit", sa.String(16), nullable=False),
    sa.Column("variants", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("stopped_at", UTCDateTime, nullable=True),
)

exposures = sa.Table(
    "experiment_exposures", metadata,
    sa.Column("experiment_id", sa.String(36), primary_key=True),
    sa.Column("subject", sa.String(128), primary_key=True, info={"personal": True}),
    sa.Column("variant", sa.String(64), nullable=False),
    sa.Column("exposed_at", UTCDateTime, nullable=False),
)
# Attribution looks a shopper's exposures up across experiments by subject alone.
sa.Index("ix_experiment_exposures_subject", exposures.c.subject)

conversions = sa.Table(
    "experiment_conversions", metadata,
    sa.Column("experiment_id", sa.String(36), primary_key=True),
    sa.Column("subject", sa.String(128), primary_key=True, info={"personal": True}),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("variant", sa.String(64), nullable=False),
    sa.Column("converted_at", UTCDateTime, nullable=False),
)


# -- experiments -----------------------------------------------------------------------------


def _experiment(row: Any) -> Experiment:
    return Experiment(row.id, row.name, Status(row.status), Unit(row.unit),
                      tuple(Variant(v["name"], v["share"], v["config"]) for v in row.variants),
                      row.created_at, row.started_at, row.stopped_at)


def _row(e: Experiment) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "status": e.status.value, "unit": e.unit.value,
            "variants": [{"name": v.name, "share": v.share, "config": v.config}
                         for v in e.variants],
            "created_at": e.created_at, "started_at": e.started_at, "stopped_at": e.stopped_at}


async def insert(conn: AsyncConnection, e: Experiment) -> None:
    await conn.execute(experiments.insert().values(**_row(e)))


async def update_status(conn: AsyncConnection, e: Experiment) -> None:
    await conn.execute(experiments.update().where(experiments.c.id == e.id).values(
        status=e.status.value, started_at=e.started_at, stopped_at=e.stopped_at))


async def get(conn: AsyncConnection, experiment_id: str, lock: bool = False) -> Experiment | None:
    query = sa.select(experiments).where(experiments.c.id == experiment_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _experiment(row) if row is not None else None


async def get_many(conn: AsyncConnection,
                   experiment_ids: Collection[str]) -> dict[str, Experiment]:
    if not experiment_ids:
        return {}
    rows = await conn.execute(sa.select(experiments)
                              .where(experiments.c.id.in_(experiment_ids)))
    return {row.id: _experiment(row) for row in rows}


async def all_experiments(conn: AsyncConnection,
                          status: Status | None = None) -> list[Experiment]:
    """Newest first (ids are UUIDv7: creation order)."""
    query = sa.select(experiments).order_by(experiments.c.id.desc())
    if status is not None:
        query = query.where(experiments.c.status == status.value)
    return [_experiment(row) for row in await conn.execute(query)]


async def running(conn: AsyncConnection) -> list[Experiment]:
    """The running experiments, the one started first first."""
    query = (sa.select(experiments).where(experiments.c.status == Status.RUNNING.value)
             .order_by(experiments.c.started_at, experiments.c.id))
    return [_experiment(row) for row in await conn.execute(query)]


# -- exposures and conversions ---------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    experiment_id: str
    subject: str
    variant: str
    exposed_at: datetime


async def expose(conn: AsyncConnection, batch: Sequence[Exposure]) -> None:
    """Record exposures; a subject's first exposure to an experiment is the one kept."""
    await insert_missing(conn, exposures, [
        {"experiment_id": e.experiment_id, "subject": e.subject, "variant": e.variant,
         "exposed_at": e.exposed_at} for e in batch])


async def exposures_of(conn: AsyncConnection, subjects: Collection[str]) -> list[Exposure]:
    if not subjects:
        return []
    rows = await conn.execute(sa.select(exposures).where(exposures.c.subject.in_(subjects)))
    return [Exposure(r.experiment_id, r.subject, r.variant, r.exposed_at) for r in rows]


async def convert(conn: AsyncConnection, exposed: Sequence[Exposure], kind: Kind,
                  at: datetime) -> None:
    """Record a conversion of each exposed subject, once per (experiment, subject, kind)."""
    await insert_missing(conn, conversions, [
        {"experiment_id": e.experiment_id, "subject": e.subject, "kind": kind.value,
         "variant": e.variant, "converted_at": at} for e in exposed])


async def exposed_counts(conn: AsyncConnection, experiment_id: str) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(exposures.c.variant, sa.func.count().label("n"))
        .where(exposures.c.experiment_id == experiment_id).group_by(exposures.c.variant))
    return {r.variant: int(r.n) for r in rows}


async def converted_counts(conn: AsyncConnection,
                           experiment_id: str) -> dict[tuple[str, Kind], int]:
    rows = await conn.execute(
        sa.select(conversions.c.variant, conversions.c.kind, sa.func.count().label("n"))
        .where(conversions.c.experiment_id == experiment_id)
        .group_by(conversions.c.variant, conversions.c.kind))
    return {(r.variant, Kind(r.kind)): int(r.n) for r in rows}


# -- a customer's data (export and erasure) -----------------------------------------------------

PERSONAL_TABLES = frozenset({"experiment_exposures", "experiment_conversions"})


async def export_subject(conn: AsyncConnection, subject: str) -> dict[str, Any]:
    return {"exposures": await rows_where(conn, exposures.c.subject, subject),
            "conversions": await rows_where(conn, conversions.c.subject, subject)}


async def pseudonymise_subject(conn: AsyncConnection, subject: str, pseudonym: str) -> None:
    """Results keep counting them, as someone else."""
    await set_where(conn, exposures.c.subject, subject, subject=pseudonym)
    await set_where(conn, conversions.c.subject, subject, subject=pseudonym)
