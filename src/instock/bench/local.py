"""Running instock on this machine for measurements and tests: the command, a free port,
throwaway databases (SQLite files, or databases created and dropped on a PostgreSQL server)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import sqlalchemy as sa

from instock.platform.auth import Role, TokenAuthority

T = TypeVar("T")
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0  # how long a process started for a bench may take to answer


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
        process = subprocess.Popen([instock_executable(), *args], env=env, stdout=out,  # noqa: S603 - our own executable, arguments from code
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


# -- running benches --------------------------------------------------------------------------

class Reporter(Protocol):
    def task(self, description: str, total: int) -> Callable[[int], None]:
        """Start a progress bar; the callable advances it."""

    def note(self, text: str) -> None:
        """A line of progress text (stderr)."""

def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is there (uvicorn's standard extra brings it): the load generator
    and the clients then take less of the CPU the server needs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)

def logs_to_stderr() -> None:
    """Benches that run project code in their own process (here the service and outbox
    drivers) get its structlog output on stderr (stdout by default): stdout holds the JSON."""
    import logging

    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory for a run's logs and files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)

def backend_of(url: str) -> str:
    """The name a report gives a database: sqlite or postgresql."""
    return "sqlite" if sa.make_url(url).get_backend_name() == "sqlite" else "postgresql"

# -- an API server and what it costs -------------------------------------------------------

def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (every SSE connection is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    database_url: str
    secret: str

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rss_kb(self) -> int:
        """Resident memory of the server and any children it forked (uvicorn workers)."""
        return sum(_vmrss_kb(pid) for pid in _process_tree(self.process.pid))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and its children have used so far."""
        return process_cpu_seconds(self.process.pid)

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                pids.extend(_process_tree(int(child)))
    return pids


def _cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError):
        # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its children have used so far (/proc)."""
    return sum(_cpu_seconds(p) for p in _process_tree(pid))


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _vmrss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

# A bench measures the path it names, not the rate limiter (whose own cost `bench ratelimit`
# shows): the servers it starts run with limits off, and each report says so.
BENCH_SERVER_ENV = {"INSTOCK_RATE_LIMITS": "off"}


@asynccontextmanager
async def serve(database_url: str, bus_url: str, workdir: Path, *,
                consumers: bool = False, env: dict[str, str] | None = None
                ) -> AsyncIterator[Server]:
    """`instock serve` on its own port, with a secret of its own; stopped on the way out.

    It inherits this process's file descriptor limit, which the caller raised first if it
    needs to (preexec_fn could do it in the child, but is unsafe once this process has
    threads)."""
    secret = secrets.token_urlsafe(32)
    port = free_port(HOST)
    log_path = workdir / f"serve-{port}.log"
    settings = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
    settings.update(INSTOCK_DATABASE_URL=database_url, INSTOCK_BUS_URL=bus_url,
                    INSTOCK_JWT_SECRET=secret, INSTOCK_STATE_DIR=str(workdir / "state"),
                    INSTOCK_LOG_LEVEL="warning", INSTOCK_RUN_SWEEPER="false",
                    INSTOCK_RUN_CONSUMERS=str(consumers).lower())
    settings.update(BENCH_SERVER_ENV)
    settings.update(env or {})  # the caller's own settings (e.g. INSTOCK_PAYMENTS_URL)
    with instock_process(["serve", "--host", HOST, "--port", str(port)], settings,
                         log_path) as process:
        server = Server(process, port, log_path, database_url, secret)
        await wait_answering(f"{server.base_url}/readyz", log_path, READY_TIMEOUT, process)
        yield server

def admin_token(server: Server) -> str:
    return TokenAuthority(server.secret, "instock", 3600 * 4).mint(Role.ADMIN, "bench")


async def first_of(awaitable: Awaitable[Any], tasks: list[asyncio.Task[None]],
                   timeout: float | None, ended: str, not_ready: str) -> None:
    """Wait for `awaitable`, but fail at once if one of `tasks` (a client's connection) ends
    first: it broke. `ended` and `not_ready` say what failed, for the bench's report."""
    waiter = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([waiter, *tasks], timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if waiter not in done:
        for task in done:
            task.result()  # raises what broke the connection
        if done:
            raise RuntimeError(ended)
        raise TimeoutError(not_ready)
