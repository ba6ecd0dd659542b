"""Stores ask for a row lock with `.with_for_update()` on every database, without a dialect check:
SQLAlchemy leaves `FOR UPDATE` out on SQLite (whose write transaction already excludes every
other writer) and sends it on PostgreSQL. Proven here on the statements that reach each server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from instock.app import Container
from instock.catalog import store as catalog_store
from instock.catalog.model import Product, Variant
from instock.inventory import store as inventory_store


@contextmanager
def statements_sent(container: Container) -> Iterator[list[str]]:
    """Every SQL statement the write engine sends while the block runs."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = container.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def locking(statements: list[str]) -> list[str]:
    return [s for s in statements if "FOR UPDATE" in s.upper()]


async def test_a_locking_read_sends_for_update_only_where_the_database_has_it(
        container: Container) -> None:
    product = Product(id="tee", title="Tee", brand="North", category="tops",
                      price=Decimal("20"), currency="EUR", variants=[Variant("tee-m")])
    on_postgresql = container.db.engine.dialect.name == "postgresql"
    async with container.db.write() as conn:
        await catalog_store.insert_product(conn, product, datetime.now(UTC))
    with statements_sent(container) as sent:
        async with container.db.write() as conn:
            locked = await catalog_store.get_product(conn, "tee", lock=True)
            items = await inventory_store.lock_items(conn, ["tee-m"])
        async with container.db.write() as conn:
            plain = await catalog_store.get_product(conn, "tee")
    assert locked == plain and locked is not None and locked.variants[0].sku == "tee-m"
    assert set(items) == {"tee-m"}
    if on_postgresql:  # the product's row and the item's row (locked again once created)
        assert {s.split("FROM")[1].split()[0] for s in locking(sent)} == {
            "products", "inventory_items"}
    else:
        assert locking(sent) == [] and any("FROM products" in s for s in sent)


def test_sqlalchemy_drops_for_update_when_it_compiles_for_sqlite() -> None:
    from sqlalchemy.dialects import postgresql, sqlite
    query = sa.select(catalog_store.products).with_for_update()
    assert "FOR UPDATE" not in str(query.compile(dialect=sqlite.dialect()))
    assert "FOR UPDATE" in str(query.compile(dialect=postgresql.dialect()))
