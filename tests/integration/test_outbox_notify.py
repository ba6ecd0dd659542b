"""The outbox's own trigger wakes listeners on PostgreSQL (migration 0012): at commit, never on
rollback, with no `pg_notify` statement of the writer's; the revision downgrades and upgrades."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from instock.app import Container
from instock.migrate import alembic_config, upgrade
from instock.platform.bus import outbox
from instock.platform.bus.outbox import OUTBOX_SIGNAL
from instock.platform.db import Database, utcnow
from instock.waitlist.events import BackInStockNotified
from tests.integration.helpers import stocked


def _event() -> BackInStockNotified:
    return BackInStockNotified(sku="N-1", customer_id="c-1", available=1,
                               subscribed_at=utcnow(), cause="e-1")


async def _notified(db: Database, write: Any) -> tuple[int, list[str]]:
    """How many NOTIFYs a listener heard while `write` ran, and the statements it sent."""
    heard: list[str] = []
    listener = await db._raw_connection()
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        await listener.add_listener(OUTBOX_SIGNAL, lambda *a: heard.append(a[3]))
        await write()
        await asyncio.sleep(0.3)  # NOTIFY travels asynchronously to the listener
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", count)
        await listener.close()
    return len(heard), statements


@pytest.fixture
def pg_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")


async def test_an_outbox_insert_notifies_at_commit_and_never_on_rollback(
        pg_only: None, container: Container) -> None:
    db = container.db

    async def commit() -> None:
        async with db.write() as conn:
            await outbox.add(conn, [_event(), _event()])

    async def roll_back() -> None:
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                await outbox.add(conn, [_event()])
                raise RuntimeError("abandoned")

    heard, statements = await _notified(db, commit)
    assert heard == 1  # one per transaction, however many rows it added
    assert not [s for s in statements if "pg_notify" in s]
    heard, _ = await _notified(db, roll_back)
    assert heard == 0


async def test_a_stock_change_wakes_listeners_through_the_trigger(
        pg_only: None, container: Container) -> None:
    async def change() -> None:
        await stocked(container, "N-2", 3)

    heard, statements = await _notified(container.db, change)
    assert heard >= 1
    assert not [s for s in statements if "pg_notify" in s]


async def test_the_trigger_revision_downgrades_and_upgrades(database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0011")
    await asyncio.to_thread(upgrade, database_url)
    if database_url.startswith("postgresql"):
        engine = sa.ext.asyncio.create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(sa.text(
                    "SELECT count(*) FROM pg_trigger WHERE tgname = 'outbox_notify'"))
        finally:
            await engine.dispose()
        assert found == 1
