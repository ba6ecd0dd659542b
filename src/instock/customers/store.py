"""Customer persistence. Personal columns hold only sealed values (privacy context) and a keyed
hash of the email for lookups: no plain email, phone or name is ever written here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.customers import model
from instock.platform.db import UTCDateTime, dialect_insert, metadata, upsert
from instock.platform.errors import VersionConflict

customers = sa.Table(
    "customers", metadata,
    sa.Column("id", sa.String(64), primary_key=True, info={"personal": True}),
    sa.Column("email_enc", sa.Text, nullable=True),
    sa.Column("phone_enc", sa.Text, nullable=True),
    sa.Column("name_enc", sa.Text, nullable=True),
    sa.Column("email_hash", sa.String(64), nullable=True, index=True),
    sa.Column("sizes", sa.JSON, nullable=False, info={"personal": True}),
    sa.Column("preferences", sa.JSON, nullable=False, info={"personal": True}),
    # purpose -> {granted, at, source}
    sa.Column("consents", sa.JSON, nullable=False, info={"personal": True}),
    sa.Column("time_zone", sa.String(64), nullable=True, info={"personal": True}),  # IANA
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

PERSONAL_TABLES = frozenset({"customers", "customer_behaviour"})


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


async def erase(conn: AsyncConnection, customer_id: str, at: datetime) -> None:
    """Keep the row (the profile reads as erased) without anything of the person in it: the
    sealed values go too, though their key is already shredded, and so does the email hash."""
    await conn.execute(customers.update().where(customers.c.id == customer_id).values(
        email_enc=None, phone_enc=None, name_enc=None, email_hash=None, time_zone=None, sizes={},
        preferences={}, consents={}, updated_at=at, version=customers.c.version + 1))


async def with_email_after(conn: AsyncConnection, after: str, limit: int) -> list[Record]:
    """The next `limit` customers holding an email, by id (re-hashing walks them all)."""
    rows = await conn.execute(sa.select(customers).where(
        customers.c.id > after, customers.c.email_enc.is_not(None))
        .order_by(customers.c.id).limit(limit))
    return [_record(r) for r in rows]


async def set_email_hash(conn: AsyncConnection, customer_id: str, email_hash: str) -> None:
    await conn.execute(customers.update().where(customers.c.id == customer_id)
                       .values(email_hash=email_hash))


# -- the behaviour summary (built by the customers-behaviour consumer from events) ------------

# customers' own projection of the catalogue's product events, a row per SKU: what brand and
# category a viewed product or a bought SKU is (this context never reads catalog's tables).
customer_items = sa.Table(
    "customer_items", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("product_id", sa.String(64), nullable=False, index=True),
    sa.Column("brand", sa.String(128), nullable=False),
    sa.Column("category", sa.String(128), nullable=False),
)

customer_behaviour = sa.Table(
    "customer_behaviour", metadata,
    sa.Column("customer_id", sa.String(128), primary_key=True, info={"personal": True}),
    sa.Column("views", sa.JSON, nullable=False),
    sa.Column("purchases", sa.JSON, nullable=False),
    sa.Column("brands", sa.JSON, nullable=False),
    sa.Column("categories", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)



async def save_items(conn: AsyncConnection, product_id: str, brand: str, category: str,
                     skus: list[str]) -> None:
    await conn.execute(customer_items.delete().where(customer_items.c.product_id == product_id))
    if skus:
        await conn.execute(customer_items.insert(), [
            {"sku": sku, "product_id": product_id, "brand": brand, "category": category}
            for sku in dict.fromkeys(skus)])


async def items_by_sku(conn: AsyncConnection, skus: list[str]) -> dict[str, model.Item]:
    rows = await conn.execute(sa.select(customer_items).where(customer_items.c.sku.in_(skus)))
    return {r.sku: model.Item(r.product_id, r.brand, r.category) for r in rows}


async def items_by_product(conn: AsyncConnection, product_ids: list[str]
                           ) -> dict[str, model.Item]:
    """A product's brand and category (any of its SKUs' rows: they all say the same)."""
    rows = await conn.execute(sa.select(customer_items).where(
        customer_items.c.product_id.in_(product_ids)))
    return {r.product_id: model.Item(r.product_id, r.brand, r.category) for r in rows}


async def behaviour(conn: AsyncConnection, customer_id: str) -> model.Behaviour | None:
    return (await behaviours(conn, [customer_id])).get(customer_id)


async def behaviours(conn: AsyncConnection, customer_ids: list[str]
                     ) -> dict[str, model.Behaviour]:
    rows = await conn.execute(sa.select(customer_behaviour).where(
        customer_behaviour.c.customer_id.in_(customer_ids)))
    return {row.customer_id: model.Behaviour(
        row.customer_id, tuple(row.views), tuple(row.purchases), dict(row.brands),
        dict(row.categories), row.updated_at) for row in rows}


async def save_behaviours(conn: AsyncConnection, summaries: list[model.Behaviour]) -> None:
    """One statement, however many customers."""
    await upsert(conn, customer_behaviour, [{
        "customer_id": summary.customer_id, "views": list(summary.views),
        "purchases": list(summary.purchases), "brands": summary.brands,
        "categories": summary.categories, "updated_at": summary.updated_at}
        for summary in summaries], ["customer_id"])


async def delete_behaviour(conn: AsyncConnection, customer_id: str) -> None:
    await conn.execute(customer_behaviour.delete().where(
        customer_behaviour.c.customer_id == customer_id))
