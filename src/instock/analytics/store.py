"""Analytics persistence: hourly facts (partitioned by month on PostgreSQL), the levels and
in-stock periods the fold keeps, nothing else.

On PostgreSQL `analytics_facts` is declared `PARTITION BY RANGE (hour)`, one partition a month
(`analytics_facts_y2026m12`): a month's partition is created before the first row of that month
is written (and ahead by the maintenance duty), and retention drops whole months, which costs
nothing like a DELETE of millions of rows. SQLite has the same table, unpartitioned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.analytics.model import COUNTERS, NO_LOCATION, FactKey, Level, Period
from instock.platform.db import (
    UTCDateTime,
    among,
    any_of,
    insert_for,
    metadata,
    prebuilt,
    upsert,
)

facts = sa.Table(
    "analytics_facts", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("channel", sa.String(64), primary_key=True),
    sa.Column("location", sa.String(64), primary_key=True),
    sa.Column("hour", UTCDateTime, primary_key=True),
    *[sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTERS],
    postgresql_partition_by="RANGE (hour)",
)

LEVEL_BUCKETS = ("on_hand", "reserved", "committed", "safety_stock", "unsellable", "incoming")
# When a period's available units first fell to 75, 50 and 25 % of what there was to sell.
SOLD_AT = ("sold_25_at", "sold_50_at", "sold_75_at")

levels = sa.Table(
    "analytics_levels", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("location", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    *[sa.Column(name, sa.BigInteger, nullable=False)
      for name in LEVEL_BUCKETS],
)

periods = sa.Table(
    "analytics_in_stock", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("started_at", UTCDateTime, primary_key=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("units", sa.BigInteger, nullable=False, server_default="0"),
    *[sa.Column(column, UTCDateTime, nullable=True) for column in SOLD_AT],
)


def _period(row: Any) -> Period:
    return Period(row.sku, row.started_at, row.ended_at, row.units,
                  tuple(row._mapping[column] for column in SOLD_AT))


# The last stock-out alert of each SKU still at risk: an alert is published again only when
# the projection gets worse or the receipt moves.
alerts = sa.Table(
    "analytics_alerts", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("stockout_on", sa.Date, nullable=False),
    sa.Column("receipt_on", sa.Date, nullable=True),
    sa.Column("alerted_at", UTCDateTime, nullable=False),
)

PARTITION = re.compile(r"^analytics_facts_y(\d{4})m(\d{2})$")


def partition_name(month: datetime) -> str:
    return f"analytics_facts_y{month.year:04d}m{month.month:02d}"


def month_of(at: datetime) -> datetime:
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(month: datetime) -> datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)


PARTITION_LOCK = 746_312_021  # any fixed number: the advisory lock of partition creation


class Partitions:
    """The months that have a partition, as this process knows them (asked once)."""

    def __init__(self) -> None:
        self.known: set[datetime] | None = None

    async def ensure(self, conn: AsyncConnection, months: Iterable[datetime]) -> list[str]:
        """Create the partitions of `months` that do not exist yet: their names."""
        if conn.dialect.name != "postgresql":
            return []
        if self.known is None:
            self.known = set(await existing_months(conn))
        created = []
        missing = sorted(set(months) - self.known)
        if missing:
            # `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent creator (two workers'
            # upkeep, or consumers, at a month's start): one of them fails with "already
            # exists". Creators take turns, and each sees what the one before committed.
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": PARTITION_LOCK})
        for month in missing:
            name = partition_name(month)
            await conn.execute(sa.text(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF analytics_facts "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{next_month(month).isoformat()}')"))
            self.known.add(month)
            created.append(name)
        return created

    async def drop_before(self, conn: AsyncConnection, month: datetime) -> list[str]:
        """Retention: drop every month before `month` (on SQLite, delete its rows)."""
        if conn.dialect.name != "postgresql":
            await conn.execute(facts.delete().where(facts.c.hour < month))
            return []
        dropped = []
        for old in sorted(m for m in await existing_months(conn) if m < month):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {partition_name(old)}"))
            dropped.append(partition_name(old))
            if self.known is not None:
                self.known.discard(old)
        return dropped


async def existing_months(conn: AsyncConnection) -> list[datetime]:
    rows = await conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'analytics_facts'"))
    found = [PARTITION.match(row.relname) for row in rows]
    return [datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC) for m in found if m]


def _add_facts(dialect: str) -> Any:
    statement = insert_for(dialect, facts)
    return statement.on_conflict_do_update(
        index_elements=["sku", "channel", "location", "hour"],
        set_={name: facts.c[name] + statement.excluded[name] for name in COUNTERS})


_ADD_FACTS = prebuilt(_add_facts)


async def add_facts(conn: AsyncConnection, counts: Mapping[FactKey, Mapping[str, int]]) -> None:
    """Add the counts to their hours' facts (a row is created at its first count)."""
    rows = [{"sku": key.sku, "channel": key.channel, "location": key.location,
             "hour": key.hour, **{name: row.get(name, 0) for name in COUNTERS}}
            for key, row in counts.items() if any(row.values())]
    if rows:
        await conn.execute(_ADD_FACTS(conn), rows)


