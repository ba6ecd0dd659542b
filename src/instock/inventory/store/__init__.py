"""Persistence of the inventory context (SQLAlchemy Core); per-SKU tables are keyed by sku first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.inventory.model import (
    Allocation,
    Buckets,
    Channel,
    Item,
    LedgerEntry,
    Line,
    Lot,
    Provenance,
    Reservation,
    ReservationStatus,
    StockLevel,
)
from instock.platform.db import (
    UTCDateTime,
    among,
    any_of,
    array_rows,
    insert_missing,
    insert_rows,
    metadata,
    prebuilt,
    rows_where,
    set_where,
    upsert,
)
from instock.platform.entry_context import EntryContext
from instock.platform.errors import VersionConflict

BUCKET_COLUMNS = [sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
                  for name in Buckets().as_dict()]

locations = sa.Table(
    "locations", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

channels = sa.Table(
    "channels", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("min_shelf_life_days", sa.Integer, nullable=False, server_default="0"),
    # Allocation rules (migration 0008): units held back from the channel, and the most it
    # is shown; available-to-sell = max(0, min(cap, available in its locations - buffer)).
    sa.Column("buffer", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cap", sa.Integer, nullable=True),
)

channel_locations = sa.Table(
    "channel_locations", metadata,
    sa.Column("channel_id", sa.String(64), sa.ForeignKey("channels.id"), primary_key=True),
    sa.Column("location_id", sa.String(64), sa.ForeignKey("locations.id"), primary_key=True),
    sa.Column("priority", sa.Integer, nullable=False),
)

# One row per SKU: the point every writer of that SKU locks first, and its policy.
items = sa.Table(
    "inventory_items", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("per_customer_limit", sa.Integer, nullable=True),
    sa.Column("low_stock_threshold", sa.Integer, nullable=True),
)

stock_levels = sa.Table(
    "stock_levels", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("location", sa.String(64), sa.ForeignKey("locations.id"), primary_key=True),
    *[c._copy() for c in BUCKET_COLUMNS],
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
)

lots = sa.Table(
    "lots", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("location", sa.String(64), primary_key=True),
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("expires_on", sa.Date, nullable=False),
    *[c._copy() for c in BUCKET_COLUMNS],
)

ledger = sa.Table(
    "ledger", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("location", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    *[c._copy() for c in BUCKET_COLUMNS],
    sa.Column("lot", sa.String(64), nullable=True),
    sa.Column("lot_expires_on", sa.Date, nullable=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("correlation_id", sa.String(128), nullable=True),
    sa.Column("idempotency_key", sa.String(128), nullable=True),
    sa.Column("reference", sa.String(64), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# When each level's incoming units (its `incoming` bucket) should arrive, as the last `expect`
# adjustment said: a plan beside the level, not a movement of it.
expected_receipts = sa.Table(
    "expected_receipts", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("location", sa.String(64), primary_key=True),
    sa.Column("expected_on", sa.Date, nullable=False),
)

reservations = sa.Table(
    "reservations", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=True, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Hash of (caller, Idempotency-Key): a retried request finds its reservation even when the
    # server died between committing it and recording the HTTP response.
    sa.Column("idempotency_scope", sa.String(64), nullable=True, unique=True),
    sa.Index("ix_reservations_status_expires_at", "status", "expires_at"),
)

# A reservation's rows, keyed SKU-first so that they could live on their SKU's shard beside
# its stock (docs/sharding.md); no foreign key to `reservations` for the same reason (they are
# written in the reservation's own transaction). Read by reservation through its index.
reservation_lines = sa.Table(
    "reservation_lines", metadata,
    sa.Column("reservation_id", sa.String(36), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("sku", "reservation_id"),  # serves lookups by sku too
    sa.Index("ix_reservation_lines_reservation_id", "reservation_id"),
)

reservation_allocations = sa.Table(
    "reservation_allocations", metadata,
    sa.Column("reservation_id", sa.String(36), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("location", sa.String(64), nullable=False),
    sa.Column("lot", sa.String(64), nullable=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("sku", "reservation_id", "position"),
    sa.Index("ix_reservation_allocations_reservation_id", "reservation_id"),
)


def _buckets(row: Any) -> Buckets:
    return Buckets(**{name: getattr(row, name) for name in Buckets().as_dict()})


# ---------------------------------------------------------------------------------------------
# Locations and channels


async def insert_location(conn: AsyncConnection, id: str, name: str, kind: str,
                          now: datetime) -> bool:
    """Insert a location and append it to the `web` channel; False when the id exists."""
    if await conn.scalar(sa.select(locations.c.id).where(locations.c.id == id)):
        return False
    await conn.execute(locations.insert().values(id=id, name=name, kind=kind, created_at=now))
    last = await conn.scalar(sa.select(sa.func.max(channel_locations.c.priority)).where(
        channel_locations.c.channel_id == "web"))
    await conn.execute(channel_locations.insert().values(
        channel_id="web", location_id=id, priority=(last or 0) + 1))
    return True


async def list_locations(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(locations).order_by(locations.c.id))
    return [dict(row._mapping) for row in rows]


async def existing_locations(conn: AsyncConnection, ids: Iterable[str]) -> set[str]:
    rows = await conn.execute(sa.select(locations.c.id).where(locations.c.id.in_(list(ids))))
    return {row.id for row in rows}


async def get_channel(conn: AsyncConnection, channel_id: str) -> Channel | None:
    row = (await conn.execute(sa.select(channels).where(channels.c.id == channel_id))).first()
    if row is None:
        return None
    located = await conn.execute(
        sa.select(channel_locations.c.location_id)
        .where(channel_locations.c.channel_id == channel_id)
        .order_by(channel_locations.c.priority))
    return Channel(row.id, row.name, row.min_shelf_life_days, [r.location_id for r in located],
                   row.buffer, row.cap)


async def save_channel(conn: AsyncConnection, channel: Channel) -> None:
    await upsert(conn, channels, [{"id": channel.id, "name": channel.name,
                                   "min_shelf_life_days": channel.min_shelf_life_days,
                                   "buffer": channel.buffer, "cap": channel.cap}], ["id"])
    await conn.execute(channel_locations.delete().where(
        channel_locations.c.channel_id == channel.id))
    if channel.locations:
        await conn.execute(channel_locations.insert(), [
            {"channel_id": channel.id, "location_id": loc, "priority": i}
            for i, loc in enumerate(channel.locations, start=1)])


async def skus_at(conn: AsyncConnection, locations: Iterable[str]) -> set[str]:
    rows = await conn.execute(sa.select(stock_levels.c.sku).distinct()
                              .where(stock_levels.c.location.in_(list(locations))))
    return {row.sku for row in rows}


async def list_channels(conn: AsyncConnection) -> list[str]:
    return [row.id for row in await conn.execute(sa.select(channels.c.id).order_by(channels.c.id))]


# ---------------------------------------------------------------------------------------------
# Items: the per-SKU lock and policy


# The statements of every stock transaction, built once (see `platform.db.prebuilt`).
_LOCK_ITEMS = prebuilt(lambda dialect: sa.select(items).where(any_of(dialect, items.c.sku, "skus"))
                       .order_by(items.c.sku).with_for_update())
_BUMP_ITEMS = prebuilt(lambda dialect: items.update().where(any_of(dialect, items.c.sku, "skus"))
                       .values(version=items.c.version + 1)
                       .returning(items.c.sku, items.c.version))


async def lock_items(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, Item]:
    """Create missing item rows and lock all of them, always in sku order (no deadlocks)."""
    ordered = sorted(set(skus))
    query, wanted = _LOCK_ITEMS(conn), {"skus": ordered}
    found = {row.sku: _item(row) for row in await conn.execute(query, wanted)}
    if len(found) < len(ordered):  # first change of a SKU: create its row, then lock them all
        await insert_missing(conn, items, [{"sku": sku, "version": 0} for sku in ordered])
        found = {row.sku: _item(row) for row in await conn.execute(query, wanted)}
    return found


def _item(row: Any) -> Item:
    return Item(row.sku, row.version, row.per_customer_limit, row.low_stock_threshold)


_GET_ITEMS = prebuilt(lambda dialect: sa.select(items).where(any_of(dialect, items.c.sku, "skus")))


async def get_items(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, Item]:
    rows = await conn.execute(_GET_ITEMS(conn), {"skus": list(skus)})
    return {row.sku: _item(row) for row in rows}


async def bump_items(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, int]:
    """Add one to each SKU's version (once per transaction); returns the new versions."""
    wanted = sorted(set(skus))
    if not wanted:
        return {}
    rows = await conn.execute(_BUMP_ITEMS(conn), {"skus": wanted})
    return {row.sku: row.version for row in rows}


