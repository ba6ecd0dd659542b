"""Drifts between stock and its sources, and what may be done about them: pure.

A drift is found by a reconciliation pass, kept open until it is repaired (automatically when
it is small, by a person's approval otherwise), rejected by a person, or gone by itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar


class DriftStatus(StrEnum):
    OPEN = "open"
    REPAIRED = "repaired"  # a reason-coded ledger entry put it right
    REJECTED = "rejected"  # a person decided not to repair it (with why)
    RESOLVED = "resolved"  # a later pass found the level consistent again without a repair


# A lost event: an outbox row deleted before the relay published it.
EVENT_LOST = "event_lost"


@dataclass(frozen=True)
class Drift:
    id: str
    kind: str
    sku: str
    location: str
    expected: dict[str, Any]
    actual: dict[str, Any]
    detail: str
    detected_at: datetime
    status: DriftStatus = DriftStatus.OPEN
    units: int = 0
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "sku": self.sku, "location": self.location,
                "expected": self.expected, "actual": self.actual, "detail": self.detail,
                "detected_at": self.detected_at.isoformat(), "status": self.status.value,
                "units": self.units, "decided_by": self.decided_by,
                "decided_at": self.decided_at.isoformat() if self.decided_at else None,
                "note": self.note}


@dataclass(frozen=True)
class RepairPolicy:
    """Drifts at most this large are repaired without asking; larger ones wait for a person.
    Zero units means every drift waits."""

    max_units: int = 0
    max_value: Decimal = Decimal(0)


class DriftDecided(ValueError):
    """Only an open drift can be approved or rejected."""


def units_apart(expected: dict[str, Any], actual: dict[str, Any]) -> int:
    """How many units the two sides differ by, over the buckets both name."""
    return sum(abs(int(expected[k]) - int(actual[k])) for k in expected.keys() & actual.keys()
               if isinstance(expected[k], int) and isinstance(actual[k], int) and k != "version")


def repairs_itself(kind: str, units: int, value: Decimal | None, policy: RepairPolicy,
                   integrity_kinds: frozenset[str]) -> bool:
    """Small stock drifts are repaired at once. An edited ledger or a lost event never is: a
    person must see what was done to the history. A value that cannot be priced is not
    small."""
    if kind in integrity_kinds or kind == EVENT_LOST or units <= 0:
        return False
    return units <= policy.max_units and value is not None and value <= policy.max_value


def decide(drift: Drift, status: DriftStatus, who: str, note: str, at: datetime) -> Drift:
    if drift.status is not DriftStatus.OPEN:
        raise DriftDecided(f"drift {drift.id} is {drift.status.value}, not open")
    return Drift(**{**drift.__dict__, "status": status, "decided_by": who, "decided_at": at,
                    "note": note})


class Observed(Protocol):
    """A finding of a pass: what kind, about what, and what was expected against what is."""

    @property
    def kind(self) -> str: ...
    @property
    def sku(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def expected(self) -> Mapping[str, Any]: ...


Identity = tuple[str, str, str, str]


def identity(kind: str, sku: str, location: str, expected: Mapping[str, Any]) -> Identity:
    """What makes two findings the same drift: a level's, one reservation's, or one channel's
    listing."""
    return kind, sku, location, str(expected.get("reservation") or expected.get("channel") or "")


def identity_of(found: Observed) -> Identity:
    return identity(found.kind, found.sku, found.location, found.expected)


F = TypeVar("F", bound=Observed)


@dataclass
class Suspicions(Generic[F]):
    """Differences between things written apart (stock and orders, stock and its copies),
    each with when it was first seen as it is: one counts as a drift once it has lasted
    `grace` unchanged (what it expects changing starts the clock again: the copy is chasing a
    moving stock), or at once when it is recorded as a drift already. Those still pending are
    checked again by the next pass; one that a pass no longer sees is forgotten."""

    grace: timedelta
    first_seen: dict[Identity, tuple[datetime, Mapping[str, Any]]] = field(default_factory=dict)
    pending: list[F] = field(default_factory=list)

    def lasting(self, findings: list[F], now: datetime,
                recorded: Collection[Identity] = ()) -> list[F]:
        seen = {identity_of(f): f for f in findings}
        first: dict[Identity, tuple[datetime, Mapping[str, Any]]] = {}
        for key, f in seen.items():
            before = self.first_seen.get(key)
            first[key] = before if before and before[1] == f.expected else (now, f.expected)
        self.first_seen = first
        lasting = [f for key, f in seen.items()
                   if key in recorded or now - first[key][0] >= self.grace]
        self.pending = [f for f in seen.values() if f not in lasting]
        return lasting