async def sums(conn: AsyncConnection, sku: str, since: datetime,
               until: datetime | None = None) -> dict[str, int]:
    """Each counter of the SKU summed over the hours from `since` (until `until`)."""
    query = sa.select(*[sa.func.coalesce(sa.func.sum(facts.c[name]), 0).label(name)
                        for name in COUNTERS]).where(facts.c.sku == sku, facts.c.hour >= since)
    if until is not None:
        query = query.where(facts.c.hour < until)
    row = (await conn.execute(query)).one()
    return {name: int(row._mapping[name]) for name in COUNTERS}


async def sold_by_hour(conn: AsyncConnection, sku: str, since: datetime
                       ) -> list[tuple[datetime, int]]:
    """The SKU's units sold in each hour from `since` that sold any, oldest first."""
    rows = await conn.execute(
        sa.select(facts.c.hour, sa.func.sum(facts.c.sold).label("sold"))
        .where(facts.c.sku == sku, facts.c.hour >= since, facts.c.sold > 0)
        .group_by(facts.c.hour).order_by(facts.c.hour))
    return [(row.hour, int(row.sold)) for row in rows]


async def sold_by_sku(conn: AsyncConnection, since: datetime) -> dict[str, int]:
    """Units sold per SKU from `since` (SKUs that sold any)."""
    rows = await conn.execute(
        sa.select(facts.c.sku, sa.func.sum(facts.c.sold).label("sold"))
        .where(facts.c.hour >= since, facts.c.sold > 0).group_by(facts.c.sku))
    return {row.sku: int(row.sold) for row in rows}


async def every_level(conn: AsyncConnection) -> dict[str, list[Level]]:
    """Every level the fold has reached, by SKU."""
    found: dict[str, list[Level]] = {}
    for row in await conn.execute(sa.select(levels)):
        found.setdefault(row.sku, []).append(_level(row))
    return found


async def periods_reaching(conn: AsyncConnection, since: datetime) -> dict[str, list[Period]]:
    """Every SKU's in-stock periods that reach past `since`, by SKU."""
    found: dict[str, list[Period]] = {}
    for row in await conn.execute(sa.select(periods).where(
            sa.or_(periods.c.ended_at.is_(None), periods.c.ended_at > since))
            .order_by(periods.c.sku, periods.c.started_at)):
        found.setdefault(row.sku, []).append(_period(row))
    return found


async def load_levels(conn: AsyncConnection, skus: Iterable[str]
                      ) -> dict[tuple[str, str], Level]:
    rows = await conn.execute(_LOAD_LEVELS(conn), {"skus": sorted(skus)})
    return {(row.sku, row.location): _level(row) for row in rows}


# Read on every fold: built once (see `prebuilt`).
_LOAD_LEVELS = prebuilt(lambda dialect: sa.select(levels).where(
    any_of(dialect, levels.c.sku, "skus")))
_OPEN_PERIODS = prebuilt(lambda dialect: sa.select(periods).where(
    any_of(dialect, periods.c.sku, "skus"), periods.c.ended_at.is_(None)))


def _level(row: Any) -> Level:
    return Level(row.version, **{name: row._mapping[name] for name in LEVEL_BUCKETS})


async def save_levels(conn: AsyncConnection, found: Mapping[tuple[str, str], Level]) -> None:
    await upsert(conn, levels, [
        {"sku": sku, "location": location, "version": level.version,
         **{name: getattr(level, name) for name in LEVEL_BUCKETS}}
        for (sku, location), level in found.items()], ["sku", "location"])


