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

from instock.platform.db import UTCDateTime, metadata, utcnow
from instock.platform.ids import new_id

SOURCE = "/instock"

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


class DomainEvent(BaseModel):
    """Base of every event type: `type` is the dotted, versioned CloudEvents type."""

    model_config = ConfigDict(frozen=True)
    type: ClassVar[str]

    @property
    def subject(self) -> str:
        raise NotImplementedError


def envelope(event: DomainEvent, correlation_id: str | None,
             traceparent: str | None = None) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    doc: dict[str, Any] = {
        "specversion": "1.0", "id": new_id(), "source": SOURCE, "type": event.type,
        "subject": event.subject, "time": utcnow().isoformat(),
        "datacontenttype": "application/json", "data": data,
    }
    if isinstance(data.get("version"), int):
        doc["sequence"] = data["version"]
    if correlation_id:
        doc["correlationid"] = correlation_id
    if traceparent:
        doc["traceparent"] = traceparent
    return doc


async def add(conn: AsyncConnection, events: Iterable[DomainEvent],
              correlation_id: str | None = None) -> None:
    rows = []
    for event in events:
        doc = envelope(event, correlation_id)
        rows.append({"id": doc["id"], "subject": doc["subject"], "type": doc["type"],
                     "sequence": doc.get("sequence"), "envelope": doc, "created_at": utcnow()})
    if rows:
        await conn.execute(outbox.insert(), rows)
