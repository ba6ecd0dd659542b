"""Waitlist rules, free of I/O: who is told when a SKU comes back, and what they are told."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from instock.waitlist.events import BackInStockNotified


@dataclass(frozen=True)
class Entry:
    """One customer waiting for one SKU. `notified_at` is set once, when they are told."""

    sku: str
    customer_id: str
    created_at: datetime
    notified_at: datetime | None = None

    @property
    def waiting(self) -> bool:
        return self.notified_at is None


def notices(entries: list[Entry], available: int, cause_event_id: str) -> list[BackInStockNotified]:
    """One notice per customer still waiting; those already told are not told again."""
    return [BackInStockNotified(sku=e.sku, customer_id=e.customer_id, available=available,
                                subscribed_at=e.created_at, cause=cause_event_id)
            for e in entries if e.waiting]
