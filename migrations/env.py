"""Alembic environment: async engines, batch mode on SQLite, one migrator at a time on PG."""

from __future__ import annotations

import asyncio
import sys

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import instock.tables  # noqa: F401  (registers every table)
from instock.platform.db import metadata

# Any fixed number: several API processes starting at once must not migrate concurrently.
MIGRATION_LOCK_ID = 746_312_001


def run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        current = context.get_context().get_current_revision()
        if current is not None and current not in {
                script.revision for script in context.script.walk_revisions()}:
            # A newer release has migrated past what this code knows. During a rolling deploy
            # the old release's processes restart against the new schema, which
            # expand/contract keeps readable by them (tests/e2e/test_expand_contract.py):
            # leave it as it is instead of failing to start.
            print(f"instock: the database is at revision {current}, ahead of this release; "
                  "not migrating", file=sys.stderr)
            return
        context.run_migrations()


async def run_async() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url") or "")
    async with engine.begin() as connection:
        await connection.run_sync(run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"),
                      target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async())
