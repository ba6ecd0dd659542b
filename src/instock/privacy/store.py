"""Persistence of subjects' wrapped data keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import UTCDateTime, dialect_insert, metadata
from instock.privacy.model import SubjectKey

subject_keys = sa.Table(
    "subject_keys", metadata,
    sa.Column("subject_id", sa.String(64), primary_key=True, info={"personal": True}),
    # The master key the data key is wrapped under (rotation finds the others by it); none
    # for a subject shredded before they ever had a key.
    sa.Column("kid", sa.String(64), nullable=True, index=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=True),  # NULL once shredded
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Kept after shredding, so a shredded subject never silently gets a fresh key.
    sa.Column("shredded_at", UTCDateTime, nullable=True),
    # While an erasure is under way: the pseudonym its records get, so an interrupted one
    # finishes with the same. Forgotten when it is done, and then nothing links it to them.
    sa.Column("pseudonym", sa.String(64), nullable=True),
    sa.Column("aliases", sa.JSON, nullable=True, info={"personal": True}),  # with it
    sa.Column("erased_at", UTCDateTime, nullable=True),
)


def _key(row: Any) -> SubjectKey:
    return SubjectKey(row.subject_id, row.kid, row.wrapped_key, row.created_at, row.shredded_at)


async def get(conn: AsyncConnection, subject_id: str) -> SubjectKey | None:
    row = (await conn.execute(sa.select(subject_keys)
                              .where(subject_keys.c.subject_id == subject_id))).first()
    return None if row is None else _key(row)


async def insert(conn: AsyncConnection, key: SubjectKey) -> bool:
    """Add the subject's key unless they already have one (or were shredded): False then, and
    the caller reads the one that won (two first writes for one subject may race)."""
    result = await conn.execute(dialect_insert(conn, subject_keys).on_conflict_do_nothing(), [{
        "subject_id": key.subject_id, "kid": key.kid, "wrapped_key": key.wrapped,
        "created_at": key.created_at, "shredded_at": None}])
    return bool(result.rowcount)


async def shred(conn: AsyncConnection, subject_id: str, at: datetime) -> None:
    """Destroy the wrapped key and remember that it was; a subject with no key yet gets a
    shredded row, so none is ever made for them. Shredding twice keeps the first time."""
    statement = dialect_insert(conn, subject_keys).values(
        subject_id=subject_id, kid=None, wrapped_key=None, created_at=at, shredded_at=at)
    await conn.execute(statement.on_conflict_do_update(
        index_elements=["subject_id"],
        set_={"wrapped_key": None,
              "shredded_at": sa.func.coalesce(subject_keys.c.shredded_at,
                                              statement.excluded.shredded_at)}))


async def not_under(conn: AsyncConnection, kid: str, limit: int) -> list[SubjectKey]:
    """Live keys wrapped under another master key than `kid` (rotation's work)."""
    rows = await conn.execute(
        sa.select(subject_keys)
        .where(subject_keys.c.kid != kid, subject_keys.c.wrapped_key.is_not(None))
        .order_by(subject_keys.c.subject_id).limit(limit))
    return [_key(r) for r in rows]


async def rewrap(conn: AsyncConnection, key: SubjectKey, kid: str, wrapped: bytes) -> bool:
    """Replace a wrapped key, if it is still the one read (not shredded or rewrapped since)."""
    result = await conn.execute(
        subject_keys.update()
        .where(subject_keys.c.subject_id == key.subject_id, subject_keys.c.kid == key.kid,
               subject_keys.c.wrapped_key.is_not(None))
        .values(kid=kid, wrapped_key=wrapped))
    return bool(result.rowcount)


async def begin_erasure(conn: AsyncConnection, subject_id: str, pseudonym: str,
                        aliases: list[str], at: datetime) -> tuple[str, list[str]] | None:
    """Shred the subject's key and start their erasure: the pseudonym their records get and
    the identifiers to erase (those an interrupted erasure chose, else the ones given), or None
    when it is already done."""
    await shred(conn, subject_id, at)
    row = (await conn.execute(
        sa.select(subject_keys.c.pseudonym, subject_keys.c.aliases, subject_keys.c.erased_at)
        .where(subject_keys.c.subject_id == subject_id).with_for_update())).one()
    if row.erased_at is not None:
        return None
    if row.pseudonym is not None:
        return str(row.pseudonym), list(row.aliases or ())
    await conn.execute(subject_keys.update().where(subject_keys.c.subject_id == subject_id)
                       .values(pseudonym=pseudonym, aliases=aliases))
    return pseudonym, aliases


async def finish_erasure(conn: AsyncConnection, subject_id: str, at: datetime) -> None:
    await conn.execute(subject_keys.update().where(subject_keys.c.subject_id == subject_id)
                       .values(pseudonym=None, aliases=None, erased_at=at))


async def export(conn: AsyncConnection, subject_id: str) -> dict[str, Any]:
    key = await get(conn, subject_id)
    if key is None:
        return {}
    return {"data_key": {"master_key_id": key.kid, "created_at": key.created_at.isoformat(),
                         "shredded_at": key.shredded_at and key.shredded_at.isoformat()}}