async def set_policy(conn: AsyncConnection, sku: str, per_customer_limit: int | None,
                     low_stock_threshold: int | None) -> int:
    """Set the policy and bump the SKU's version; returns the new version."""
    version = await conn.scalar(items.update().where(items.c.sku == sku).values(
        per_customer_limit=per_customer_limit, low_stock_threshold=low_stock_threshold,
        version=items.c.version + 1).returning(items.c.version))
    assert version is not None  # the caller locked (so created) the row
    return int(version)


# ---------------------------------------------------------------------------------------------
# Stock levels and lots


# The lots' columns beside their level's in `load_levels`: prefixed, the names would clash.
_LOT_COLUMNS = [lots.c.code.label("lot_code"), lots.c.expires_on.label("lot_expires_on"),
                *[lots.c[name].label(f"lot_{name}") for name in Buckets().as_dict()]]
_LEVELS_WITH_LOTS = stock_levels.outerjoin(lots, sa.and_(
    lots.c.sku == stock_levels.c.sku, lots.c.location == stock_levels.c.location))
_LOAD_LEVELS = prebuilt(lambda dialect: sa.select(stock_levels, *_LOT_COLUMNS)
                        .select_from(_LEVELS_WITH_LOTS)
                        .where(any_of(dialect, stock_levels.c.sku, "skus")))
