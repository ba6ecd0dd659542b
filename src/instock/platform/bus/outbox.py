"""The transactional outbox: events are written in the same transaction as the change.

Each row is a CloudEvents 1.0 envelope (DESIGN.md §3). A relay (issue 3) moves rows to the bus;
until then they wait here, so no event is lost and none exists for a rolled-back change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import UTCDateTime, insert_rows, metadata, signal, utcnow
from instock.platform.ids import new_id

SOURCE = "/instock"
OUTBOX_SIGNAL = "instock_outbox"

outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=True),
    sa.Column("envelope", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    sa.Column("published_at", UTCDateTime, nullable=True),
)
# The relay's work queue: only rows still to publish, oldest first.
sa.Index("ix_outbox_unpublished", outbox.c.created_at, outbox.c.id,
         postgresql_where=outbox.c.published_at.is_(None),
         sqlite_where=outbox.c.published_at.is_(None))


class DomainEvent(BaseModel):
    """Base of every event type: `type` is the dotted, versioned CloudEvents type.

    The fields are the envelope's `data`; a field the schema does not declare is an error, so
    the published JSON Schemas (instock.platform.bus.schemas) describe every byte of `data`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: ClassVar[str]

    @property
    def subject(self) -> str:
        """The aggregate the event is about (a SKU, a reservation id, a product id)."""
        raise NotImplementedError

    @property
    def sequence(self) -> int | None:
        """The aggregate's version after the change, if it has one: consumers ignore an event
        whose sequence is older than the one they applied for the same subject."""
        return None


def envelope(event: DomainEvent, correlation_id: str | None,
             traceparent: str | None = None, time: str | None = None) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    doc: dict[str, Any] = {
        "specversion": "1.0", "id": new_id(), "source": SOURCE, "type": event.type,
        "subject": event.subject, "time": time or utcnow().isoformat(),
        "datacontenttype": "application/json", "data": data,
    }
    if event.sequence is not None:
        doc["sequence"] = event.sequence
    if correlation_id:
        doc["correlationid"] = correlation_id
    if traceparent:
        doc["traceparent"] = traceparent
    return doc


async def add(conn: AsyncConnection, events: Iterable[DomainEvent],
              correlation_id: str | None = None) -> None:
    await add_each(conn, [(event, correlation_id) for event in events])


async def add_each(conn: AsyncConnection,
                   events: Iterable[tuple[DomainEvent, str | None]]) -> None:
    """Add events, each with the correlation id of the request that caused it."""
    rows = []
    now = utcnow()  # one transaction, one time: a batch of a drop adds thousands of events
    time = now.isoformat()
    for event, correlation_id in events:
        doc = envelope(event, correlation_id, time=time)
        rows.append({"id": doc["id"], "subject": doc["subject"], "type": doc["type"],
                     "sequence": doc.get("sequence"), "envelope": doc, "created_at": now})
    if rows:
        await insert_rows(conn, outbox, rows)
        signal(conn, OUTBOX_SIGNAL)  # the relay wakes on commit instead of polling
