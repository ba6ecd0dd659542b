"""Persistence of the catalog (SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.catalog.model import Product, Variant
from instock.platform.db import Money, UTCDateTime, any_of, metadata, prebuilt
from instock.platform.errors import VersionConflict

products = sa.Table(
    "products", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("brand", sa.String(120), nullable=False),
    sa.Column("category", sa.String(120), nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("price", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("replenishable", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # One more per change (the ETag and the sequence of product events); rows from before
    # versions existed start at 1.
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
)

variants = sa.Table(
    "variants", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("product_id", sa.String(64), sa.ForeignKey("products.id"), nullable=False,
              index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
)

bundle_components = sa.Table(
    "bundle_components", metadata,
    sa.Column("bundle_sku", sa.String(64), sa.ForeignKey("variants.sku"), primary_key=True),
    sa.Column("component_sku", sa.String(64), sa.ForeignKey("variants.sku"), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
)


async def product_exists(conn: AsyncConnection, product_id: str) -> bool:
    found = await conn.scalar(sa.select(products.c.id).where(products.c.id == product_id))
    return found is not None


async def existing_skus(conn: AsyncConnection, skus: Iterable[str]) -> set[str]:
    rows = await conn.execute(sa.select(variants.c.sku).where(variants.c.sku.in_(list(skus))))
    return {row.sku for row in rows}


# Every checkout prices its lines: built once, the SKUs given at execution (see
# `platform.db.prebuilt`).
_PRICES = prebuilt(lambda dialect: sa.select(variants.c.sku, products.c.price,
                                             products.c.currency)
                   .join(products, products.c.id == variants.c.product_id)
                   .where(any_of(dialect, variants.c.sku, "skus")))


async def prices(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, tuple[Decimal, str]]:
    """Each SKU's price and currency (its product's)."""
    rows = await conn.execute(_PRICES(conn), {"skus": list(skus)})
    return {row.sku: (row.price, row.currency) for row in rows}


async def recipes(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, dict[str, int]]:
    """Bundle sku -> component sku -> quantity, for those of `skus` that are bundles."""
    rows = await conn.execute(sa.select(bundle_components).where(
        bundle_components.c.bundle_sku.in_(list(skus))))
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row.bundle_sku, {})[row.component_sku] = row.quantity
    return out


async def bundles_by_component(conn: AsyncConnection) -> dict[str, frozenset[str]]:
    """Every component SKU -> the bundles it is part of."""
    out: dict[str, set[str]] = {}
    for row in await conn.execute(sa.select(bundle_components.c.component_sku,
                                            bundle_components.c.bundle_sku)):
        out.setdefault(row.component_sku, set()).add(row.bundle_sku)
    return {sku: frozenset(bundles) for sku, bundles in out.items()}


async def insert_product(conn: AsyncConnection, product: Product, now: datetime) -> None:
    await conn.execute(products.insert().values(
        id=product.id, title=product.title, brand=product.brand, category=product.category,
        tags=product.tags, attributes=product.attributes, price=product.price,
        currency=product.currency, replenishable=product.replenishable, created_at=now,
        version=product.version))
    await conn.execute(variants.insert(), [
        {"sku": v.sku, "product_id": product.id, "position": i, "attributes": v.attributes}
        for i, v in enumerate(product.variants)])
    components = [{"bundle_sku": v.sku, "component_sku": c, "quantity": q}
                  for v in product.variants for c, q in v.components.items()]
    if components:
        await conn.execute(bundle_components.insert(), components)


async def update_product(conn: AsyncConnection, product: Product, version_before: int) -> None:
    """Write the product-level fields, compare-and-swap on the version they were read at."""
    result = await conn.execute(products.update().where(
        products.c.id == product.id, products.c.version == version_before).values(
        title=product.title, brand=product.brand, category=product.category, tags=product.tags,
        attributes=product.attributes, price=product.price, currency=product.currency,
        replenishable=product.replenishable, version=product.version))
    if result.rowcount != 1:
        raise VersionConflict(f"product {product.id} changed concurrently")


async def get_product(conn: AsyncConnection, product_id: str, *,
                      lock: bool = False) -> Product | None:
    """The product; `lock` locks its row until the transaction ends (SQLAlchemy leaves the
    `FOR UPDATE` out on SQLite, whose write transaction already excludes every other writer)."""
    query = sa.select(products).where(products.c.id == product_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    variant_rows = (await conn.execute(sa.select(variants).where(
        variants.c.product_id == product_id).order_by(variants.c.position))).all()
    kits = await recipes(conn, [v.sku for v in variant_rows])
    return Product(
        id=row.id, title=row.title, brand=row.brand, category=row.category, price=row.price,
        currency=row.currency, tags=list(row.tags), attributes=dict(row.attributes),
        replenishable=row.replenishable, version=row.version,
        variants=[Variant(v.sku, dict(v.attributes), kits.get(v.sku, {})) for v in variant_rows])


async def get_products(conn: AsyncConnection, product_ids: Iterable[str]
                       ) -> dict[str, tuple[Product, list[str]]]:
    """Many products in one statement however many there are (a page of a storefront), each
    with its variants' SKUs in order; the variants' bundle recipes are the caller's to add
    (the service keeps them: they never change)."""
    rows = (await conn.execute(
        sa.select(products, variants.c.sku, variants.c.attributes.label("variant_attributes"))
        .join(variants, variants.c.product_id == products.c.id, isouter=True)
        .where(products.c.id.in_(list(product_ids)))
        .order_by(products.c.id, variants.c.position))).all()
    found: dict[str, tuple[Product, list[str]]] = {}
    for row in rows:
        if row.id not in found:
            found[row.id] = (Product(
                id=row.id, title=row.title, brand=row.brand, category=row.category,
                price=row.price, currency=row.currency, tags=list(row.tags),
                attributes=dict(row.attributes), replenishable=row.replenishable,
                version=row.version), [])
        if row.sku is not None:
            found[row.id][0].variants.append(Variant(row.sku, dict(row.variant_attributes)))
            found[row.id][1].append(row.sku)
    return found


async def list_products(conn: AsyncConnection, limit: int, after: str | None,
                        brand: str | None = None, category: str | None = None) -> list[str]:
    query = sa.select(products.c.id).order_by(products.c.id).limit(limit)
    if after:
        query = query.where(products.c.id > after)
    if brand:
        query = query.where(products.c.brand == brand)
    if category:
        query = query.where(products.c.category == category)
    return [row.id for row in await conn.execute(query)]
