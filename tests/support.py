"""Test helpers shared by the integration and end-to-end suites: fresh databases per test.

SQLite always; PostgreSQL too when INSTOCK_TEST_DATABASE_URL is set (CI sets it). Each test gets
a database of its own, created from scratch and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from instock.bench.local import instock_executable, pg_admin
from instock.config import Settings

PG_URL = os.environ.get("INSTOCK_TEST_DATABASE_URL")


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new, empty database on the given backend."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'instock-test.db'}"
        return
    assert PG_URL is not None, "PostgreSQL tests need INSTOCK_TEST_DATABASE_URL"
    name = f"instock_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_admin(PG_URL, f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-keys"


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url, "state_dir": tmp_path / "state", "jwt_secret": TEST_SECRET,
        "run_sweeper": False, "run_relay": False, "run_consumers": False,
        "run_webhook_delivery": False, "run_sagas": False, "run_recommender": False,
        "run_reconciler": False,
        "migrate_on_start": False, "log_level": "warning", "tune_gc": False}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


INSTOCK = instock_executable()


def instock_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for running the `instock` command on a test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
    env.update(INSTOCK_DATABASE_URL=database_url, INSTOCK_JWT_SECRET=TEST_SECRET,
               INSTOCK_STATE_DIR=str(tmp_path / "state"), INSTOCK_LOG_LEVEL="warning")
    env.update(extra)
    return env


REDIS_URL = os.environ.get("INSTOCK_TEST_REDIS_URL")
NATS_URL = os.environ.get("INSTOCK_TEST_NATS_URL")


def bus_urls() -> list[str]:
    """Bus URLs to run bus tests against: memory:// always, Redis and NATS when CI provides them."""
    return ["memory://"] + [url for url in (REDIS_URL, NATS_URL) if url]
