"""The Alembic history builds exactly the schema the code declares, on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

import instock.tables  # noqa: F401  (registers every table)
from instock.analytics.store import PARTITION
from instock.migrate import alembic_config, upgrade
from instock.platform.db import metadata


def _declared(name: str | None, kind: str, _: Any) -> bool:
    """Analytics' monthly partitions are made as months come, not declared."""
    return not (kind == "table" and name is not None and PARTITION.match(name))


def _diff(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": False,
                                                           "include_name": _declared})
    return list(compare_metadata(context, metadata))


async def test_migrations_match_the_declared_tables(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_a_database_a_newer_release_migrated_is_left_as_it_is(database_url: str) -> None:
    """During a rolling deploy an old release's process restarts against the new schema: its
    `migrate` must neither fail nor touch what it does not know."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        await asyncio.to_thread(upgrade, database_url)  # no error: "ahead of this release"
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                    ).scalar() == "9999"
            head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = :head"),
                               {"head": head})
            await conn.commit()
        await asyncio.to_thread(upgrade, database_url)  # at head: nothing to do, no error
    finally:
        await engine.dispose()
