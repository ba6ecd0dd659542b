"""The database adapter: one async engine, read and write transactions, portable column types.

SQLite (the embedded default) admits one writer at a time, so write transactions there start with
BEGIN IMMEDIATE (the lock is taken up front instead of failing half-way) and queue on a process-wide
lock; PostgreSQL writers run concurrently and serialise on the row locks the services take.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import operator
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from instock.platform import held, tracing
from instock.platform.errors import VersionConflict
from instock.platform.origin import WORK_ORIGIN
from instock.platform.telemetry import DB_STATEMENTS, DB_TRANSACTIONS

log = structlog.get_logger(__name__)

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which keeps naive text) as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(sa.TypeDecorator[Decimal]):
    """Exact decimals: NUMERIC on PostgreSQL, text on SQLite (whose NUMERIC is a float)."""

    impl = sa.String(40)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(18, 4))
        return dialect.type_descriptor(sa.String(40))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name != "postgresql" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value)).normalize()


def signal(conn: AsyncConnection, channel: str) -> None:
    """Wake `Database.signals(channel)` waiters once this write transaction commits, never if
    it rolls back: LISTEN/NOTIFY on PostgreSQL (every process), an in-process event on SQLite."""
    conn.info.setdefault("signals", set()).add(channel)


def after_commit(conn: AsyncConnection, items: Iterable[Any]) -> None:
    """Hand `items` (a transaction's event envelopes) to `Database.on_commit` listeners of this
    process once this write transaction commits, never if it rolls back."""
    conn.info.setdefault("committed", []).extend(items)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Database:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        # PostgreSQL reads run outside a transaction, on their own pool: under READ COMMITTED
        # each statement sees its own snapshot either way, and a read then costs its query's
        # round trip instead of BEGIN, the query and ROLLBACK. Reads that need one snapshot
        # across statements use `snapshot`. The two pools share one budget of connections
        # (2 x pool_size a process, as one pool had): the server's are not unlimited.
        # Writers keep all of theirs open, no overflow: an overflow connection is closed when
        # it comes back, and a new one pays its connect and every statement's first prepare
        # and type lookup again, which under a write load (a batch, a dozen consumers, the
        # relay and the reconciler at once) was a few percent of the process's CPU.
        readers = max(pool_size // 2, 1)
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=2 * pool_size - readers, max_overflow=0)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._reader: AsyncEngine = self.engine if self.is_sqlite else create_async_engine(
            self.url, **{**kwargs, "pool_size": readers, "max_overflow": 0},
            isolation_level="AUTOCOMMIT")
        if not self.is_sqlite:
            _ping_when_idle(self.engine)
            _ping_when_idle(self._reader)
        _count_work(self.engine, transactions=True)
        if self._reader is not self.engine:
            # The reader runs in AUTOCOMMIT: its connections end with a no-op "rollback" that
            # is no transaction on the server, so only its statements count.
            _count_work(self._reader, transactions=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        # In-process wake-ups for `signal`/`signals`: on SQLite the only kind there is; on
        # PostgreSQL LISTEN/NOTIFY reaches other processes as well.
        self._signals: dict[str, set[asyncio.Event]] = {}
        self._on_commit: list[Callable[[list[Any]], None]] = []
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    @property
    def engines(self) -> tuple[AsyncEngine, ...]:
        """Every engine this adapter talks through (the writer, and the reader if separate):
        what a test counting statements listens to."""
        return (self.engine,) if self._reader is self.engine else (self.engine, self._reader)

    @property
    def backend(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits on success, rolls back on any exception. A request
        that holds its writes (held.py) has it committed with its response instead."""
        hold = held.writing()
        if hold is not None:
            await hold.settle()  # a second write: the one held commits first
        stack = AsyncExitStack()
        # The transaction's span, its statements' parent (none at all while tracing is off).
        # A write held for the response commits after this span ends, with the response.
        traced = tracing.span("db.transaction", kind=tracing.SpanKind.CLIENT,
                              attributes={"db.system.name": self.backend})
        try:
            with traced:
                conn = await self._begin(stack)
                try:
                    yield conn
                except BaseException as exc:
                    await stack.__aexit__(type(exc), exc, exc.__traceback__)  # rolls back
                    raise
                if hold is not None:
                    hold.keep(self, conn, stack)
                else:
                    await self.commit(conn, stack)
        except DBAPIError as exc:
            if self.is_sqlite:
                raise
            raise _as_conflict(exc) from exc

    async def _begin(self, stack: AsyncExitStack) -> AsyncConnection:
        try:
            if self._write_lock is None:
                conn = await stack.enter_async_context(self.engine.begin())
            else:
                await stack.enter_async_context(self._write_lock)
                conn = await stack.enter_async_context(self.engine.connect())
                await conn.execution_options(sqlite_begin="IMMEDIATE")
                await stack.enter_async_context(conn.begin())
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        # `info` lives with the pooled connection: nothing a rolled-back transaction left
        # there may be taken for this one's.
        conn.info.pop("committed", None)
        conn.info.pop("signals", None)
        return conn

    async def commit(self, conn: AsyncConnection, stack: AsyncExitStack) -> None:
        """Commit a transaction `write` began, then tell this process's listeners."""
        signals = conn.info.pop("signals", set())
        committed = conn.info.pop("committed", None)
        if not self.is_sqlite:
            try:
                for channel in signals:  # NOTIFY is sent on commit
                    await conn.execute(sa.text("SELECT pg_notify(:c, '')"), {"c": channel})
            except BaseException as exc:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        await stack.aclose()  # commits, returns the connection (and the SQLite write lock)
        if self.is_sqlite:
            self._wake(signals)
        self._tell(committed)

    @asynccontextmanager
    async def durable(self, *, rerunnable: bool = False) -> AsyncIterator[None]:
        """Inside, each write commits at the end of its block even in a request that holds its
        writes: for work that calls out between its steps (a saga) and must find each step
        committed before the next. What the request held so far commits first, with the
        request's claim on its key: a twin must not run it again meanwhile. `rerunnable` work
        finds what an earlier run of its request did (it keys its records with the request's
        key) and needs no claim: a retry after a crash runs it again and gets that."""
        hold = held.writing()
        if hold is None:
            yield
            return
        await hold.settle(claim=not rerunnable)
        with held.holding(None):
            if not hold.started and not rerunnable:  # record, durably, that it has begun
                async with self.write() as conn:
                    await hold.on_first_commit(conn)
                hold.started = True
            yield

    def on_commit(self, listener: Callable[[list[Any]], None]) -> None:
        """Call `listener` with what each committed write transaction passed to `after_commit`
        (in this process: other processes hear of their commits from the bus)."""
        self._on_commit.append(listener)

    def _tell(self, committed: list[Any] | None) -> None:
        if committed:
            for listener in self._on_commit:
                try:
                    listener(committed)
                except Exception:  # the transaction is committed: its writer must hear so
                    log.exception("on_commit_listener_failed")

    def _wake(self, channels: set[str] | tuple[()]) -> None:
        for channel in channels:
            for waiter in self._signals.get(channel, ()):
                waiter.set()

    async def signals(self, channel: str, *, fallback: float) -> AsyncIterator[None]:
        """Yield at once, then whenever `channel` is signalled, and at least every `fallback`
        seconds (a safety net: SQLite writers in other processes cannot wake us)."""
        waiter = asyncio.Event()
        self._signals.setdefault(channel, set()).add(waiter)
        try:
            async with self._listening(channel, waiter):
                while True:
                    waiter.clear()
                    yield
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                    # cancellation that lands as the signal does (frequent under load), and
                    # a relay told to stop would publish on for ever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(fallback):
                            await waiter.wait()
        finally:
            self._signals[channel].discard(waiter)

    @asynccontextmanager
    async def _listening(self, channel: str, waiter: asyncio.Event) -> AsyncIterator[None]:
        if self.is_sqlite:
            yield
            return
        listener = await self._raw_connection()
        try:
            await listener.add_listener(channel, lambda *_: waiter.set())
            yield
        finally:
            with contextlib.suppress(Exception):
                await listener.close()

    @asynccontextmanager
    async def leadership(self, name: str) -> AsyncIterator[asyncio.Event]:
        """Hold the named leadership while inside; wait until it is free.

        The holder's death frees it at once: a session advisory lock on PostgreSQL dies with
        its connection, a flock on SQLite dies with its process. The event yielded is set if
        the leadership is lost (the lock's connection broke): the holder must stop then.
        """
        lost = asyncio.Event()
        if self.is_sqlite:
            async with _file_lock(self._lock_path(name)):
                yield lost
            return
        conn = await self._raw_connection()
        try:
            conn.add_termination_listener(lambda *_: lost.set())
            await conn.execute("SELECT pg_advisory_lock($1)", zlib.crc32(name.encode()))
            yield lost
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    def _lock_path(self, name: str) -> Path:
        database = self.url.database or ""
        base = Path(database) if database and database != ":memory:" else Path(".instock")
        return base.with_name(f"{base.name}.{name}.lock")

    async def _raw_connection(self) -> Any:
        """A dedicated asyncpg connection outside the pool, for LISTEN and session locks."""
        import asyncpg  # the PostgreSQL driver; only needed here on that backend

        url = self.url
        return await asyncpg.connect(user=url.username, password=url.password, host=url.host,
                                     port=url.port, database=url.database)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        own = held.reading(self)
        if own is not None:  # the request's held write: read what it wrote
            async with own as conn:
                yield conn
            return
        async with self._reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction that sees one consistent state across statements (audits)."""
        own = held.reading(self)
        if own is not None:  # the request's held write: read what it wrote
            async with own as conn:
                yield conn
            return
        async with self.engine.connect() as conn:
            if not self.is_sqlite:  # SQLite in WAL mode already reads from one snapshot
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._reader is not self.engine:
            await self._reader.dispose()


@asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.2)  # another process leads; its death frees the lock
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# PostgreSQL's deadlock and serialization failures: safe to retry the whole transaction.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}


def _as_conflict(exc: DBAPIError) -> Exception:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _RETRYABLE_SQLSTATES:
        return VersionConflict("the database aborted a concurrent transaction")
    return exc


# A pooled connection idle this long is pinged before it is handed out again: a database
# restart or a firewall may have dropped it meanwhile.
PING_IDLE_SECONDS = 5.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """SQLAlchemy's pre-ping, for idle connections only: pinging every checkout would add a
    round trip (three, around a transaction) to each short read and write of a busy process.
    A failed ping discards the connection and the pool hands out a fresh one."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the pool retries the checkout with a new connection
            raise DisconnectionError("a pooled connection was dropped while idle") from exc


def _count_work(engine: AsyncEngine, *, transactions: bool) -> None:
    """The process's SQL statements and transactions on its /metrics (instock_db_*): what the
    benches divide by the requests they made, labelled by the work they were for (WORK_ORIGIN).
    A dict read and a counter increment per event, so cheap enough for every statement.
    Counted: what SQLAlchemy sends through a cursor (SQLite's BEGIN IMMEDIATE included, being
    one); not the driver's own BEGIN/COMMIT on PostgreSQL, nor COPY (`insert_rows`), nor the
    dedicated LISTEN and lock connections."""
    # One child counter per label values, looked up once: a dict read per statement.
    statements: dict[tuple[str, ...], Any] = {}
    ended: dict[tuple[str, ...], Any] = {}

    def _child(family: Any, cache: dict[tuple[str, ...], Any], *labels: str) -> Any:
        child = cache.get(labels)
        if child is None:
            child = cache[labels] = family.labels(*labels)
        return child

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _on_statement(_conn: Any, _cursor: Any, _statement: str, _parameters: Any,
                      _context: Any, _executemany: bool) -> None:
        _child(DB_STATEMENTS, statements, WORK_ORIGIN.get()).inc()

    if not transactions:
        return

    @event.listens_for(engine.sync_engine, "commit")
    def _on_commit(_conn: Any) -> None:
        _child(DB_TRANSACTIONS, ended, "commit", WORK_ORIGIN.get()).inc()

    @event.listens_for(engine.sync_engine, "rollback")
    def _on_rollback(_conn: Any) -> None:
        # A read's connection closed without a commit counts here too (SQLite's deferred
        # read transactions, `snapshot`), as well as a write that failed.
        _child(DB_TRANSACTIONS, ended, "rollback", WORK_ORIGIN.get()).inc()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE is ours to issue;
        # WAL lets readers (audit, GETs) run beside the one writer.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Reads get a deferred BEGIN; write() asks for BEGIN IMMEDIATE through an execution option.
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}")


