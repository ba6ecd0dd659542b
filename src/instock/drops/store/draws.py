"""Draws persistence: a draw drop's entries, its one stored draw, and the claims of rights
heard from inventory (the tables are declared with the rest of the context's, in `store`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.drops import model
from instock.drops.store import drop_claims, drop_draws, drop_entries, drop_from_row, drops
from instock.platform.db import dialect_insert


@dataclass(frozen=True)
class EntryRow:
    entry_id: str
    customer_id: str
    decision: str
    verdict: dict[str, Any] | None


def _entry(row: Any) -> EntryRow:
    return EntryRow(row.entry_id, row.customer_id, row.decision, row.verdict)


async def add_entry(conn: AsyncConnection, drop_id: str, customer_id: str, entry_id: str,
                    at: datetime, *, fingerprint: str | None, decision: str,
                    verdict: dict[str, Any] | None, client_key: str | None) -> bool:
    """Enter, unless the customer (or the fingerprint) already did: the first entry stands.
    False when one did (a concurrent ask won)."""
    done = await conn.execute(dialect_insert(conn, drop_entries).on_conflict_do_nothing(), [{
        "entry_id": entry_id, "drop_id": drop_id, "customer_id": customer_id,
        "fingerprint": fingerprint, "arrived_at": at, "decision": decision,
        "verdict": verdict, "client_key": client_key, "asks": 1}])
    return done.rowcount == 1


async def entry_of(conn: AsyncConnection, drop_id: str, customer_id: str) -> EntryRow | None:
    row = (await conn.execute(sa.select(drop_entries).where(
        drop_entries.c.drop_id == drop_id, drop_entries.c.customer_id == customer_id))).first()
    return None if row is None else _entry(row)


async def fingerprint_taken(conn: AsyncConnection, drop_id: str, fingerprint: str) -> bool:
    found = await conn.execute(sa.select(drop_entries.c.entry_id).where(
        drop_entries.c.drop_id == drop_id, drop_entries.c.fingerprint == fingerprint))
    return found.first() is not None


async def get_entry(conn: AsyncConnection, drop_id: str, entry_id: str) -> EntryRow | None:
    row = (await conn.execute(sa.select(drop_entries).where(
        drop_entries.c.drop_id == drop_id, drop_entries.c.entry_id == entry_id))).first()
    return None if row is None else _entry(row)


async def eligible_entries(conn: AsyncConnection, drop_id: str) -> list[str]:
    """The ids of the entries that take part in the draw (not held for review), sorted."""
    rows = await conn.execute(sa.select(drop_entries.c.entry_id).where(
        drop_entries.c.drop_id == drop_id, drop_entries.c.decision == "admit",
    ).order_by(drop_entries.c.entry_id))
    return list(rows.scalars())


async def customers_of(conn: AsyncConnection, entry_ids: list[str]) -> dict[str, str]:
    rows = await conn.execute(sa.select(drop_entries.c.entry_id, drop_entries.c.customer_id)
                              .where(drop_entries.c.entry_id.in_(entry_ids)))
    return {row.entry_id: row.customer_id for row in rows}


async def mark_won(conn: AsyncConnection, entry_id: str, at: datetime) -> bool:
    """Note that the entrant was told of their right; False when someone already did (each
    right is announced once, whichever process gets there first)."""
    done = await conn.execute(drop_entries.update().where(
        drop_entries.c.entry_id == entry_id, drop_entries.c.won_at.is_(None)).values(won_at=at))
    return done.rowcount == 1


@dataclass(frozen=True)
class DrawRow:
    drop_id: str
    seed: str
    drawn_at: datetime
    drawn_by: str
    slots: int
    entries: list[str]
    order: list[str]


async def add_draw(conn: AsyncConnection, draw: DrawRow) -> bool:
    """Store the drop's draw; False when one is stored already (the primary key decides
    between two processes drawing at once: the second waits for the first, then yields)."""
    done = await conn.execute(dialect_insert(conn, drop_draws).on_conflict_do_nothing(), [{
        "drop_id": draw.drop_id, "seed": draw.seed, "drawn_at": draw.drawn_at,
        "drawn_by": draw.drawn_by, "slots": draw.slots, "entries": draw.entries,
        "draw_order": draw.order}])
    return done.rowcount == 1


async def get_draw(conn: AsyncConnection, drop_id: str) -> DrawRow | None:
    row = (await conn.execute(sa.select(drop_draws).where(
        drop_draws.c.drop_id == drop_id))).first()
    return None if row is None else DrawRow(row.drop_id, row.seed, row.drawn_at, row.drawn_by,
                                            row.slots, list(row.entries), list(row.draw_order))


async def drawn_live_drops(conn: AsyncConnection, now: datetime) -> list[model.Drop]:
    """The drops drawn and not over: a handful at a time, where rights are being claimed."""
    rows = await conn.execute(sa.select(drops).join(
        drop_draws, drop_draws.c.drop_id == drops.c.id).where(
        sa.or_(drops.c.ends_at.is_(None), drops.c.ends_at > now)))
    return [drop_from_row(row) for row in rows]


async def closed_undrawn_drops(conn: AsyncConnection, now: datetime) -> list[model.Drop]:
    """Draw drops whose entries have closed, with no draw stored yet, not over: due a draw."""
    rows = await conn.execute(sa.select(drops).outerjoin(
        drop_draws, drop_draws.c.drop_id == drops.c.id).where(
        drops.c.mode == model.Mode.DRAW.value, drops.c.entries_close_at <= now,
        drop_draws.c.drop_id.is_(None),
        sa.or_(drops.c.ends_at.is_(None), drops.c.ends_at > now)))
    return [drop_from_row(row) for row in rows]


async def add_claim(conn: AsyncConnection, drop_id: str, customer_id: str, at: datetime,
                    reservation_id: str) -> None:
    await conn.execute(dialect_insert(conn, drop_claims).on_conflict_do_nothing(), [{
        "drop_id": drop_id, "customer_id": customer_id, "claimed_at": at,
        "reservation_id": reservation_id}])


async def claims(conn: AsyncConnection, drop_id: str) -> dict[str, datetime]:
    """When each entrant who reserved the drop's SKUs first did, by entry id."""
    rows = await conn.execute(sa.select(drop_entries.c.entry_id, drop_claims.c.claimed_at).join(
        drop_entries, sa.and_(drop_entries.c.drop_id == drop_claims.c.drop_id,
                              drop_entries.c.customer_id == drop_claims.c.customer_id)).where(
        drop_claims.c.drop_id == drop_id))
    return {row.entry_id: row.claimed_at for row in rows}
