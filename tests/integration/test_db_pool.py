"""The PostgreSQL pools: reads outside a transaction, and connections that died while idle are
replaced before anyone gets them (pinged only when idle, not on every checkout)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from instock.platform import db as db_module
from instock.platform.db import Database
from tests.support import PG_URL, fresh_database

pytestmark = pytest.mark.skipif(PG_URL is None, reason="needs INSTOCK_TEST_DATABASE_URL")


def _dsn(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _backend_pids(db: Database) -> tuple[int, int]:
    async with db.read() as conn:
        reader = int(await conn.scalar(sa.text("SELECT pg_backend_pid()")))
    async with db.write() as conn:
        writer = int(await conn.scalar(sa.text("SELECT pg_backend_pid()")))
    return reader, writer


def test_connections_killed_while_idle_are_replaced(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 0.2)

    async def scenario(url: str) -> None:
        db = Database(url)
        try:
            before = await _backend_pids(db)
            admin = await asyncpg.connect(_dsn(url))
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            finally:
                await admin.close()
            assert killed >= 2
            await asyncio.sleep(0.5)  # idle longer than PING_IDLE_SECONDS: pinged, found dead
            after = await _backend_pids(db)
            assert set(after).isdisjoint(before)
        finally:
            await db.dispose()

    with fresh_database("postgresql", tmp_path) as url:
        asyncio.run(scenario(url))


def test_reads_run_outside_a_transaction_and_reuse_busy_connections(tmp_path: Path) -> None:
    async def scenario(url: str) -> None:
        db = Database(url)
        try:
            async with db.read() as conn:
                first = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
                # autocommit: each statement is a transaction of its own, none spans the read
                ids = [await conn.scalar(sa.text("SELECT txid_current()")) for _ in range(2)]
                assert ids[0] != ids[1]
            async with db.read() as conn:
                assert await conn.scalar(sa.text("SELECT pg_backend_pid()")) == first
            async with db.snapshot() as conn:  # a snapshot still is one transaction
                assert await conn.scalar(sa.text(
                    "SELECT current_setting('transaction_isolation')")) == "repeatable read"
        finally:
            await db.dispose()

    with fresh_database("postgresql", tmp_path) as url:
        asyncio.run(scenario(url))
