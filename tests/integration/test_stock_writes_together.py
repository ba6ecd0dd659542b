"""A stock transaction's writes go to PostgreSQL as one statement (inventory/store/together.py),
and what they write is what the one-by-one path writes: the same levels, ledger, items,
reservations and outbox rows, on either backend. A level that moved since it was read fails the
whole statement, and nothing of it stays."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from instock.app import Container
from instock.inventory import store
from instock.inventory.model import Adjustment, AdjustmentKind, Line, ReservationStatus
from instock.inventory.reservation_batch import ReserveRequest
from instock.inventory.store import together
from instock.platform.bus.outbox import outbox
from instock.platform.db import utcnow
from instock.platform.errors import VersionConflict
from tests.integration.helpers import CTX, add_location, counting, receive, stocked


@pytest.fixture
def c(container: Container) -> Container:
    return container


def writes(sent: list[str]) -> list[str]:
    """The statements that write (an INSERT or an UPDATE ... SET, CTEs included)."""
    return [s for s in sent if re.search(r"\bINSERT INTO\b|\bUPDATE \w+ SET\b", s)]


async def test_a_reservation_writes_in_one_statement_on_postgresql(c: Container) -> None:
    await stocked(c, "SKU-1", 10)
    async with c.db.read() as conn:
        events_before = len((await conn.execute(sa.select(outbox.c.id))).all())
    with counting(c.db) as sent:
        reservation = await c.inventory.reserve(ReserveRequest([Line("SKU-1", 3)]), CTX)
    written = writes(sent)
    if c.db.engine.dialect.name == "postgresql":
        assert len(written) == 1, written  # levels, ledger, item, outbox, reservation: one
        for table in ("stock_levels", "ledger", "inventory_items", "outbox", "reservations",
                      "reservation_lines", "reservation_allocations"):
            assert table in written[0]
    else:
        assert len(written) > 1
    view = await c.inventory.stock("SKU-1")
    assert (view.totals.on_hand, view.totals.reserved, view.available) == (10, 3, 7)
    assert await c.inventory.get_reservation(reservation.id) == reservation
    async with c.db.read() as conn:
        entries = await store.ledger_entries(conn, "SKU-1")
        item = (await store.get_items(conn, ["SKU-1"]))["SKU-1"]
        types = [r.type for r in (await conn.execute(
            sa.select(outbox.c.type).order_by(outbox.c.created_at, outbox.c.id))).all()]
    assert [e.kind for e in entries][-1] == "reserve"
    assert entries[-1].prev_hash == entries[-2].hash  # the chain goes on
    assert item.version == view.version
    assert "inventory.stock_changed.v1" in types[events_before:]
    assert (await c.inventory.audit()).problems == []


async def test_a_level_that_moved_fails_the_whole_write(c: Container) -> None:
    await stocked(c, "SKU-2", 10)
    before = await c.inventory.stock("SKU-2")
    async with c.db.read() as conn:
        ledger_before = len(await store.ledger_entries(conn, "SKU-2"))
    with pytest.raises(VersionConflict):
        async with c.db.write() as conn:
            items = await store.lock_items(conn, ["SKU-2"])
            levels = await store.load_levels(conn, ["SKU-2"])
            level = next(iter(levels.values()))
            # as if read at a later version than the row holds: the swap finds no row
            versions_before = {key: lv.version + 5 for key, lv in levels.items()}
            await together.write(conn, together.StockWrites(
                [level], versions_before, [],
                {"SKU-2": items["SKU-2"].version + 1}))
    after = await c.inventory.stock("SKU-2")
    async with c.db.read() as conn:
        assert len(await store.ledger_entries(conn, "SKU-2")) == ledger_before
        item = (await store.get_items(conn, ["SKU-2"]))["SKU-2"]
    assert (after.version, after.available) == (before.version, before.available)
    assert item.version == before.version  # the item's bump rolled back with the rest


async def test_adjustments_and_lots_write_alike_on_both_paths(c: Container) -> None:
    """Receipts into lots (new levels, lot upserts) and counts: the one-statement path on
    PostgreSQL and the one-by-one path leave the same state, which the audit re-folds."""
    await stocked(c, "SKU-3", 5)
    await add_location(c, "wh2")
    for quantity in (4, 2):
        await receive(c, "SKU-3", "wh", quantity, "L1", date.today() + timedelta(days=90))
    await c.inventory.adjust(Adjustment("SKU-3", "wh2", AdjustmentKind.RECEIVE, 1), CTX)
    view = await c.inventory.stock("SKU-3")
    assert view.totals.on_hand == 12
    assert len(view.levels) == 2
    assert (await c.inventory.audit()).problems == []


async def test_a_commit_writes_in_one_statement_on_postgresql(c: Container) -> None:
    await stocked(c, "SKU-4", 10)
    reservation = await c.inventory.reserve(ReserveRequest([Line("SKU-4", 2)]), CTX)
    with counting(c.db) as sent:
        committed = await c.inventory.commit(reservation.id, CTX)
    written = writes(sent)
    if c.db.engine.dialect.name == "postgresql":
        assert len(written) == 1, written  # the status, levels, ledger, item and outbox
        assert "UPDATE reservations SET" in written[0]
        # its SKUs (before the transaction), the items locked, their levels, the reservation
        # whole (lines and allocations aggregated), the write
        assert len(sent) == 5, sent
    assert committed.status is ReservationStatus.COMMITTED
    assert (await c.inventory.get_reservation(reservation.id)).status is \
        ReservationStatus.COMMITTED
    view = await c.inventory.stock("SKU-4")
    assert (view.totals.reserved, view.totals.committed, view.available) == (0, 2, 8)
    assert (await c.inventory.audit()).problems == []


async def test_a_reservation_that_moved_fails_the_whole_write(c: Container) -> None:
    await stocked(c, "SKU-5", 10)
    reservation = await c.inventory.reserve(ReserveRequest([Line("SKU-5", 1)]), CTX)
    released = await c.inventory.release(reservation.id, CTX)
    before = await c.inventory.stock("SKU-5")
    with pytest.raises(VersionConflict):
        async with c.db.write() as conn:
            items = await store.lock_items(conn, ["SKU-5"])
            # as if it were still active: the swap on its status finds no row
            await together.write(conn, together.StockWrites(
                [], {}, [], {"SKU-5": items["SKU-5"].version + 1},
                moved=[(released, ReservationStatus.ACTIVE)], now=utcnow()))
    assert (await c.inventory.get_reservation(reservation.id)).status is \
        ReservationStatus.RELEASED
    assert (await c.inventory.stock("SKU-5")).version == before.version


async def test_a_restock_nobody_waits_for_writes_nothing_and_one_waited_for_starts_a_wave(
        c: Container) -> None:
    """The waitlist's consumer of back-in-stock events: with no wave running and nobody
    waiting, two reads and no write; with someone waiting, the wave as before."""
    await stocked(c, "SKU-6", 1)
    event = {"id": "evt-1", "type": "inventory.back_in_stock.v1", "subject": "SKU-6",
             "data": {"sku": "SKU-6", "available": 1}}
    with counting(c.db) as sent:
        async with c.db.write() as conn:
            await c.waitlist.on_back_in_stock(conn, event)
    reads = [s for s in sent if s.lstrip().startswith("SELECT")]
    assert len(reads) == 2 and writes(sent) == []  # (SQLite's BEGIN IMMEDIATE aside)
    await c.waitlist.join("SKU-6", "cust-1")
    async with c.db.write() as conn:
        await c.waitlist.on_back_in_stock(conn, {**event, "id": "evt-2"})
    assert [e.notified_at is not None for e in await c.waitlist.of_customer("cust-1")] == [True]
