"""Customer persistence. Personal columns hold only sealed values (privacy context) and a keyed
hash of the email for lookups: no plain email, phone or name is ever written here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import UTCDateTime, dialect_insert, metadata
from instock.platform.errors import VersionConflict

customers = sa.Table(
    "customers", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("email_enc", sa.Text, nullable=True),
    sa.Column("phone_enc", sa.Text, nullable=True),
    sa.Column("name_enc", sa.Text, nullable=True),
    sa.Column("email_hash", sa.String(64), nullable=True, index=True),
    sa.Column("sizes", sa.JSON, nullable=False),
    sa.Column("preferences", sa.JSON, nullable=False),
    sa.Column("consents", sa.JSON, nullable=False),  # purpose -> {granted, at, source}
    sa.Column("time_zone", sa.String(64), nullable=True),  # IANA name
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

PERSONAL_COLUMNS = ("email_enc", "phone_enc", "name_enc")


@dataclass(frozen=True)
class Record:
    """A row as stored: personal fields sealed, consents as JSON."""

    id: str
    email_enc: str | None
    phone_enc: str | None
    name_enc: str | None
    email_hash: str | None
    sizes: dict[str, Any]
    preferences: dict[str, Any]
    consents: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    time_zone: str | None = None


def _record(row: Any) -> Record:
    return Record(row.id, row.email_enc, row.phone_enc, row.name_enc, row.email_hash,
                  row.sizes, row.preferences, row.consents, row.version, row.created_at,
                  row.updated_at, row.time_zone)


async def get(conn: AsyncConnection, customer_id: str, *,
              for_update: bool = False) -> Record | None:
    query = sa.select(customers).where(customers.c.id == customer_id)
    if for_update:
        query = query.with_for_update()  # PostgreSQL; SQLite has one writer anyway
    row = (await conn.execute(query)).first()
    return None if row is None else _record(row)


async def by_email_hash(conn: AsyncConnection, hashes: list[str]) -> list[Record]:
    rows = await conn.execute(sa.select(customers).where(customers.c.email_hash.in_(hashes))
                              .order_by(customers.c.id))
    return [_record(r) for r in rows]


def _values(record: Record) -> dict[str, Any]:
    return {"email_enc": record.email_enc, "phone_enc": record.phone_enc,
            "name_enc": record.name_enc, "email_hash": record.email_hash,
            "sizes": record.sizes, "preferences": record.preferences,
            "consents": record.consents, "version": record.version,
            "updated_at": record.updated_at, "time_zone": record.time_zone}


async def save(conn: AsyncConnection, record: Record) -> None:
    """Insert a first version, or move version n-1 to n; VersionConflict when another
    transaction got there first (two first writes racing, on PostgreSQL)."""
    if record.version == 1:
        result = await conn.execute(
            dialect_insert(conn, customers).on_conflict_do_nothing(),
            [{"id": record.id, "created_at": record.created_at, **_values(record)}])
    else:
        result = await conn.execute(
            customers.update().where(customers.c.id == record.id,
                                     customers.c.version == record.version - 1)
            .values(**_values(record)))
    if not result.rowcount:
        raise VersionConflict(f"customer {record.id} changed meanwhile, try again")
