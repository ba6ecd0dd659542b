"""Running instock on this machine for measurements and tests: the command, a free port,
throwaway databases (SQLite files, or databases created and dropped on a PostgreSQL server)."""

from __future__ import annotations

import secrets
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa


def instock_executable() -> str:
    """The `instock` command of this environment (beside its Python), else the one on PATH."""
    beside = Path(sys.executable).with_name("instock")
    return str(beside) if beside.exists() else (shutil.which("instock") or "instock")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def pg_admin(url: str, statement: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the PostgreSQL server `url` names."""
    import asyncpg  # the PostgreSQL driver; only needed for that backend

    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database(url: str, workdir: Path,
                           prefix: str = "instock_scratch") -> AsyncIterator[str]:
    """A new, empty database on the backend (and server) `url` names; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    if sa.make_url(url).get_backend_name() == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / name}.db"
        return
    await pg_admin(url, f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        await pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
