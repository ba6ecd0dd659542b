"""Events the reconciliation context publishes: a drift found, and a drift put right."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from instock.platform.bus.envelope import DomainEvent


class DriftEvent(DomainEvent):
    drift_id: str
    kind: str = Field(description=(
        "level_mismatch | ledger_altered | reserved_mismatch | committed_mismatch | event_lost"
        " | orphan_commitment | order_unstocked | recs_stock_stale | listing_stale"
        " | marketplace_mismatch"))
    sku: str
    location: str = Field(description="the stock location; empty when the drift is the SKU's")

    @property
    def subject(self) -> str:
        """The SKU the drift is about."""
        return self.sku


class DriftDetected(DriftEvent):
    """A reconciliation pass found stock that disagrees with its sources (its ledger, the
    reservations, the outbox, the orders holding it) or a copy of stock that disagrees with
    the stock (recommendations' view, a channel's listing, a marketplace). Repaired at once
    when small (a `drift_repaired` follows), otherwise proposed for a staff decision
    (`GET /v1/reconciliation/drifts`)."""

    type: ClassVar[str] = "inventory.drift_detected.v1"
    expected: dict[str, Any] = Field(description="what the source says")
    actual: dict[str, Any] = Field(description="what was found")
    detail: str
    detected_at: datetime


class DriftRepaired(DriftEvent):
    """A drift was put right by a reason-coded `reconcile` ledger entry, automatically or on a
    person's approval."""

    type: ClassVar[str] = "inventory.drift_repaired.v1"
    decided_by: str
    note: str
