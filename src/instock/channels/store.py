"""Channels persistence: marketplace connections, what each listing was last told, and the
marketplace orders waiting to be carried out."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.channels.model import Connection, ListingState, OrderWork, WorkState
from instock.platform.db import UTCDateTime, dialect_insert, insert_missing, metadata, upsert

connections = sa.Table(
    "channel_connections", metadata,
    sa.Column("channel_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("base_url", sa.String(500), nullable=False),
    sa.Column("api_key", sa.String(500), nullable=False),
    sa.Column("webhook_secret", sa.String(500), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # One pusher per channel at a time (any process may run one): it holds this lease while
    # it pushes, so the channel's pushes go one after the other and its rate is one budget.
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
)

# Keyed by sku first (DESIGN.md §5). `changes` counts stock changes heard for the listing;
# `pushed_changes` how many of them the last push covered: dirty while the first is larger.
listings = sa.Table(
    "channel_listings", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("channel_id", sa.String(64), primary_key=True),
    sa.Column("changes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pushed_changes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pushed_version", sa.BigInteger, nullable=True),
    sa.Column("pushed_quantity", sa.BigInteger, nullable=True),
    sa.Column("pushed_at", UTCDateTime, nullable=True),
    sa.Column("pushes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retry_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Index("ix_channel_listings_channel_id", "channel_id"),
)

# Marketplace orders (and their cancellations) the webhook feed announced, until carried out.
orders = sa.Table(
    "channel_orders", metadata,
    sa.Column("channel_id", sa.String(64), primary_key=True),
    sa.Column("external_id", sa.String(128), primary_key=True),
    sa.Column("work", sa.String(16), primary_key=True),  # created | cancelled
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("done_at", UTCDateTime, nullable=True),
    sa.Column("order_id", sa.String(64), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("error", sa.String(1000), nullable=True),
    sa.Index("ix_channel_orders_state_due_at", "state", "due_at"),
)


# ---------------------------------------------------------------------------------------------
# Connections


def _connection(row: Any) -> Connection:
    return Connection(row.channel_id, row.kind, row.base_url, row.api_key, row.webhook_secret)


async def save_connection(conn: AsyncConnection, c: Connection, now: datetime) -> None:
    await upsert(conn, connections, [{
        "channel_id": c.channel_id, "kind": c.kind, "base_url": c.base_url,
        "api_key": c.api_key, "webhook_secret": c.webhook_secret, "updated_at": now}],
        ["channel_id"])


async def get_connection(conn: AsyncConnection, channel_id: str) -> Connection | None:
    row = (await conn.execute(sa.select(connections).where(
        connections.c.channel_id == channel_id))).first()
    return _connection(row) if row is not None else None


async def all_connections(conn: AsyncConnection) -> list[Connection]:
    rows = await conn.execute(sa.select(connections).order_by(connections.c.channel_id))
    return [_connection(row) for row in rows]


async def take_lease(conn: AsyncConnection, channel_id: str, owner: str, now: datetime,
                     until: datetime) -> bool:
    """Take (or renew) the channel's push lease; False while another live owner holds it."""
    result = await conn.execute(connections.update().where(
        connections.c.channel_id == channel_id,
        sa.or_(connections.c.lease_owner.is_(None), connections.c.lease_owner == owner,
               connections.c.lease_until < now))
        .values(lease_owner=owner, lease_until=until))
    return result.rowcount == 1


async def drop_lease(conn: AsyncConnection, channel_id: str, owner: str) -> None:
    await conn.execute(connections.update().where(
        connections.c.channel_id == channel_id, connections.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None))


# ---------------------------------------------------------------------------------------------
# Listings


async def mark_changed(conn: AsyncConnection, channel_id: str, skus: Iterable[str]) -> None:
    """One more change heard for each (channel, sku): the listing is dirty until pushed."""
    rows = [{"sku": sku, "channel_id": channel_id, "changes": 1} for sku in sorted(set(skus))]
    if not rows:
        return
    statement = dialect_insert(conn, listings)
    await conn.execute(statement.on_conflict_do_update(
        index_elements=["sku", "channel_id"],
        set_={"changes": listings.c.changes + 1}), rows)


