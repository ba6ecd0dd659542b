"""A stock transaction's writes in one round trip on PostgreSQL.

A stock command writes up to ten things after it decides: its changed levels (a
compare-and-swap on the version each was read at), new levels, lots, ledger entries, the
locked items' versions, outbox events, a new reservation's rows in three tables, and the
status of reservations it moved on (a compare-and-swap on the status each was read in). Sent one by
one, each costs a round trip and SQLAlchemy's and the driver's work per statement, which
profiles of `bench writes` put above the database's own. On PostgreSQL they go as one
statement instead: data-modifying CTEs, each reading its rows from one array parameter per
column (`unnest`), so the statement's text depends only on which parts are present and is
built and compiled once per shape. Its one row says how many levels and reservations the swaps
updated and the items' new versions; anything other than what the caller expects raises
VersionConflict, and the transaction, every part of this statement with it, rolls back.

Large batches (a drop's group commit writes thousands of rows) keep the one-by-one path: its
COPY costs a fraction of an INSERT's work per row, which outweighs the round trips.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.inventory.model import LedgerEntry, Reservation, ReservationStatus, StockLevel
from instock.inventory.store import (
    BUCKET_COLUMNS,
    bump_items,
    entry_row,
    insert_entries,
    insert_reservations,
    items,
    ledger,
    level_values,
    lot_rows,
    lots,
    reservation_allocations,
    reservation_lines,
    reservation_rows,
    reservations,
    save_levels,
    stock_levels,
    update_reservation,
)
from instock.platform.bus import outbox
from instock.platform.db import COPY_THRESHOLD, array_rows, insert_rows
from instock.platform.errors import VersionConflict

BUCKETS = [c.name for c in BUCKET_COLUMNS]


@dataclass
class StockWrites:
    """What one stock transaction writes once its command has decided."""

    levels: Sequence[StockLevel]
    versions_before: dict[tuple[str, str], int]
    entries: Sequence[LedgerEntry]
    bump: dict[str, int]  # sku -> the version it must reach (its locked version + 1)
    events: list[dict[str, Any]] = field(default_factory=list)  # outbox rows
    created: Sequence[tuple[Reservation, str | None]] = ()  # reservations with their scopes
    # reservations moved on (commit, release...): each with the status it was read in
    moved: Sequence[tuple[Reservation, ReservationStatus]] = ()
    now: datetime | None = None  # when they moved


async def write(conn: AsyncConnection, writes: StockWrites) -> None:
    """Write it all: one statement on PostgreSQL for a small transaction, else one per part.
    Raises VersionConflict if a level or an item moved since it was read."""
    if conn.dialect.name == "postgresql" and _small(writes):
        await _together(conn, writes, _rows(writes))
        return
    await insert_reservations(conn, writes.created)
    for reservation, before in writes.moved:
        assert writes.now is not None
        await update_reservation(conn, reservation, before, writes.now)
    await save_levels(conn, writes.levels, writes.versions_before)
    await insert_entries(conn, writes.entries)
    bumped = await bump_items(conn, writes.bump)
    if bumped != writes.bump:
        raise VersionConflict(f"items moved while locked: {sorted(writes.bump)}")
    if writes.events:
        await insert_rows(conn, outbox.outbox, writes.events)


def _small(writes: StockWrites) -> bool:
    """Fewer rows than COPY pays off at, in every part (counted before any row is built: a
    drop's batch has thousands)."""
    return max(len(writes.levels), len(writes.entries), len(writes.events),
               len(writes.created), len(writes.moved),
               sum(len(level.lots) for level in writes.levels),
               sum(len(r.lines) + len(r.allocations) for r, _ in writes.created)
               ) < COPY_THRESHOLD


def _rows(writes: StockWrites) -> dict[str, list[dict[str, Any]]]:
    """Each part's rows, keyed by the part's name (a CTE of the statement)."""
    updated, created = [], []
    for level in writes.levels:
        row = {"sku": level.sku, "location": level.location, **level_values(level)}
        before = writes.versions_before[(level.sku, level.location)]
        if before == 0:
            created.append(row)
        else:
            updated.append({**row, "before": before})
    booked, lines, allocations = reservation_rows(writes.created)
    parts = {"levels": updated, "new_levels": created, "lots": lot_rows(writes.levels),
             "ledger": [entry_row(e) for e in writes.entries],
             "items": [{"sku": sku} for sku in sorted(writes.bump)],
             "outbox": [{**row, "envelope": orjson.dumps(row["envelope"]).decode()}
                        for row in writes.events],
             "reservations": booked, "lines": lines, "allocations": allocations,
             "moved": [{"id": r.id, "before": before.value, "status": r.status.value,
                        "expires_at": r.expires_at, "updated_at": writes.now}
                       for r, before in writes.moved]}
    return {name: part for name, part in parts.items() if part}


async def _together(conn: AsyncConnection, writes: StockWrites,
                    rows: dict[str, list[dict[str, Any]]]) -> None:
    statement, columns = _statement(frozenset(rows))
    params: dict[str, Any] = {}
    for name, part in rows.items():
        for column in columns[name]:
            params[f"{name}__{column}"] = [row[column] for row in part]
    found = (await conn.execute(statement, params)).one()
    if found.updated != len(rows.get("levels", ())):
        raise VersionConflict("a stock level changed since it was read")
    if found.moved != len(rows.get("moved", ())):
        raise VersionConflict("a reservation changed since it was read")
    bumped = {sku: int(version) for sku, version in (found.bumped or {}).items()}
    if bumped != writes.bump:
        raise VersionConflict(f"items moved while locked: {sorted(writes.bump)}")


_SOURCES: dict[str, sa.Table] = {
    "levels": stock_levels, "new_levels": stock_levels, "lots": lots, "ledger": ledger,
    "items": items, "outbox": outbox.outbox, "reservations": reservations,
    "lines": reservation_lines, "allocations": reservation_allocations,
    "moved": reservations}


def _unnest(name: str, table: sa.Table, columns: list[str],
            like: dict[str, sa.ColumnElement[Any]] | None = None) -> sa.TableValuedAlias:
    """The part's rows as one array parameter per column, `name__column` (`array_rows`), each
    typed as the table's column, or as `like` names for columns the table lacks. JSON travels
    as text and is cast back in the INSERT (an array of JSON would be encoded element by
    element by the driver)."""
    def source(column: str) -> sa.ColumnElement[Any]:
        if like and column in like:
            return like[column]
        found = table.c[column]
        return sa.column(column, sa.Text()) if isinstance(found.type, sa.JSON) else found

    return array_rows(f"v_{name}", **{c: (source(c), f"{name}__{c}") for c in columns})


@functools.cache
def _statement(parts: frozenset[str]) -> tuple[Any, dict[str, list[str]]]:
    """The statement for one shape (which parts are present), and each part's columns."""
    columns: dict[str, list[str]] = {}
    ctes: list[Any] = []
    selected: list[Any] = []
    for name in sorted(parts):
        table = _SOURCES[name]
        if name == "levels":
            columns[name] = ["sku", "location", *BUCKETS, "version", "last_hash", "before"]
            v = _unnest(name, table, columns[name], {"before": table.c.version})
            cte = (table.update()
                   .where(table.c.sku == v.c.sku, table.c.location == v.c.location,
                          table.c.version == v.c.before)
                   .values({c: v.c[c] for c in (*BUCKETS, "version", "last_hash")})
                   .returning(table.c.sku).cte(name))
            ctes.append(cte)
            selected.append(sa.select(sa.func.count()).select_from(cte)
                            .scalar_subquery().label("updated"))
        elif name == "items":
            columns[name] = ["sku"]
            v = _unnest(name, table, columns[name])
            cte = (table.update().where(table.c.sku == v.c.sku)
                   .values(version=table.c.version + 1)
                   .returning(table.c.sku, table.c.version).cte(name))
            ctes.append(cte)
            selected.append(sa.select(sa.func.json_object_agg(cte.c.sku, cte.c.version))
                            .scalar_subquery().label("bumped"))
        elif name == "moved":  # a compare-and-swap on the status each was read in
            columns[name] = ["id", "before", "status", "expires_at", "updated_at"]
            v = _unnest(name, table, columns[name], {"before": table.c.status})
            cte = (table.update().where(table.c.id == v.c.id, table.c.status == v.c.before)
                   .values(status=v.c.status, expires_at=v.c.expires_at,
                           updated_at=v.c.updated_at)
                   .returning(table.c.id).cte(name))
            ctes.append(cte)
            selected.append(sa.select(sa.func.count()).select_from(cte)
                            .scalar_subquery().label("moved"))
        else:
            columns[name] = [c.name for c in table.c if c.name in _COLUMNS[name]]
            v = _unnest(name, table, columns[name])
            values = [sa.cast(v.c[c], table.c[c].type) if isinstance(table.c[c].type, sa.JSON)
                      else v.c[c] for c in columns[name]]
            insert = postgresql.insert(table).from_select(columns[name], sa.select(*values))
            if name == "lots":
                insert = insert.on_conflict_do_update(
                    index_elements=["sku", "location", "code"],
                    set_={c: insert.excluded[c] for c in columns[name]
                          if c not in ("sku", "location", "code")})
            ctes.append(insert.cte(name))
    if "levels" not in parts:
        selected.append(sa.literal(0).label("updated"))
    if "items" not in parts:
        selected.append(sa.null().label("bumped"))
    if "moved" not in parts:
        selected.append(sa.literal(0).label("moved"))
    return sa.select(*selected).add_cte(*ctes), columns


# The columns each inserted part gives (the rest keep their defaults).
_COLUMNS: dict[str, frozenset[str]] = {
    "new_levels": frozenset(["sku", "location", *BUCKETS, "version", "last_hash"]),
    "lots": frozenset(["sku", "location", "code", "expires_on", *BUCKETS]),
    "ledger": frozenset(c.name for c in ledger.c),
    "outbox": frozenset(["id", "subject", "type", "sequence", "envelope", "created_at"]),
    "reservations": frozenset(c.name for c in reservations.c),
    "lines": frozenset(c.name for c in reservation_lines.c),
    "allocations": frozenset(c.name for c in reservation_allocations.c),
}
