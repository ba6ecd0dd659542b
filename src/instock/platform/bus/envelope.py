"""The one event envelope: the base of every domain event and its CloudEvents 1.0 form.

Pure on purpose (pydantic and the standard library, no I/O): every context's `events.py`
builds on `DomainEvent`, and every `model.py` raises those events, so importing a model must
not load the database layer. The outbox (`outbox.py`) stores what `envelope` makes.
"""

from __future__ import annotations

import contextlib
import time as _time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from instock.platform.ids import new_id

SOURCE = "/instock"


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


def event_types(base: type[DomainEvent]) -> frozenset[str]:
    """The `type` of every event class below `base`, however deep."""
    found: set[str] = set()
    for kind in base.__subclasses__():
        if "type" in vars(kind):
            found.add(kind.type)
        found |= event_types(kind)
    return frozenset(found)


def envelope(event: DomainEvent, correlation_id: str | None,
             traceparent: str | None = None, time: str | None = None) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    doc: dict[str, Any] = {
        "specversion": "1.0", "id": new_id(), "source": SOURCE, "type": event.type,
        "subject": event.subject, "time": time or datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json", "data": data,
    }
    if event.sequence is not None:
        doc["sequence"] = event.sequence
    if correlation_id:
        doc["correlationid"] = correlation_id
    if traceparent:
        doc["traceparent"] = traceparent
    return doc


def event_time(envelope: Mapping[str, Any]) -> float:
    """The envelope's `time` (when its transaction wrote it) as epoch seconds; now if it has
    none a clock can read, so a lag measured from it is never negative or unbounded."""
    stamp = envelope.get("time")
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp).timestamp()
    return _time.time()
