"""Building blocks for integration tests: catalogue, locations and stock through the services."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from instock.app import Container, build
from instock.catalog.model import Product, Variant
from instock.inventory.grpc import SERVICE_NAME, InventoryServicer, RemoteInventory
from instock.inventory.model import Adjustment, AdjustmentKind
from instock.platform.db import Database
from instock.platform.entry_context import EntryContext
from instock.platform.errors import AlreadyExists
from instock.platform.rpc import serving
from tests.support import make_settings

CTX = EntryContext(actor="test", reason="test")


@contextlib.asynccontextmanager
async def orders_apart(database_url: str, tmp_path: Any) -> AsyncIterator[Container]:
    """Orders in a container of their own that calls inventory over gRPC, as a fleet's orders
    service does: inventory is served (its servicer on a real port) from a second container on
    the same database. The container given reads and stocks through that inventory, so a test
    sees what the callee did; everything orders do to stock crosses the wire."""
    home = build(make_settings(database_url, tmp_path, services="inventory,catalog"))
    servicer = InventoryServicer(home.inventory, home.tokens)
    async with serving("127.0.0.1", 0, [(SERVICE_NAME, servicer.add_to)], grace=1) as server:
        c = build(make_settings(database_url, tmp_path, services="orders,payments,channels",
                                inventory_url=f"grpc://127.0.0.1:{server.port}"))
        assert isinstance(c.orders.inventory, RemoteInventory)
        own = c.inventory
        c.inventory = home.inventory
        try:
            yield c
        finally:
            c.inventory = own
            await c.close()
    await home.close()


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


async def write_history(c: Container, sku: str,
                        moves: list[tuple[datetime, str, dict[str, int], str | None]],
                        location: str = "wh") -> None:
    """A SKU's past written straight into inventory's tables, as the service would have
    written it then: each move (when, ledger kind, bucket deltas, channel of its reservation
    or None) a ledger entry, each channel's move a reservation. For histories a test cannot
    wait for (the service stamps every entry now); hashes are left empty."""
    from instock.bench.analytics import ZERO_BUCKETS, committed_hold, unhashed_entry
    from instock.inventory import store
    from instock.platform.db import insert_rows

    await add_location(c, location)
    history = EntryContext(actor="test", reason="history")
    totals, entries, held = dict(ZERO_BUCKETS), [], []
    for version, (at, kind, delta, channel) in enumerate(sorted(moves, key=lambda m: m[0]), 1):
        reference = f"{sku}-r{version}" if channel else None
        if reference is not None and channel:
            held.append(committed_hold(reference, channel, at, at))
        for bucket, value in delta.items():
            totals[bucket] += value
        entries.append(unhashed_entry(sku, location, version, kind, delta, reference, at,
                                      history))
    async with c.db.write() as conn:
        await insert_rows(conn, store.items, [{"sku": sku, "version": len(entries)}])
        await insert_rows(conn, store.stock_levels, [{
            "sku": sku, "location": location, **totals, "version": len(entries),
            "last_hash": ""}])
        await insert_rows(conn, store.reservations, held)
        await insert_rows(conn, store.ledger, entries)
