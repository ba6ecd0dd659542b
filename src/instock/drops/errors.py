"""What a drop refuses, as problem+json types. Each names the field at fault (`Drop-Pass`,
the header; `ticket`; `lines.sku`) and why, and the drop it is about."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from instock.platform.errors import Conflict, Forbidden, NotFound, ValidationFailed

HEADER = "Drop-Pass"


class DropNotStarted(Conflict):
    """409: the SKUs exist and will be sold, just not yet (come back at `starts_at`)."""

    slug, title = "drop-not-started", "The drop has not started"

    def __init__(self, drop_id: str, starts_at: datetime, skus: list[str]) -> None:
        super().__init__(f"drop {drop_id} starts at {starts_at.isoformat()}: "
                         f"{', '.join(skus)} cannot be reserved before",
                         drop_id=drop_id, starts_at=starts_at.isoformat(), skus=skus,
                         errors=[{"field": "lines.sku",
                                  "reason": "in a drop that has not started"}])


class DropPassRequired(Forbidden):
    """403: the drop admits through its waiting room; this reservation brought no pass."""

    slug, title = "drop-pass-required", "A drop pass is required"

    def __init__(self, drop_id: str, skus: list[str]) -> None:
        super().__init__(f"reserving {', '.join(skus)} needs a pass for drop {drop_id} "
                         f"(the {HEADER} header)", drop_id=drop_id, skus=skus,
                         errors=[{"field": HEADER, "reason": "missing"}])


class DropPassInvalid(Forbidden):
    """403: a pass came, but it is forged, expired, or for another drop or customer."""

    slug, title = "drop-pass-invalid", "The drop pass is not valid"

    def __init__(self, drop_id: str, reason: str) -> None:
        super().__init__(f"{HEADER}: {reason}", drop_id=drop_id,
                         errors=[{"field": HEADER, "reason": reason}])


class DropTicketInvalid(ValidationFailed):
    """422: the ticket in the path is forged, expired, or for another drop."""

    slug, title = "drop-ticket-invalid", "The queue ticket is not valid"

    def __init__(self, reason: str) -> None:
        super().__init__("ticket", reason)


class DropEntryRefused(Forbidden):
    """403: the bot scoring refused this ask for a place (drops/bots.py); the verdict says
    which rules it tripped, so a person wrongly refused (or staff) can see why."""

    slug, title = "drop-entry-refused", "Refused a place in the waiting room"

    def __init__(self, drop_id: str, verdict: dict[str, Any]) -> None:
        rules = ", ".join(r["rule"] for r in verdict["reasons"])
        super().__init__(f"this request looks automated ({rules})", drop_id=drop_id,
                         verdict=verdict, errors=[{"field": "challenge" if any(
                             r["rule"].endswith("proof-of-work") for r in verdict["reasons"])
                             else "request", "reason": rules}])


class DropEntriesClosed(Conflict):
    """409: the draw's entry window has closed (or the drop takes no entries)."""

    slug, title = "drop-entries-closed", "The drop takes no entries now"

    def __init__(self, drop_id: str, reason: str) -> None:
        super().__init__(f"drop {drop_id}: {reason}", drop_id=drop_id,
                         errors=[{"field": "entries_close_at", "reason": reason}])


class DropEntryDuplicate(Conflict):
    """409: another customer entered this draw with the same payment method or address: one
    entry per identity, so the second is refused (not merged into the first: it is someone
    else's entry, and saying so is what lets a person who was wrongly matched ask support)."""

    slug, title = "drop-entry-duplicate", "Already entered with this identity"

    def __init__(self, drop_id: str) -> None:
        super().__init__(f"drop {drop_id} has an entry with this fingerprint already",
                         drop_id=drop_id, errors=[{
                             "field": "fingerprint",
                             "reason": "another customer entered with it"}])


class DropEntryUnknown(NotFound):
    """404: no such entry in this drop (forged, mistyped, or another drop's)."""

    slug, title = "drop-entry-unknown", "No such entry"

    def __init__(self, drop_id: str) -> None:
        super().__init__(f"drop {drop_id} has no such entry", drop_id=drop_id,
                         errors=[{"field": "entry", "reason": "no such entry in this drop"}])


class DropNotDrawn(Conflict):
    """409: the draw has not been made (its entries may still be open)."""

    slug, title = "drop-not-drawn", "The draw has not been made"

    def __init__(self, drop_id: str, reason: str) -> None:
        super().__init__(f"drop {drop_id}: {reason}", drop_id=drop_id,
                         errors=[{"field": "draw", "reason": reason}])