async def open_periods(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, Period]:
    rows = await conn.execute(_OPEN_PERIODS(conn), {"skus": sorted(skus)})
    return {row.sku: _period(row) for row in rows}


async def save_periods(conn: AsyncConnection, found: Iterable[Period]) -> None:
    await upsert(conn, periods, [
        {"sku": p.sku, "started_at": p.start, "ended_at": p.end, "units": p.units,
         **dict(zip(SOLD_AT, p.sold_at, strict=True))} for p in found], ["sku", "started_at"])


async def periods_of(conn: AsyncConnection, sku: str, since: datetime) -> list[Period]:
    """The SKU's in-stock periods that reach past `since` (the open one included)."""
    rows = await conn.execute(sa.select(periods).where(
        periods.c.sku == sku,
        sa.or_(periods.c.ended_at.is_(None), periods.c.ended_at > since))
        .order_by(periods.c.started_at))
    return [_period(row) for row in rows]


async def last_periods(conn: AsyncConnection, sku: str, limit: int) -> list[Period]:
    """The SKU's latest in-stock periods (its drops), newest first."""
    rows = await conn.execute(sa.select(periods).where(periods.c.sku == sku)
                              .order_by(periods.c.started_at.desc()).limit(limit))
    return [_period(row) for row in rows]


async def lock_skus(conn: AsyncConnection, skus: Sequence[str]) -> None:
    """Hold the SKUs' analytics until the transaction ends (PostgreSQL: advisory locks taken
    in one order, so two holders never wait on each other; SQLite: its write transaction
    already excludes every other writer)."""
    if conn.dialect.name != "postgresql" or not skus:
        return
    await conn.execute(sa.text(
        "SELECT pg_advisory_xact_lock(:space, k) FROM "
        "(SELECT DISTINCT hashtext(s) AS k FROM unnest(CAST(:skus AS text[])) s ORDER BY k) q"),
        {"space": LOCK_SPACE, "skus": list(skus)})


LOCK_SPACE = 2101  # analytics' advisory locks, apart from anyone else's


async def forget(conn: AsyncConnection, skus: Sequence[str], since: datetime) -> None:
    """What a rebuild of the ledger's facts replaces: the SKUs' stock facts from `since` (not
    their views and add-to-carts), their levels and periods."""
    wanted = sorted(skus)
    await conn.execute(facts.delete().where(among(conn, facts.c.sku, wanted),
                                            facts.c.location != NO_LOCATION,
                                            facts.c.hour >= since))
    await conn.execute(levels.delete().where(among(conn, levels.c.sku, wanted)))
    await conn.execute(periods.delete().where(among(conn, periods.c.sku, wanted)))


async def forget_behaviour(conn: AsyncConnection, since: datetime) -> None:
    """What a rebuild of views and add-to-carts replaces: their counts from `since` (refused
    demand and waitlist joins, in the same rows, come from events alone and stay)."""
    await conn.execute(facts.update().where(facts.c.location == NO_LOCATION,
                                            facts.c.hour >= since).values(views=0, carts=0))


async def alerted(conn: AsyncConnection) -> dict[str, tuple[date, date | None]]:
    """(stock-out day, receipt day) of every SKU's standing alert, read under a lock that
    keeps other alert passes out until the transaction ends (two workers must not both
    publish the same alert; SQLite's write transaction already excludes them)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, 0)"),
                           {"space": LOCK_SPACE + 1})
    rows = await conn.execute(sa.select(alerts))
    return {row.sku: (row.stockout_on, row.receipt_on) for row in rows}


async def save_alerts(conn: AsyncConnection, found: dict[str, tuple[date, date | None]],
                      at: datetime) -> None:
    await upsert(conn, alerts, [{"sku": sku, "stockout_on": out, "receipt_on": receipt,
                                 "alerted_at": at} for sku, (out, receipt) in found.items()],
                 ["sku"])


async def clear_alerts(conn: AsyncConnection, skus: Iterable[str]) -> None:
    wanted = sorted(skus)
    if wanted:
        await conn.execute(alerts.delete().where(among(conn, alerts.c.sku, wanted)))
