"""Recommendation tables: behaviour events, sessions merged into customers, and projections of
the catalogue and of stock (this context never reads catalog's or inventory's tables)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import (
    UTCDateTime,
    insert_missing,
    insert_rows,
    metadata,
    rows_where,
    set_where,
    upsert,
)

# A projection of inventory.stock_changed events: recommendations filter on it so no list shows
# a sold-out item.
item_availability = sa.Table(
    "item_availability", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("available", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# A projection of product.* events: what content similarity and the list rules need.
rec_items = sa.Table(
    "rec_items", metadata,
    sa.Column("product_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("brand", sa.String(128), nullable=False),
    sa.Column("category", sa.String(128), nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("price", sa.Float, nullable=False),  # only a price band is derived from it
    sa.Column("replenishable", sa.Boolean, nullable=False),
    sa.Column("variants", sa.JSON, nullable=False),  # [{"sku", "attributes", "bundle"}]
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

behaviour_events = sa.Table(
    "behaviour_events", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=True),
    sa.Column("customer_id", sa.String(128), nullable=True),
    sa.Column("product_id", sa.String(64), nullable=True),
    sa.Column("sku", sa.String(64), nullable=True),
    sa.Column("query", sa.Text, nullable=True, info={"personal": True}),  # what they typed
    sa.Column("attribute", sa.String(64), nullable=True),
    sa.Column("value", sa.String(128), nullable=True),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
)
sa.Index("ix_behaviour_events_customer", behaviour_events.c.customer_id,
         behaviour_events.c.occurred_at)
sa.Index("ix_behaviour_events_session", behaviour_events.c.session_id,
         behaviour_events.c.occurred_at)
sa.Index("ix_behaviour_events_occurred_at", behaviour_events.c.occurred_at)

# A session that logged in belongs to its customer from then on.
rec_sessions = sa.Table(
    "rec_sessions", metadata,
    sa.Column("session_id", sa.String(128), primary_key=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("merged_at", UTCDateTime, nullable=False),
)


async def save_availability(conn: AsyncConnection, states: Mapping[str, tuple[int, int]],
                            at: datetime) -> None:
    """SKU -> (version, available), in one statement."""
    await upsert(conn, item_availability, [
        {"sku": sku, "version": version, "available": available, "updated_at": at}
        for sku, (version, available) in states.items()], ["sku"])


async def availability(conn: AsyncConnection, skus: list[str] | None = None
                       ) -> dict[str, tuple[int, int]]:
    """SKU -> (version, available) for the SKUs the projection knows (all when skus is None)."""
    query = sa.select(item_availability)
    if skus is not None:
        query = query.where(item_availability.c.sku.in_(skus))
    return {row.sku: (row.version, row.available) for row in await conn.execute(query)}


async def save_items(conn: AsyncConnection, items: Sequence[dict[str, Any]]) -> None:
    """Upsert rows of `rec_items` (a product event's state, or a bulk load)."""
    if items:
        await upsert(conn, rec_items, list(items), ["product_id"])


async def items(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(rec_items).order_by(rec_items.c.product_id))
    return [dict(row) for row in rows.mappings()]


async def add_behaviour(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await insert_rows(conn, behaviour_events, list(rows))


async def stated_by(conn: AsyncConnection, customer_id: str) -> set[tuple[str, str]]:
    """The (attribute, value) preference answers a customer gave, ever."""
    events = behaviour_events.c
    rows = await conn.execute(sa.select(events.attribute, events.value).where(
        events.customer_id == customer_id, events.kind == "preference").distinct())
    return {(row.attribute, row.value) for row in rows}


def _history_query(column: sa.Column[Any]) -> sa.CompoundSelect[Any]:
    """A shopper's latest `limit` events, and latest `answers` preference answers (which may be
    older), in one statement; built once, as it runs on a list's first ask (building and
    keying a union per call costs more than running it)."""
    events = behaviour_events.c
    newest = (events.occurred_at.desc(), events.id.desc())
    # what a shopper's memory keeps: no column more than needed
    mine = sa.select(events.id, events.kind, events.product_id, events.query, events.attribute,
                     events.value, events.occurred_at).where(column == sa.bindparam("shopper"))
    latest = mine.order_by(*newest).limit(sa.bindparam("limit")).subquery()
    told = mine.where(events.kind == "preference").order_by(*newest).limit(
        sa.bindparam("answers")).subquery()
    return sa.union_all(sa.select(latest), sa.select(told))


_HISTORY = {"customer": _history_query(behaviour_events.c.customer_id),
            "session": _history_query(behaviour_events.c.session_id)}


async def history(conn: AsyncConnection, *, customer_id: str | None = None,
                  session_id: str | None = None, limit: int = 50,
                  answers: int = 20) -> list[dict[str, Any]]:
    """The shopper's latest events and preference answers, each once, oldest first."""
    query = _HISTORY["customer" if customer_id else "session"]
    rows = await conn.execute(query, {"shopper": customer_id or session_id, "limit": limit,
                                      "answers": answers})
    unique = {row["id"]: dict(row) for row in rows.mappings()}
    return sorted(unique.values(), key=lambda row: (row["occurred_at"], row["id"]))


async def actions_of(conn: AsyncConnection, shoppers: Sequence[str], kinds: Sequence[str],
                     since: datetime) -> list[dict[str, Any]]:
    """Events of those kinds by shoppers with those session or customer ids, at or after
    `since`, oldest first."""
    if not shoppers:
        return []
    e = behaviour_events
    rows = await conn.execute(sa.select(e).where(
        sa.or_(e.c.session_id.in_(shoppers), e.c.customer_id.in_(shoppers)),
        e.c.kind.in_(kinds), e.c.occurred_at >= since).order_by(e.c.occurred_at))
    return [dict(row) for row in rows.mappings()]


async def item_actions_since(conn: AsyncConnection, kinds: Sequence[str], since: datetime
                             ) -> AsyncIterator[tuple[str, str, datetime]]:
    """(sku, kind, when) of every event of those kinds on a known SKU from `since`, streamed
    (a year of views does not fit in memory at once)."""
    e = behaviour_events
    result = await conn.stream(sa.select(e.c.sku, e.c.kind, e.c.occurred_at).where(
        e.c.kind.in_(kinds), e.c.sku.is_not(None), e.c.occurred_at >= since))
    async for row in result:
        yield row.sku, row.kind, row.occurred_at


async def recent_behaviour(conn: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` of the newest events, oldest first: the fit's history."""
    rows = await conn.execute(sa.select(behaviour_events)
                              .order_by(behaviour_events.c.occurred_at.desc()).limit(limit))
    return [dict(row) for row in reversed(rows.mappings().all())]


async def merge_session(conn: AsyncConnection, session_id: str, customer_id: str,
                        at: datetime) -> bool:
    """Give the session's history to the customer; False when it was merged already."""
    fresh = await customer_of(conn, session_id) is None
    await insert_missing(conn, rec_sessions, [
        {"session_id": session_id, "customer_id": customer_id, "merged_at": at}])
    await conn.execute(sa.update(behaviour_events).where(
        behaviour_events.c.session_id == session_id,
        behaviour_events.c.customer_id.is_(None)).values(customer_id=customer_id))
    return fresh


async def customer_of(conn: AsyncConnection, session_id: str) -> str | None:
    return (await conn.execute(sa.select(rec_sessions.c.customer_id).where(
        rec_sessions.c.session_id == session_id))).scalar_one_or_none()


async def merges_since(conn: AsyncConnection, since: datetime) -> list[tuple[str, str]]:
    """(session, customer) of the logins since `since`, oldest first."""
    rows = await conn.execute(sa.select(rec_sessions.c.session_id, rec_sessions.c.customer_id)
                              .where(rec_sessions.c.merged_at >= since)
                              .order_by(rec_sessions.c.merged_at))
    return [(row.session_id, row.customer_id) for row in rows]


# -- a customer's data (export and erasure) -----------------------------------------------------

PERSONAL_TABLES = frozenset({"behaviour_events", "rec_sessions"})


async def export_customer(conn: AsyncConnection, customer_id: str) -> dict[str, Any]:
    sessions = await rows_where(conn, rec_sessions.c.customer_id, customer_id)
    events = await rows_where(conn, behaviour_events.c.customer_id, customer_id)
    known = {e["id"] for e in events}
    for session in sessions:  # what they did before logging in
        events += [e for e in await rows_where(conn, behaviour_events.c.session_id,
                                               session["session_id"]) if e["id"] not in known]
    return {"sessions": sessions, "behaviour": sorted(events, key=lambda e: e["occurred_at"])}


async def pseudonymise_customer(conn: AsyncConnection, customer_id: str,
                                pseudonym: str) -> None:
    """Behaviour stays (it trains the models), under the pseudonym: the customer's id and the
    ids of the sessions merged into it are replaced, the merges forgotten, and what they typed
    into search (free text, which may name them) dropped."""
    for session in await sessions_of(conn, customer_id):
        await set_where(conn, behaviour_events.c.session_id, session, session_id=pseudonym)
    await conn.execute(rec_sessions.delete().where(rec_sessions.c.customer_id == customer_id))
    await set_where(conn, behaviour_events.c.customer_id, customer_id, customer_id=pseudonym)
    await set_where(conn, behaviour_events.c.customer_id, pseudonym, query=None)
    await set_where(conn, behaviour_events.c.session_id, pseudonym, query=None)


async def sessions_of(conn: AsyncConnection, customer_id: str) -> list[str]:
    rows = await rows_where(conn, rec_sessions.c.customer_id, customer_id)
    return [row["session_id"] for row in rows]