def _listing(row: Any) -> ListingState:
    return ListingState(row.sku, row.changes, row.pushed_changes, row.pushed_version,
                        row.pushed_quantity)


async def dirty_skus(conn: AsyncConnection, channel_id: str, now: datetime,
                     limit: int) -> list[str]:
    """SKUs of the channel with changes not pushed yet (and not waiting out a failure)."""
    rows = await conn.execute(
        sa.select(listings.c.sku).where(
            listings.c.channel_id == channel_id,
            listings.c.changes > listings.c.pushed_changes,
            sa.or_(listings.c.retry_at.is_(None), listings.c.retry_at <= now))
        .order_by(listings.c.sku).limit(limit))
    return [row.sku for row in rows]


async def get_listing(conn: AsyncConnection, channel_id: str, sku: str) -> ListingState | None:
    row = (await conn.execute(sa.select(listings).where(
        listings.c.channel_id == channel_id, listings.c.sku == sku))).first()
    return _listing(row) if row is not None else None


async def listing_states(conn: AsyncConnection, channel_id: str, skus: Iterable[str] | None
                         ) -> dict[str, ListingState]:
    """The channel's listings of these SKUs (all of them for None)."""
    query = sa.select(listings).where(listings.c.channel_id == channel_id)
    if skus is not None:
        query = query.where(listings.c.sku.in_(sorted(set(skus))))
    return {row.sku: _listing(row) for row in await conn.execute(query)}


async def push_again(conn: AsyncConnection, channel_id: str, sku: str,
                     reported: int | None) -> None:
    """The marketplace holds `reported`, not what we last pushed: remember that, and mark the
    listing changed so the pusher sends ours again."""
    await mark_changed(conn, channel_id, [sku])
    await conn.execute(listings.update().where(
        listings.c.channel_id == channel_id, listings.c.sku == sku).values(
            pushed_quantity=reported))


async def listed_skus(conn: AsyncConnection, channel_id: str) -> set[str]:
    rows = await conn.execute(sa.select(listings.c.sku).where(listings.c.channel_id == channel_id))
    return {row.sku for row in rows}


async def record_push(conn: AsyncConnection, channel_id: str, sku: str, covered: int,
                      version: int, quantity: int, now: datetime, *, sent: bool) -> None:
    """The listing now holds `quantity` as of SKU `version`, covering `covered` changes."""
    values: dict[str, Any] = {"pushed_changes": covered, "pushed_version": version,
                              "pushed_quantity": quantity, "failures": 0, "retry_at": None,
                              "last_error": None}
    if sent:
        values.update(pushed_at=now, pushes=listings.c.pushes + 1)
    await conn.execute(listings.update().where(
        listings.c.channel_id == channel_id, listings.c.sku == sku).values(**values))


async def record_covered(conn: AsyncConnection, channel_id: str, sku: str,
                         covered: int) -> None:
    """The changes up to `covered` need no push (a stale read was dropped)."""
    await conn.execute(listings.update().where(
        listings.c.channel_id == channel_id, listings.c.sku == sku,
        listings.c.pushed_changes < covered).values(pushed_changes=covered))


async def record_failure(conn: AsyncConnection, channel_id: str, sku: str, error: str) -> int:
    """Count a failed push; the failures since the last success."""
    result = await conn.execute(listings.update().where(
        listings.c.channel_id == channel_id, listings.c.sku == sku)
        .values(failures=listings.c.failures + 1, last_error=error[:500])
        .returning(listings.c.failures))
    return int(result.scalar_one())


async def retry_listing_at(conn: AsyncConnection, channel_id: str, sku: str,
                           at: datetime) -> None:
    await conn.execute(listings.update().where(
        listings.c.channel_id == channel_id, listings.c.sku == sku).values(retry_at=at))


