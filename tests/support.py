"""Test helpers shared by the integration and end-to-end suites: fresh databases per test.

SQLite always; PostgreSQL too when INSTOCK_TEST_DATABASE_URL is set (CI sets it). Each test gets
a database of its own, dropped afterwards. A migrated one is copied from a template the run
migrates once per backend (PostgreSQL's `CREATE DATABASE … TEMPLATE`, a file copy on SQLite):
migrating every test's database from scratch cost a third of a second or more each.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import sqlalchemy as sa

from instock.bench.local import instock_executable, pg_admin
from instock.config import Settings
from instock.migrate import upgrade

PG_URL = os.environ.get("INSTOCK_TEST_DATABASE_URL")


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new, empty database on the given backend."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'instock-test.db'}"
        return
    with _pg_database() as url:
        yield url


@contextmanager
def _pg_database(template: str | None = None) -> Iterator[str]:
    """A PostgreSQL database of its own (a copy of `template`, if given), dropped afterwards."""
    assert PG_URL is not None, "PostgreSQL tests need INSTOCK_TEST_DATABASE_URL"
    name = f"instock_t_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(pg_admin(PG_URL, f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield _pg_url(name)
    finally:
        asyncio.run(pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pg_url(name: str) -> str:
    assert PG_URL is not None
    return sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


_TEMPLATES: dict[str, str] = {}


def _template(backend: str) -> str:
    """This run's migrated template: a SQLite file's path, or a PostgreSQL database's name."""
    if backend not in _TEMPLATES:
        if backend == "sqlite":
            folder = tempfile.mkdtemp(prefix="instock-template-")
            atexit.register(shutil.rmtree, folder, True)
            path = os.path.join(folder, "template.db")
            upgrade(f"sqlite+aiosqlite:///{path}")
            with sqlite3.connect(path) as db:  # everything in the one file we copy
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _TEMPLATES[backend] = path
        else:
            kept = ExitStack()  # dropped when the run ends
            atexit.register(kept.close)
            url = kept.enter_context(_pg_database())
            upgrade(url)
            _TEMPLATES[backend] = str(sa.make_url(url).database)
    return _TEMPLATES[backend]


@contextmanager
def migrated_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new database of its own, migrated to head."""
    template = _template(backend)
    if backend == "sqlite":
        path = tmp_path / "instock-test.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    with _pg_database(template) as url:
        yield url


TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-keys"


# What a person's browser sends (a drop's bot scoring reads them: drops/bots.py).
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0 Safari/537.36",
    "Accept-Language": "en-GB,en;q=0.9", "Sec-CH-UA": '"Chromium";v="131"'}


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url, "state_dir": tmp_path / "state", "jwt_secret": TEST_SECRET,
        "run_sweeper": False, "run_relay": False, "run_consumers": False,
        "run_webhook_delivery": False, "run_sagas": False, "run_recommender": False,
        "run_reconciler": False, "run_draws": False, "run_drop_capacity": False,
        "migrate_on_start": False, "log_level": "warning", "tune_gc": False,
        # The tests' receivers and marketplaces listen on 127.0.0.1 (platform/outbound.py).
        "outbound_allow_loopback": True}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


INSTOCK = instock_executable()


def instock_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for running the `instock` command on a test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
    env.update(INSTOCK_DATABASE_URL=database_url, INSTOCK_JWT_SECRET=TEST_SECRET,
               INSTOCK_STATE_DIR=str(tmp_path / "state"), INSTOCK_LOG_LEVEL="warning",
               INSTOCK_OUTBOUND_ALLOW_LOOPBACK="true",
               # No balancer in front: a stopped server need not wait to leave its rotation.
               INSTOCK_DRAIN_SECONDS="0")
    env.update(extra)
    return env


REDIS_URL = os.environ.get("INSTOCK_TEST_REDIS_URL")
NATS_URL = os.environ.get("INSTOCK_TEST_NATS_URL")
RABBITMQ_URL = os.environ.get("INSTOCK_TEST_RABBITMQ_URL")


def bus_urls() -> list[str]:
    """Bus URLs to run bus tests against: memory:// always; Redis, NATS and RabbitMQ when CI
    provides them."""
    rabbitmq = rabbitmq_streams(RABBITMQ_URL) if RABBITMQ_URL else None
    return ["memory://"] + [url for url in (REDIS_URL, NATS_URL, rabbitmq) if url]


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


@functools.cache
def rabbitmq_streams(url: str, wait: float = 60.0) -> str:
    """`url`, once RabbitMQ's stream protocol answers on its port. Its plugin ships disabled:
    if the port is closed it is enabled on the local node (`rabbitmq-plugins enable` is
    idempotent), then the port is waited for. Once per run."""
    from instock.platform.bus.rabbitmq_link import Address

    address = Address.from_url(url)
    if _answers(address.host, address.port):
        return url
    if shutil.which("rabbitmq-plugins") is None:
        raise RuntimeError(f"RabbitMQ's stream port {address.host}:{address.port} is closed "
                           "and rabbitmq-plugins is not here to enable rabbitmq_stream")
    # Not checked: make test's two workers both get here at once, and the second enable can fail
    # while the first one's is under way. What counts is that the port opens.
    enabled = subprocess.run(["rabbitmq-plugins", "enable", "rabbitmq_stream"],
                             capture_output=True, text=True, timeout=120)
    deadline = time.monotonic() + wait
    while not _answers(address.host, address.port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"RabbitMQ's stream port {address.host}:{address.port} did not "
                               f"open within {wait:.0f} s of enabling rabbitmq_stream "
                               f"(rabbitmq-plugins said: {enabled.stderr.strip()[-500:]})")
        time.sleep(0.5)
    return url