async def upsert(conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]],
                 keys: list[str]) -> None:
    """Insert rows, or update the non-key columns of those whose keys exist (both dialects)."""
    if not rows:
        return
    await conn.execute(_upsert_of(conn.dialect.name, table, tuple(rows[0]), tuple(keys)), rows)


@functools.cache
def _upsert_of(dialect: str, table: sa.Table, columns: tuple[str, ...],
               keys: tuple[str, ...]) -> Any:
    """Built once per table and shape (consumers upsert on every event): see `prebuilt`."""
    statement = insert_for(dialect, table)
    updates = {c: statement.excluded[c] for c in columns if c not in keys}
    return statement.on_conflict_do_update(index_elements=list(keys), set_=updates)


async def insert_missing(conn: AsyncConnection, table: sa.Table,
                         rows: list[dict[str, Any]]) -> None:
    """Insert rows whose primary key does not exist yet; leave existing ones untouched."""
    if not rows:
        return
    await conn.execute(dialect_insert(conn, table).on_conflict_do_nothing(), rows)


# Below this many rows an ordinary INSERT is as quick as COPY's extra round trip.
COPY_THRESHOLD = 16


async def insert_rows(conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows in one go: PostgreSQL's binary COPY (a drop's batch writes thousands of
    rows, and COPY costs a fraction of an INSERT's per-row work), else one executemany."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) < COPY_THRESHOLD:
        await conn.execute(_insert_of(table), rows)
        return
    columns = list(rows[0])
    for name in (c for c in columns if isinstance(table.c[c].type, sa.JSON)):
        rows = [{**row, name: orjson.dumps(row[name]).decode()} for row in rows]
    record = operator.itemgetter(*columns)
    records = [record(row) for row in rows]
    raw = await conn.get_raw_connection()
    if getattr(raw.dbapi_connection, "_transaction", True) is None:
        # The driver opens the transaction lazily, on the first statement; COPY must be inside.
        await conn.execute(sa.text("SELECT 1"))
    driver = raw.driver_connection
    assert driver is not None
    await driver.copy_records_to_table(table.name, records=records, columns=columns)


@functools.cache
def _insert_of(table: sa.Table) -> sa.Insert:
    return table.insert()  # built once per table: see `prebuilt`


def dialect_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    return insert_for(conn.dialect.name, table)


def insert_for(dialect: str, table: sa.Table) -> Any:
    # Both dialects spell ON CONFLICT the same way, but through their own insert constructs.
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def prebuilt(build: Callable[[str], Any]) -> Callable[[AsyncConnection], Any]:
    """A hot statement built once per dialect and reused, its values passed as parameters:
    SQLAlchemy then neither builds it nor computes its cache key again on each execution,
    about half of its CPU per statement (`build` gets the dialect's name)."""
    built: dict[str, Any] = {}

    def statement(conn: AsyncConnection) -> Any:
        name = conn.dialect.name
        found = built.get(name)
        if found is None:
            found = built[name] = build(name)
        return found

    return statement


def any_of(dialect: str, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
    """`column IN :name` for a prebuilt statement (the list given at execution): an array
    parameter on PostgreSQL (see `among`), an expanding IN on SQLite."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(sa.bindparam(name, expanding=True))


def among(conn: AsyncConnection, column: sa.ColumnElement[Any],
          values: Iterable[Any]) -> sa.ColumnElement[bool]:
    """`column IN values`, for the hot statements. An expanding IN renders its SQL anew on
    every execution (one placeholder per value), so PostgreSQL gets `column = ANY(:array)`:
    one array parameter, one SQL text whatever the count, one cached compilation and one
    prepared statement in asyncpg. SQLite has no arrays and keeps IN."""
    wanted = list(values)
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.literal(wanted, postgresql.ARRAY(column.type)))
    return column.in_(wanted)


def array_rows(name: str, **columns: tuple[sa.ColumnElement[Any], str]) -> sa.TableValuedAlias:
    """PostgreSQL only: rows given as one array parameter per column (each column's parameter
    named), `unnest(:a, :b, ...) AS name(a, b, ...)`, to join a table against many keys at
    once. Like `any_of`, one SQL text and one cached compilation whatever the count, for a
    prebuilt statement; an OR of per-key conditions is built, keyed and compiled anew on every
    call (milliseconds of the event loop for a few hundred keys)."""
    arrays = [sa.bindparam(param, type_=postgresql.ARRAY(column.type))
              for column, param in columns.values()]
    return sa.func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


# -- a person's rows, for export and erasure (rare, so plain statements) ----------------------

async def rows_where(conn: AsyncConnection, column: sa.Column[Any],
                     value: Any) -> list[dict[str, Any]]:
    """Every row of the column's table where it equals `value`, as dicts."""
    result = await conn.execute(sa.select(column.table).where(column == value))
    return [dict(row._mapping) for row in result]


async def set_where(conn: AsyncConnection, column: sa.Column[Any], value: Any,
                    **values: Any) -> int:
    """Set `values` on every row of the column's table where it equals `value`."""
    table = column.table
    assert isinstance(table, sa.Table)
    result = await conn.execute(table.update().where(column == value).values(**values))
    return int(result.rowcount or 0)


async def rows_mentioning(conn: AsyncConnection, column: sa.Column[Any],
                          text: str) -> list[dict[str, Any]]:
    """Rows whose column (JSON or text) contains `text` anywhere: candidates, which the caller
    checks value by value (an id is also a substring of longer ids)."""
    result = await conn.execute(sa.select(column.table).where(
        sa.cast(column, sa.Text).contains(text, autoescape=True)))
    return [dict(row._mapping) for row in result]