# The values to set are given at execution (the bucket columns, version, last_hash).
_UPDATE_LEVEL = stock_levels.update().where(
    stock_levels.c.sku == sa.bindparam("at_sku"),
    stock_levels.c.location == sa.bindparam("at_location"),
    stock_levels.c.version == sa.bindparam("at_version"))


async def load_levels(conn: AsyncConnection, skus: Iterable[str]) -> dict[tuple[str, str],
                                                                            StockLevel]:
    """The SKUs' levels with their lots, in one statement: each level comes once per lot
    (once, lot columns NULL, without lots), the rows grouped here."""
    rows = await conn.execute(_LOAD_LEVELS(conn), {"skus": list(set(skus))})
    levels: dict[tuple[str, str], StockLevel] = {}
    for r in rows:
        key = (r.sku, r.location)
        level = levels.get(key)
        if level is None:
            level = levels[key] = StockLevel(r.sku, r.location, _buckets(r), r.version,
                                             r.last_hash)
        if r.lot_code is not None:
            level.lots[r.lot_code] = Lot(r.lot_code, r.lot_expires_on, _lot_buckets(r))
    return levels


def _lot_buckets(row: Any) -> Buckets:
    return Buckets(**{name: getattr(row, f"lot_{name}") for name in Buckets().as_dict()})


async def all_levels(conn: AsyncConnection) -> dict[tuple[str, str], StockLevel]:
    skus = [row.sku for row in await conn.execute(sa.select(stock_levels.c.sku).distinct())]
    return await load_levels(conn, skus)


async def oversold_units(conn: AsyncConnection) -> int:
    """Units held (reserved + committed) beyond on hand, summed over the levels where that is
    so: 0 in a database only the model wrote."""
    excess = stock_levels.c.reserved + stock_levels.c.committed - stock_levels.c.on_hand
    found = await conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(excess), 0))
                              .where(excess > 0))
    return int(found or 0)


async def save_levels(conn: AsyncConnection, levels: Sequence[StockLevel],
                      versions_before: dict[tuple[str, str], int]) -> None:
    """Write changed levels with a compare-and-swap on the version they were read at."""
    for level in levels:
        values = level_values(level)
        before = versions_before[(level.sku, level.location)]
        if before == 0:
            await conn.execute(stock_levels.insert().values(
                sku=level.sku, location=level.location, **values))
        else:
            result = await conn.execute(_UPDATE_LEVEL, {
                "at_sku": level.sku, "at_location": level.location, "at_version": before,
                **values})
            if result.rowcount != 1:
                raise VersionConflict(f"stock level {level.sku}@{level.location} changed")
    await upsert(conn, lots, lot_rows(levels), ["sku", "location", "code"])


def level_values(level: StockLevel) -> dict[str, Any]:
    """What a level's row holds besides its key: its buckets, version and chain head."""
    return {**level.buckets.as_dict(), "version": level.version, "last_hash": level.last_hash}


def lot_rows(levels: Sequence[StockLevel]) -> list[dict[str, Any]]:
    return [{"sku": level.sku, "location": level.location, "code": lot.code,
             "expires_on": lot.expires_on, **lot.buckets.as_dict()}
            for level in levels for lot in level.lots.values()]


_LOT_FREE = lots.c.on_hand - lots.c.reserved - lots.c.committed - lots.c.unsellable


async def skus_with_expired_lots(conn: AsyncConnection, today: date) -> list[str]:
    rows = await conn.execute(sa.select(lots.c.sku).where(lots.c.expires_on <= today,
                                                          _LOT_FREE > 0)
                              .distinct().order_by(lots.c.sku))
    return [row.sku for row in rows]


