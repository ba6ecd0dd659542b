"""Drops persistence: the drops (their SKUs and channels as JSON), and the waiting room's
tickets, one per drop and customer, each with its place (lane and key) in the room's order.

A ticket's position is its rank in that order, counted by the database: every process asks the
same rows and gets the same answer, and a restart reorders no one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.drops import model
from instock.platform.db import UTCDateTime, dialect_insert, metadata, rows_where

PERSONAL = {"personal": True}

drops = sa.Table(
    "drops", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("skus", sa.JSON, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("starts_at", UTCDateTime, nullable=False),
    sa.Column("ends_at", UTCDateTime, nullable=True),
    sa.Column("admit_per_second", sa.Float, nullable=False),
    sa.Column("per_customer_limit", sa.Integer, nullable=True),
    sa.Column("channels", sa.JSON, nullable=False),
    sa.Column("seed", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),  # staff, never a shopper
)

drop_tickets = sa.Table(
    "drop_tickets", metadata,
    sa.Column("drop_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(128), primary_key=True, info=PERSONAL),
    sa.Column("ticket_id", sa.String(64), nullable=False),
    sa.Column("lane", sa.Integer, nullable=False),
    sa.Column("place_key", sa.String(64), nullable=False),
    sa.Column("arrived_at", UTCDateTime, nullable=False),
    # The bot scoring's verdict on the first ask (drops/bots.py): "review" holds the place
    # without admitting it; a refused shopper has no row at all.
    sa.Column("decision", sa.String(8), nullable=False, server_default="admit"),
    sa.Column("verdict", sa.JSON, nullable=True),
    # A keyed hash of the client address (never the address): shoppers sharing one are counted.
    sa.Column("client_key", sa.String(64), nullable=True, info=PERSONAL),
    sa.Column("asks", sa.Integer, nullable=False, server_default="1"),  # tickets asked for
)
# Positions are counts of the places before one: this index answers them without the rows.
# Place keys are lowercase hex (a digest, or a UUIDv7 whose dashes all stand at the same
# places), which every collation orders as Python orders them (model.Place).
sa.Index("ix_drop_tickets_place", drop_tickets.c.drop_id, drop_tickets.c.lane,
         drop_tickets.c.place_key)
sa.Index("ix_drop_tickets_client", drop_tickets.c.drop_id, drop_tickets.c.client_key)

PERSONAL_TABLES = frozenset({"drop_tickets"})


def _drop(row: Any) -> model.Drop:
    return model.Drop(row.id, tuple(row.skus), row.starts_at, model.Mode(row.mode),
                      float(row.admit_per_second), row.per_customer_limit, tuple(row.channels),
                      row.ends_at, row.seed, row.created_at, row.created_by)


async def add_drop(conn: AsyncConnection, drop: model.Drop) -> None:
    await conn.execute(drops.insert().values(
        id=drop.id, skus=list(drop.skus), mode=drop.mode.value, starts_at=drop.starts_at,
        ends_at=drop.ends_at, admit_per_second=drop.admit_per_second,
        per_customer_limit=drop.per_customer_limit, channels=list(drop.channels),
        seed=drop.seed, created_at=drop.created_at, created_by=drop.created_by))


async def get_drop(conn: AsyncConnection, drop_id: str) -> model.Drop | None:
    row = (await conn.execute(sa.select(drops).where(drops.c.id == drop_id))).first()
    return None if row is None else _drop(row)


async def live_drops(conn: AsyncConnection, now: datetime) -> list[model.Drop]:
    """Drops that still gate their SKUs (not ended): a shop runs a handful at a time."""
    rows = await conn.execute(sa.select(drops).where(
        sa.or_(drops.c.ends_at.is_(None), drops.c.ends_at > now)))
    return [_drop(row) for row in rows]


async def add_ticket(conn: AsyncConnection, drop_id: str, customer_id: str, ticket_id: str,
                     place: model.Place, at: datetime, *, decision: str = "admit",
                     verdict: dict[str, Any] | None = None,
                     client_key: str | None = None) -> None:
    """Take a place in the room, unless the customer holds one (their first place stands:
    asking again never moves anyone)."""
    await conn.execute(dialect_insert(conn, drop_tickets).on_conflict_do_nothing(), [{
        "drop_id": drop_id, "customer_id": customer_id, "ticket_id": ticket_id,
        "lane": place.lane, "place_key": place.key, "arrived_at": at, "decision": decision,
        "verdict": verdict, "client_key": client_key, "asks": 1}])


async def asked_again(conn: AsyncConnection, drop_id: str, customer_id: str) -> None:
    await conn.execute(drop_tickets.update().where(
        drop_tickets.c.drop_id == drop_id, drop_tickets.c.customer_id == customer_id,
    ).values(asks=drop_tickets.c.asks + 1))


async def asking(conn: AsyncConnection, drop_id: str, customer_id: str,
                 client_key: str | None) -> tuple[int, int, int, datetime | None]:
    """What the room knows of who is asking: (the shopper's asks, the asks from this client
    address, the other shoppers from it, the shopper's first ask) in this drop."""
    mine = (await conn.execute(sa.select(drop_tickets.c.asks, drop_tickets.c.arrived_at).where(
        drop_tickets.c.drop_id == drop_id,
        drop_tickets.c.customer_id == customer_id))).first()
    client_asks = others = 0
    if client_key is not None:
        row = (await conn.execute(sa.select(
            sa.func.coalesce(sa.func.sum(drop_tickets.c.asks), 0),
            sa.func.count().filter(drop_tickets.c.customer_id != customer_id)).where(
            drop_tickets.c.drop_id == drop_id,
            drop_tickets.c.client_key == client_key))).one()
        client_asks, others = int(row[0]), int(row[1])
    return ((mine.asks, client_asks, others, mine.arrived_at) if mine is not None
            else (0, client_asks, others, None))


async def decision_of(conn: AsyncConnection, drop_id: str,
                      customer_id: str) -> tuple[str, dict[str, Any] | None] | None:
    row = (await conn.execute(sa.select(drop_tickets.c.decision, drop_tickets.c.verdict).where(
        drop_tickets.c.drop_id == drop_id,
        drop_tickets.c.customer_id == customer_id))).first()
    return None if row is None else (row.decision, row.verdict)


async def ticket_of(conn: AsyncConnection, drop_id: str,
                    customer_id: str) -> tuple[str, model.Place] | None:
    """The customer's ticket id and place in the drop's room, if they hold one."""
    row = (await conn.execute(sa.select(drop_tickets).where(
        drop_tickets.c.drop_id == drop_id, drop_tickets.c.customer_id == customer_id))).first()
    return None if row is None else (row.ticket_id, model.Place(row.lane, row.place_key))


@dataclass(frozen=True)
class Held:
    """What a ticket holder's live stream reads of its row, once, when it connects."""

    ticket_id: str
    place: model.Place
    arrived_at: datetime
    decision: str


async def held_by(conn: AsyncConnection, drop_id: str, customer_id: str) -> Held | None:
    row = (await conn.execute(sa.select(
        drop_tickets.c.ticket_id, drop_tickets.c.lane, drop_tickets.c.place_key,
        drop_tickets.c.arrived_at, drop_tickets.c.decision).where(
        drop_tickets.c.drop_id == drop_id, drop_tickets.c.customer_id == customer_id))).first()
    return None if row is None else Held(row.ticket_id, model.Place(row.lane, row.place_key),
                                         row.arrived_at, row.decision)


async def tickets(conn: AsyncConnection, drop_id: str) -> int:
    """How many places the room holds (the index answers it)."""
    return int((await conn.execute(sa.select(sa.func.count()).select_from(drop_tickets).where(
        drop_tickets.c.drop_id == drop_id))).scalar_one())


async def early_keys(conn: AsyncConnection, drop_id: str) -> list[str]:
    """The place keys of those who came before the start, in the room's order: ranks for
    many tickets in one read (their positions are final once the drop has started)."""
    rows = await conn.execute(sa.select(drop_tickets.c.place_key).where(
        drop_tickets.c.drop_id == drop_id, drop_tickets.c.lane == model.PRE_START,
    ).order_by(drop_tickets.c.place_key))
    return [row.place_key for row in rows]


async def position(conn: AsyncConnection, drop_id: str, place: model.Place) -> int:
    """1 + how many places of the room come before this one."""
    before = (await conn.execute(sa.select(sa.func.count()).select_from(drop_tickets).where(
        drop_tickets.c.drop_id == drop_id,
        sa.or_(drop_tickets.c.lane < place.lane,
               sa.and_(drop_tickets.c.lane == place.lane,
                       drop_tickets.c.place_key < place.key))))).scalar_one()
    return int(before) + 1


async def export_customer(conn: AsyncConnection, customer_id: str) -> list[dict[str, object]]:
    return await rows_where(conn, drop_tickets.c.customer_id, customer_id)


async def pseudonymise(conn: AsyncConnection, customer_id: str, pseudonym: str) -> None:
    """The tickets stay (their places are others' positions) under the pseudonym."""
    await conn.execute(drop_tickets.update().where(drop_tickets.c.customer_id == customer_id)
                       .values(customer_id=pseudonym, client_key=None))
