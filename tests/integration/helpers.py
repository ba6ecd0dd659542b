"""Building blocks for integration tests: catalogue, locations and stock through the services."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from instock.app import Container
from instock.catalog.model import Product, Variant
from instock.inventory.model import Adjustment, AdjustmentKind
from instock.platform.db import Database
from instock.platform.entry_context import EntryContext
from instock.platform.errors import AlreadyExists

CTX = EntryContext(actor="test", reason="test")


async def add_product(c: Container, product_id: str, skus: list[str],
                      bundles: dict[str, dict[str, int]] | None = None) -> None:
    variants = [Variant(sku) for sku in skus]
    variants += [Variant(sku, {}, parts) for sku, parts in (bundles or {}).items()]
    await c.catalog.create_product(Product(
        id=product_id, title=product_id, brand="b", category="c", price=Decimal("10"),
        currency="EUR", variants=variants))


async def add_location(c: Container, location: str) -> None:
    with contextlib.suppress(AlreadyExists):
        await c.inventory.create_location(location, location, "warehouse")


async def receive(c: Container, sku: str, location: str, quantity: int, lot: str | None = None,
                  expires_on: date | None = None) -> None:
    await c.inventory.adjust(Adjustment(sku, location, AdjustmentKind.RECEIVE, quantity, lot,
                                        expires_on), CTX)


async def stocked(c: Container, sku: str, quantity: int, location: str = "wh") -> None:
    """One product with one SKU holding `quantity` units at `location`."""
    await add_location(c, location)
    await add_product(c, f"p-{sku}", [sku])
    await receive(c, sku, location, quantity)


@contextlib.contextmanager
def counting(db: Database) -> Iterator[list[str]]:
    """The SQL statements run through `db` inside the block."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engines = [engine.sync_engine for engine in db.engines]
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", count)