async def lots_expiring(conn: AsyncConnection, after: date, before: date,
                        at: Iterable[str]) -> list[tuple[str, str, Lot]]:
    """(sku, location, lot) of the lots holding free units at one of the locations `at`,
    expiring after `after` and before `before`."""
    rows = await conn.execute(sa.select(lots).where(
        lots.c.expires_on > after, lots.c.expires_on < before, _LOT_FREE > 0,
        lots.c.location.in_(list(at))).order_by(lots.c.sku, lots.c.location, lots.c.code))
    return [(r.sku, r.location, Lot(r.code, r.expires_on, _buckets(r))) for r in rows]


async def shelf_life_channels(conn: AsyncConnection) -> list[Channel]:
    """The channels that ask for a minimum remaining shelf life."""
    ids = await conn.execute(sa.select(channels.c.id).where(channels.c.min_shelf_life_days > 0)
                             .order_by(channels.c.id))
    found = [await get_channel(conn, row.id) for row in ids]
    return [channel for channel in found if channel is not None]


# ---------------------------------------------------------------------------------------------
# The ledger


async def insert_entries(conn: AsyncConnection, entries: Sequence[LedgerEntry]) -> None:
    if entries:
        await insert_rows(conn, ledger, [entry_row(e) for e in entries])


def entry_row(e: LedgerEntry) -> dict[str, Any]:
    return {"sku": e.sku, "location": e.location, "version": e.version, "kind": e.kind,
            **e.delta.as_dict(), "lot": e.lot, "lot_expires_on": e.lot_expires_on,
            **_context_columns(e.context), "at": e.at, "prev_hash": e.prev_hash,
            "hash": e.hash}


def _context_columns(ctx: Provenance) -> dict[str, str | None]:
    return {"actor": ctx.actor, "reason": ctx.reason, "correlation_id": ctx.correlation_id,
            "idempotency_key": ctx.idempotency_key, "reference": ctx.reference}


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        sku=row.sku, location=row.location, version=row.version, kind=row.kind,
        delta=_buckets(row), lot=row.lot, lot_expires_on=row.lot_expires_on,
        context=EntryContext(row.actor, row.reason, row.correlation_id, row.idempotency_key,
                             row.reference),
        at=row.at, prev_hash=row.prev_hash, hash=row.hash)


async def ledger_entries(conn: AsyncConnection, sku: str | None = None, limit: int | None = None,
                         after_version: int | None = None,
                         location: str | None = None) -> list[LedgerEntry]:
    query = sa.select(ledger).order_by(ledger.c.sku, ledger.c.location, ledger.c.version)
    if sku is not None:
        query = query.where(ledger.c.sku == sku)
    if location is not None:
        query = query.where(ledger.c.location == location)
    if after_version is not None:
        query = query.where(ledger.c.version > after_version)
    if limit is not None:
        query = query.limit(limit)
    return [_entry(row) for row in await conn.execute(query)]


async def stream_ledger(conn: AsyncConnection) -> AsyncIterator[LedgerEntry]:
    """All entries in fold order, streamed so a large ledger is not held in memory at once."""
    result = await conn.stream(sa.select(ledger).order_by(ledger.c.sku, ledger.c.location,
                                                          ledger.c.version))
    async for row in result:
        yield _entry(row)


# ---------------------------------------------------------------------------------------------
# Reservations


async def references_of(conn: AsyncConnection, sku: str, references: Iterable[str]) -> set[str]:
    """Which of these references the SKU's ledger holds an entry for."""
    wanted = list(references)
    if not wanted:
        return set()
    rows = await conn.execute(sa.select(ledger.c.reference).distinct().where(
        ledger.c.sku == sku, ledger.c.reference.in_(wanted)))
    return {row.reference for row in rows}


async def has_reference(conn: AsyncConnection, sku: str, reference: str) -> bool:
    """Whether the SKU's ledger holds an entry made for `reference`."""
    found = await conn.scalar(sa.select(ledger.c.version).where(
        ledger.c.sku == sku, ledger.c.reference == reference).limit(1))
    return found is not None


async def insert_reservations(conn: AsyncConnection,
                              created: Sequence[tuple[Reservation, str | None]]) -> None:
    """Insert new reservations (each with its idempotency scope): one statement per table."""
    if not created:
        return
    booked, lines, allocations = reservation_rows(created)
    await insert_rows(conn, reservations, booked)
    await insert_rows(conn, reservation_lines, lines)
    await insert_rows(conn, reservation_allocations, allocations)


Rows = list[dict[str, Any]]


