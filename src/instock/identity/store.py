"""API clients' persistence: one row per client, its secret only as a hash."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.identity.model import Client
from instock.platform.db import UTCDateTime, metadata

api_clients = sa.Table(
    "api_clients", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)


def _client(row: Any) -> Client:
    return Client(row.id, row.name, tuple(row.scopes), row.secret_hash, row.created_at,
                  row.revoked_at)


async def insert_client(conn: AsyncConnection, client: Client) -> None:
    await conn.execute(api_clients.insert().values(
        id=client.id, name=client.name, scopes=list(client.scopes),
        secret_hash=client.secret_hash, created_at=client.created_at,
        revoked_at=client.revoked_at))


async def get_client(conn: AsyncConnection, client_id: str) -> Client | None:
    row = (await conn.execute(
        sa.select(api_clients).where(api_clients.c.id == client_id))).first()
    return _client(row) if row is not None else None


async def all_clients(conn: AsyncConnection) -> list[Client]:
    rows = await conn.execute(sa.select(api_clients).order_by(api_clients.c.created_at))
    return [_client(row) for row in rows]


async def revoke(conn: AsyncConnection, client_id: str, at: datetime) -> bool:
    """Revoke a client (once: the first revocation's time stays); False if there is none."""
    found = await conn.execute(sa.update(api_clients).where(
        api_clients.c.id == client_id, api_clients.c.revoked_at.is_(None)).values(revoked_at=at))
    if found.rowcount:
        return True
    return await get_client(conn, client_id) is not None


async def revoked_ids(conn: AsyncConnection) -> set[str]:
    rows = await conn.execute(sa.select(api_clients.c.id).where(
        api_clients.c.revoked_at.is_not(None)))
    return {row.id for row in rows}
