"""A person's traces in JSON documents (events in the outbox, dead letters, stored responses,
webhook deliveries) and in the platform's own tables, for data export and erasure.

Events name customers in their data (an order's customer, a shopper's behaviour) and their
subject; stored responses may too. Erasure replaces the person's identifier by the pseudonym
wherever it appears as a value, so the records still count and link to each other, but to no
one. Only exact values change: `cus-1` inside `cus-10` is another person.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.bus.inbox import dead_letters, inbox, positions
from instock.platform.bus.outbox import outbox
from instock.platform.db import Database, rows_mentioning, rows_where, set_where
from instock.platform.idempotency import idempotency_keys

TABLES = frozenset({"outbox", "inbox", "consumer_positions", "dead_letters",
                    "idempotency_keys"})


def names(value: str, identifier: str) -> bool:
    """The string is the identifier, or names it after a role (`customer:cus-1`)."""
    return value == identifier or value.endswith(":" + identifier)


def scrub(value: Any, identifier: str, pseudonym: str) -> Any:
    """The JSON value with every string naming the identifier renamed to the pseudonym."""
    if isinstance(value, str):
        return value[:-len(identifier)] + pseudonym if names(value, identifier) else value
    if isinstance(value, list):
        return [scrub(v, identifier, pseudonym) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v, identifier, pseudonym) for k, v in value.items()}
    return value


def mentions(value: Any, identifier: str) -> bool:
    return scrub(value, identifier, "\0") != value


def _document(column: sa.Column[Any], row: dict[str, Any]) -> Any:
    value = row[column.name]
    if isinstance(column.type, sa.JSON) or value is None:
        return value
    try:  # a text column holding JSON (a stored response body is what the route sent)
        return json.loads(value)
    except ValueError:
        return None


async def documents_mentioning(conn: AsyncConnection, column: sa.Column[Any],
                               identifier: str) -> list[dict[str, Any]]:
    """The documents of a JSON (or JSON text) column that name the identifier."""
    rows = await rows_mentioning(conn, column, identifier)
    documents = (_document(column, row) for row in rows)
    return [doc for doc in documents if mentions(doc, identifier)]


async def scrub_documents(conn: AsyncConnection, column: sa.Column[Any], key: sa.Column[Any],
                          identifier: str, pseudonym: str) -> None:
    """Rename the identifier to the pseudonym in every document of the column (rows by `key`)."""
    for row in await rows_mentioning(conn, column, identifier):
        doc = _document(column, row)
        if mentions(doc, identifier):
            clean = scrub(doc, identifier, pseudonym)
            stored = clean if isinstance(column.type, sa.JSON) else json.dumps(clean)
            await set_where(conn, key, row[key.name], **{column.name: stored})


async def delete_published(conn: AsyncConnection, identifier: str) -> None:
    for row in await rows_mentioning(conn, outbox.c.envelope, identifier):
        if row["published_at"] is not None and mentions(row["envelope"], identifier):
            await conn.execute(outbox.delete().where(outbox.c.id == row["id"]))


class PlatformTraces:
    """Export and erasure over the platform's own tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            heard = await rows_where(conn, inbox.c.subject, customer_id)
            return {
                "events": await documents_mentioning(conn, outbox.c.envelope, customer_id),
                "dead_letters": await documents_mentioning(conn, dead_letters.c.envelope,
                                                           customer_id),
                "stored_responses": await documents_mentioning(conn, idempotency_keys.c.body,
                                                               customer_id),
                "events_processed": [{"consumer": r["consumer"], "event_id": r["event_id"],
                                      "type": r["type"]} for r in heard]}

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        """Published events naming them go (the bus has had them; the relay's retention would
        delete them anyway, and they may carry what they typed); the rest are scrubbed."""
        async with self.db.write() as conn:
            await delete_published(conn, customer_id)
            for column, key in ((outbox.c.envelope, outbox.c.id),
                                (dead_letters.c.envelope, dead_letters.c.id),
                                (idempotency_keys.c.body, idempotency_keys.c.scope)):
                await scrub_documents(conn, column, key, customer_id, pseudonym)
            for subject in (outbox.c.subject, inbox.c.subject, positions.c.subject):
                await set_where(conn, subject, customer_id, subject=pseudonym)
