"""Running instock on this machine for measurements and tests: the command, a free port,
throwaway databases (SQLite files, or databases created and dropped on a PostgreSQL server)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
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


async def wait_answering(url: str, log: Path, timeout: float,
                         process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200; fail with the log's tail if the process exits first
    or time runs out."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{url}: the process exited ({process.returncode}); "
                                   f"{log}:\n{log_tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s; {log}:\n{log_tail(log)}")


@contextlib.contextmanager
def instock_process(args: list[str], env: dict[str, str], log: Path
                    ) -> Iterator[subprocess.Popen[bytes]]:
    """`instock ARGS` in its own process (output to `log`) for the length of the block."""
    with log.open("wb") as out:
        process = subprocess.Popen([instock_executable(), *args], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def log_tail(log: Path, chars: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-chars:]
    return ""


@dataclass(frozen=True)
class Schedule:
    """How an open loop went: times are time.monotonic()."""

    offered: int
    started: float  # when request 0 was due
    last_sent: float
    late_ms: float  # the sender's worst delay behind its schedule
    unfinished: int  # still running `drain` seconds after the last was sent (cancelled)


async def open_loop(rate: float, seconds: float,
                    one: Callable[[int, float], Awaitable[None]], drain: float,
                    sent: Callable[[int], None] = lambda _: None) -> Schedule:
    """Start `one(i, due)` at due = t0 + i/rate, each as its own task, however slow earlier
    ones are: a slow server cannot slow the sender, so no latency hides (coordinated
    omission). `sent(1)` is called as each is started.

    A sleep may end up to a timer tick (uvloop: 1 ms) before the time asked for: a request
    started early is given its actual start as `due`, so that no latency counts from a moment
    after its request was sent."""
    count = max(1, round(rate * seconds))
    tasks: list[asyncio.Task[None]] = []
    started, late_ms = time.monotonic() + 0.05, 0.0
    for i in range(count):
        due = started + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late_ms = max(late_ms, -delay * 1000)
        tasks.append(asyncio.ensure_future(one(i, min(due, time.monotonic()))))
        sent(1)
    last_sent = time.monotonic()
    _, pending = await asyncio.wait(tasks, timeout=drain)
    for task in pending:
        task.cancel()
    return Schedule(count, started, last_sent, late_ms, len(pending))