def reservation_rows(created: Sequence[tuple[Reservation, str | None]]
                     ) -> tuple[Rows, Rows, Rows]:
    """The rows of new reservations (each with its idempotency scope): reservations, their
    lines, their allocations."""
    return ([{"id": r.id, "channel": r.channel, "customer_id": r.customer_id,
              "status": r.status.value, "created_at": r.created_at, "expires_at": r.expires_at,
              "updated_at": r.created_at, "idempotency_scope": scope} for r, scope in created],
            [{"reservation_id": r.id, "sku": line.sku, "quantity": line.quantity}
             for r, _ in created for line in r.lines],
            [{"reservation_id": r.id, "position": i, "sku": a.sku, "location": a.location,
              "lot": a.lot, "quantity": a.quantity}
             for r, _ in created for i, a in enumerate(r.allocations)])


async def reservation_ids_for(conn: AsyncConnection, scopes: Iterable[str]) -> dict[str, str]:
    """The reservation each idempotency scope already made, for the scopes that made one."""
    wanted = list(scopes)
    if not wanted:
        return {}
    rows = await conn.execute(sa.select(reservations.c.idempotency_scope, reservations.c.id)
                              .where(reservations.c.idempotency_scope.in_(wanted)))
    return {row.idempotency_scope: row.id for row in rows}


# A reservation's reads and its transition, built once (see `platform.db.prebuilt`).
_RESERVATION = sa.select(reservations).where(reservations.c.id == sa.bindparam("id"))
_RESERVATION_LINES = sa.select(reservation_lines).where(
    reservation_lines.c.reservation_id == sa.bindparam("id")).order_by(reservation_lines.c.sku)
_RESERVATION_ALLOCATIONS = sa.select(reservation_allocations).where(
    reservation_allocations.c.reservation_id == sa.bindparam("id")).order_by(
    reservation_allocations.c.position)
_RESERVATION_SKUS = sa.union(
    sa.select(reservation_lines.c.sku).where(
        reservation_lines.c.reservation_id == sa.bindparam("id")),
    sa.select(reservation_allocations.c.sku).where(
        reservation_allocations.c.reservation_id == sa.bindparam("id")))
_TRANSITION = reservations.update().where(
    reservations.c.id == sa.bindparam("at_id"),
    reservations.c.status == sa.bindparam("status_before"))


async def get_reservation(conn: AsyncConnection, reservation_id: str) -> Reservation | None:
    wanted = {"id": reservation_id}
    row = (await conn.execute(_RESERVATION, wanted)).first()
    if row is None:
        return None
    lines = await conn.execute(_RESERVATION_LINES, wanted)
    allocs = await conn.execute(_RESERVATION_ALLOCATIONS, wanted)
    return Reservation(
        id=row.id, channel=row.channel, customer_id=row.customer_id,
        status=ReservationStatus(row.status), created_at=row.created_at,
        expires_at=row.expires_at,
        lines=[Line(r.sku, r.quantity) for r in lines],
        allocations=[Allocation(a.sku, a.location, a.lot, a.quantity) for a in allocs])


# The same reads for a batch of reservations (the transitions' group commit).
_RESERVATIONS = prebuilt(lambda dialect: sa.select(reservations).where(
    any_of(dialect, reservations.c.id, "ids")))
_LINES_OF = prebuilt(lambda dialect: sa.select(reservation_lines).where(
    any_of(dialect, reservation_lines.c.reservation_id, "ids")).order_by(
    reservation_lines.c.reservation_id, reservation_lines.c.sku))
_ALLOCATIONS_OF = prebuilt(lambda dialect: sa.select(reservation_allocations).where(
    any_of(dialect, reservation_allocations.c.reservation_id, "ids")).order_by(
    reservation_allocations.c.reservation_id, reservation_allocations.c.position))
_SKUS_OF = prebuilt(lambda dialect: sa.union(
    sa.select(reservation_lines.c.reservation_id, reservation_lines.c.sku).where(
        any_of(dialect, reservation_lines.c.reservation_id, "ids")),
    sa.select(reservation_allocations.c.reservation_id, reservation_allocations.c.sku).where(
        any_of(dialect, reservation_allocations.c.reservation_id, "ids"))))


def _whole(dialect: str) -> sa.Select[Any]:
    """PostgreSQL: reservations with their lines and allocations as JSON arrays, one row each."""
    lines, allocations = reservation_lines, reservation_allocations
    line = sa.func.json_build_array(lines.c.sku, lines.c.quantity)
    allocation = sa.func.json_build_array(allocations.c.sku, allocations.c.location,
                                          allocations.c.lot, allocations.c.quantity)
    return sa.select(
        reservations,
        sa.select(sa.func.json_agg(aggregate_order_by(line, lines.c.sku)))
        .where(lines.c.reservation_id == reservations.c.id).scalar_subquery().label("lines"),
        sa.select(sa.func.json_agg(aggregate_order_by(allocation, allocations.c.position)))
        .where(allocations.c.reservation_id == reservations.c.id).scalar_subquery()
        .label("allocations"),
    ).where(any_of(dialect, reservations.c.id, "ids"))