async def record_repair(conn: AsyncConnection, channel_id: str, sku: str, version: int,
                        quantity: int, now: datetime) -> None:
    """Reconcile pushed `quantity` (read at SKU `version`) outside the change counting."""
    statement = dialect_insert(conn, listings)
    await conn.execute(statement.on_conflict_do_update(
        index_elements=["sku", "channel_id"],
        set_={"pushed_version": statement.excluded.pushed_version,
              "pushed_quantity": statement.excluded.pushed_quantity,
              "pushed_at": statement.excluded.pushed_at, "pushes": listings.c.pushes + 1}),
        [{"sku": sku, "channel_id": channel_id, "changes": 0, "pushed_changes": 0,
          "pushed_version": version, "pushed_quantity": quantity, "pushed_at": now,
          "pushes": 1}])


async def listings_of(conn: AsyncConnection, channel_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(listings).where(listings.c.channel_id == channel_id)
                              .order_by(listings.c.sku))
    return [dict(row._mapping) for row in rows]


# ---------------------------------------------------------------------------------------------
# Marketplace orders


async def add_order_work(conn: AsyncConnection, channel_id: str, external_id: str,
                         work: OrderWork, payload: dict[str, Any], now: datetime) -> None:
    """Queue what the feed said (once: a repeated announcement changes nothing)."""
    await insert_missing(conn, orders, [{
        "channel_id": channel_id, "external_id": external_id, "work": work.value,
        "payload": payload, "state": WorkState.PENDING.value, "attempts": 0, "due_at": now,
        "received_at": now}])


async def due_order_work(conn: AsyncConnection, now: datetime, limit: int) -> list[Any]:
    """Pending work whose time has come; for one order its creation before its cancellation."""
    rows = await conn.execute(
        sa.select(orders).where(orders.c.state == WorkState.PENDING.value,
                                orders.c.due_at <= now)
        .order_by(orders.c.received_at, orders.c.work.desc()).limit(limit))
    return list(rows)


async def order_work_state(conn: AsyncConnection, channel_id: str, external_id: str,
                           work: OrderWork) -> str | None:
    return await conn.scalar(sa.select(orders.c.state).where(
        orders.c.channel_id == channel_id, orders.c.external_id == external_id,
        orders.c.work == work.value))


async def claim_order_work(conn: AsyncConnection, row: Any, until: datetime) -> bool:
    """Take a work item for one attempt by moving its due time: a second worker that read the
    same row finds it moved and leaves it."""
    result = await conn.execute(orders.update().where(
        orders.c.channel_id == row.channel_id, orders.c.external_id == row.external_id,
        orders.c.work == row.work, orders.c.state == WorkState.PENDING.value,
        orders.c.due_at == row.due_at).values(due_at=until, attempts=orders.c.attempts + 1))
    return result.rowcount == 1


async def finish_order_work(conn: AsyncConnection, row: Any, now: datetime, order_id: str | None,
                            outcome: str) -> None:
    await conn.execute(orders.update().where(
        orders.c.channel_id == row.channel_id, orders.c.external_id == row.external_id,
        orders.c.work == row.work).values(state=WorkState.DONE.value, done_at=now,
                                          order_id=order_id, outcome=outcome, error=None))


async def fail_order_work(conn: AsyncConnection, row: Any, error: str, retry_at: datetime | None,
                          now: datetime) -> None:
    """Try again at `retry_at`, or give up for good when it is None."""
    values: dict[str, Any] = {"error": error[:1000]}
    if retry_at is None:
        values.update(state=WorkState.FAILED.value, done_at=now)
    else:
        values.update(due_at=retry_at)
    await conn.execute(orders.update().where(
        orders.c.channel_id == row.channel_id, orders.c.external_id == row.external_id,
        orders.c.work == row.work).values(**values))


async def order_work(conn: AsyncConnection, channel_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(orders).where(orders.c.channel_id == channel_id)
                              .order_by(orders.c.received_at))
    return [dict(row._mapping) for row in rows]