_WHOLE = prebuilt(_whole)


async def get_reservations(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, Reservation]:
    """`get_reservation` of many, those that exist, by id: one statement on PostgreSQL (the
    lines and allocations aggregated per reservation), three elsewhere."""
    wanted = {"ids": sorted(set(ids))}
    if conn.dialect.name == "postgresql":
        return {row.id: _reservation(
            row, [Line(sku, quantity) for sku, quantity in row.lines or ()],
            [Allocation(sku, location, lot, quantity)
             for sku, location, lot, quantity in row.allocations or ()])
            for row in await conn.execute(_WHOLE(conn), wanted)}
    rows = list(await conn.execute(_RESERVATIONS(conn), wanted))
    lines: dict[str, list[Line]] = {}
    for r in await conn.execute(_LINES_OF(conn), wanted):
        lines.setdefault(r.reservation_id, []).append(Line(r.sku, r.quantity))
    allocations: dict[str, list[Allocation]] = {}
    for a in await conn.execute(_ALLOCATIONS_OF(conn), wanted):
        allocations.setdefault(a.reservation_id, []).append(
            Allocation(a.sku, a.location, a.lot, a.quantity))
    return {row.id: _reservation(row, lines.get(row.id, []), allocations.get(row.id, []))
            for row in rows}


def _reservation(row: Any, lines: list[Line], allocations: list[Allocation]) -> Reservation:
    return Reservation(id=row.id, channel=row.channel, customer_id=row.customer_id,
                       status=ReservationStatus(row.status), created_at=row.created_at,
                       expires_at=row.expires_at, lines=lines, allocations=allocations)


async def skus_of_reservations(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, set[str]]:
    """`reservation_skus` of many in one statement (a reservation that does not exist: absent)."""
    found: dict[str, set[str]] = {}
    for row in await conn.execute(_SKUS_OF(conn), {"ids": sorted(set(ids))}):
        found.setdefault(row.reservation_id, set()).add(row.sku)
    return found


async def update_reservation(conn: AsyncConnection, r: Reservation,
                             status_before: ReservationStatus, now: datetime) -> None:
    """Conditional on the status it was read in, so a transition happens exactly once."""
    result = await conn.execute(_TRANSITION, {
        "at_id": r.id, "status_before": status_before.value, "status": r.status.value,
        "expires_at": r.expires_at, "updated_at": now})
    if result.rowcount != 1:
        raise VersionConflict(f"reservation {r.id} changed concurrently")


async def held_by_customers(conn: AsyncConnection, wanted: Iterable[tuple[str, str]],
                            now: datetime) -> dict[tuple[str, str], int]:
    """Units of each (customer, SKU) held in live or committed reservations."""
    pairs = set(wanted)
    # Bought counts as held for good: a limit is per drop, not per open checkout.
    live = sa.or_(reservations.c.status.in_([ReservationStatus.COMMITTED.value,
                                             ReservationStatus.SHIPPED.value]),
                  sa.and_(reservations.c.status == ReservationStatus.ACTIVE.value,
                          reservations.c.expires_at > now))
    rows = await conn.execute(
        sa.select(reservations.c.customer_id, reservation_lines.c.sku,
                  sa.func.sum(reservation_lines.c.quantity).label("n"))
        .join(reservations, reservations.c.id == reservation_lines.c.reservation_id)
        .where(reservations.c.customer_id.in_({customer for customer, _ in pairs}),
               reservation_lines.c.sku.in_({sku for _, sku in pairs}), live)
        .group_by(reservations.c.customer_id, reservation_lines.c.sku))
    return {(row.customer_id, row.sku): int(row.n) for row in rows
            if (row.customer_id, row.sku) in pairs}


async def expired_reservation_ids(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    rows = await conn.execute(
        sa.select(reservations.c.id).where(
            reservations.c.status == ReservationStatus.ACTIVE.value,
            reservations.c.expires_at <= now)
        .order_by(reservations.c.expires_at).limit(limit))
    return [row.id for row in rows]


async def reservation_skus(conn: AsyncConnection, reservation_id: str) -> set[str]:
    """The SKUs a reservation holds: its lines' and its allocations' (a bundle's components)."""
    return {r.sku for r in await conn.execute(_RESERVATION_SKUS, {"id": reservation_id})}


# ---------------------------------------------------------------------------------------------
# Reconciliation: what a check of some SKUs reads


# Key ranges per statement: SQLite parses an OR chain into a tree as deep as it is long, and
# refuses one deeper than 1,000.
RANGES_PER_STATEMENT = 200


async def ledger_after(conn: AsyncConnection, skus: Iterable[str],
                       after: dict[tuple[str, str], int]) -> list[LedgerEntry]:
    """The SKUs' entries after each level's version in `after` (all of a level not in it), in
    fold order: a key range per checkpointed level, so a check reads what is new."""
    wanted = set(skus)
    if conn.dialect.name == "postgresql":
        return await _ledger_after_by_arrays(conn, wanted, after)
    known: dict[str, list[str]] = {}
    for sku, location in after:
        if sku in wanted:
            known.setdefault(sku, []).append(location)
    c = ledger.c
    ranges = [sa.and_(c.sku == sku, c.location == location, c.version > version)
              for (sku, location), version in after.items() if sku in wanted]
    ranges += [sa.and_(c.sku == sku, c.location.not_in(known[sku]))
               for sku in sorted(wanted & known.keys())]
    entries: list[LedgerEntry] = []
    unseen = sorted(wanted - known.keys())  # never checked: their whole ledgers, by one IN
    if unseen:
        entries += map(_entry, await conn.execute(sa.select(ledger).where(
            among(conn, c.sku, unseen))))
    for start in range(0, len(ranges), RANGES_PER_STATEMENT):
        rows = await conn.execute(sa.select(ledger).where(
            sa.or_(*ranges[start:start + RANGES_PER_STATEMENT])))
        entries += map(_entry, rows)
    return sorted(entries, key=lambda e: (e.sku, e.location, e.version))


async def expect_on(conn: AsyncConnection, sku: str, location: str,
                    expected_on: date | None) -> None:
    """Record (or, with None, forget) when the level's incoming units should arrive."""
    if expected_on is None:
        await conn.execute(expected_receipts.delete().where(
            expected_receipts.c.sku == sku, expected_receipts.c.location == location))
        return
    await upsert(conn, expected_receipts, [{"sku": sku, "location": location,
                                            "expected_on": expected_on}], ["sku", "location"])


async def receipts_expected(conn: AsyncConnection, skus: Iterable[str]
                            ) -> dict[tuple[str, str], date]:
    rows = await conn.execute(sa.select(expected_receipts).where(
        among(conn, expected_receipts.c.sku, sorted(set(skus)))))
    return {(row.sku, row.location): row.expected_on for row in rows}


async def channels_of(conn: AsyncConnection, reservation_ids: Iterable[str]) -> dict[str, str]:
    """The channel of each reservation (ledger entries name a reservation by its id)."""
    ids = sorted(set(reservation_ids))
    if not ids:
        return {}
    rows = await conn.execute(_CHANNELS_OF(conn), {"ids": ids})
    return {row.id: row.channel for row in rows}


_CHANNELS_OF = prebuilt(lambda dialect: sa.select(reservations.c.id, reservations.c.channel)
                        .where(any_of(dialect, reservations.c.id, "ids")))


# `_ledger_after_by_arrays`' two statements, built once (PostgreSQL only: see `prebuilt`).
_CHECKED = array_rows("k", sku=(ledger.c.sku, "skus"), location=(ledger.c.location, "locations"),
                      version=(ledger.c.version, "versions"))
_LEDGER_AFTER_VERSIONS = sa.select(ledger).join(_CHECKED, sa.and_(
    ledger.c.sku == _CHECKED.c.sku, ledger.c.location == _CHECKED.c.location,
    ledger.c.version > _CHECKED.c.version))
_LEVELS = array_rows("k", sku=(ledger.c.sku, "skus"), location=(ledger.c.location, "locations"))
_LEDGER_OF_UNCHECKED = (
    sa.select(ledger).outerjoin(_LEVELS, sa.and_(ledger.c.sku == _LEVELS.c.sku,
                                                 ledger.c.location == _LEVELS.c.location))
    .where(any_of("postgresql", ledger.c.sku, "wanted"), _LEVELS.c.sku.is_(None)))


async def _ledger_after_by_arrays(conn: AsyncConnection, wanted: set[str],
                                  after: dict[tuple[str, str], int]) -> list[LedgerEntry]:
    """`ledger_after` in two statements of fixed text whatever the number of SKUs: the new
    entries of each checkpointed level (a range scan each), and every entry of the SKUs' other
    levels (never checkpointed)."""
    checked = [(sku, location, version) for (sku, location), version in after.items()
               if sku in wanted]
    keys = {"skus": [sku for sku, _, _ in checked],
            "locations": [location for _, location, _ in checked]}
    entries: list[LedgerEntry] = []
    if checked:
        entries += map(_entry, await conn.execute(
            _LEDGER_AFTER_VERSIONS, {**keys, "versions": [version for _, _, version in checked]}))
    entries += map(_entry, await conn.execute(
        _LEDGER_OF_UNCHECKED, {**keys, "wanted": sorted(wanted)}))
    return sorted(entries, key=lambda e: (e.sku, e.location, e.version))


async def holds(conn: AsyncConnection, skus: Iterable[str]) -> dict[tuple[str, str],
                                                                     tuple[int, int]]:
    """(reserved, committed) by level, as the reservations hold them: active reservations'
    allocations are reserved (until the sweeper expires them), committed ones' committed."""
    status = reservations.c.status
    rows = await conn.execute(
        sa.select(reservation_allocations.c.sku, reservation_allocations.c.location,
                  sa.func.sum(sa.case((status == ReservationStatus.ACTIVE.value,
                                       reservation_allocations.c.quantity), else_=0)),
                  sa.func.sum(sa.case((status == ReservationStatus.COMMITTED.value,
                                       reservation_allocations.c.quantity), else_=0)))
        .join(reservations, reservations.c.id == reservation_allocations.c.reservation_id)
        .where(reservation_allocations.c.sku.in_(list(set(skus))),
               status.in_([ReservationStatus.ACTIVE.value, ReservationStatus.COMMITTED.value]))
        .group_by(reservation_allocations.c.sku, reservation_allocations.c.location))
    return {(sku, location): (int(reserved or 0), int(committed or 0))
            for sku, location, reserved, committed in rows}


Allocations = list[tuple[str, str, int]]  # (sku, location, quantity)


async def reservations_holding(conn: AsyncConnection, *, skus: Iterable[str] = (),
                               ids: Iterable[str] = (), statuses: Sequence[str] = (),
                               since: datetime | None = None, whenever: Sequence[str] = ()
                               ) -> dict[str, tuple[str, Allocations]]:
    """Reservations with allocations on these SKUs (or with these ids), in these statuses,
    changed after `since` unless their status is one of `whenever`: id -> (status,
    allocations). What the reconciler compares with the orders that hold them."""
    query = (sa.select(reservations.c.id, reservations.c.status, reservation_allocations.c.sku,
                       reservation_allocations.c.location, reservation_allocations.c.quantity)
             .join(reservations, reservations.c.id == reservation_allocations.c.reservation_id))
    wanted_skus, wanted_ids = list(set(skus)), list(set(ids))
    if wanted_skus:
        query = query.where(reservation_allocations.c.sku.in_(wanted_skus))
    if wanted_ids:
        query = query.where(reservations.c.id.in_(wanted_ids))
    if not wanted_skus and not wanted_ids:
        return {}
    if statuses:
        query = query.where(reservations.c.status.in_(list(statuses)))
    if since is not None:
        query = query.where(sa.or_(reservations.c.updated_at > since,
                                   reservations.c.status.in_(list(whenever))))
    found: dict[str, tuple[str, Allocations]] = {}
    for row in await conn.execute(query):
        found.setdefault(row.id, (row.status, []))[1].append(
            (row.sku, row.location, int(row.quantity)))
    return found


async def skus_after(conn: AsyncConnection, after: str | None, limit: int) -> list[str]:
    """Stocked SKUs in key order after `after`: a sweep's next stretch."""
    query = sa.select(stock_levels.c.sku).distinct().order_by(stock_levels.c.sku).limit(limit)
    if after is not None:
        query = query.where(stock_levels.c.sku > after)
    return list((await conn.execute(query)).scalars())


# -- a customer's data (export and erasure) -----------------------------------------------------

PERSONAL_TABLES = frozenset({"reservations"})


async def export_customer(conn: AsyncConnection, customer_id: str) -> list[dict[str, Any]]:
    held = await rows_where(conn, reservations.c.customer_id, customer_id)
    for reservation in held:
        reservation["lines"] = await rows_where(conn, reservation_lines.c.reservation_id,
                                                reservation["id"])
    return held


async def pseudonymise_customer(conn: AsyncConnection, customer_id: str,
                                pseudonym: str) -> None:
    """Reservations stay (the ledger's entries reference them), naming the pseudonym; the
    idempotency scope goes (it hashes the customer's name with their key)."""
    await set_where(conn, reservations.c.customer_id, customer_id, customer_id=pseudonym,
                    idempotency_scope=None)
