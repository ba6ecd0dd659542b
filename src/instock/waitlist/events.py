"""Events the waitlist context publishes."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from instock.platform.bus.envelope import DomainEvent


class BackInStockNotified(DomainEvent):
    """Tell this customer the SKU they waited for can be bought again (sent once per wait)."""

    type: ClassVar[str] = "waitlist.notified.v1"
    sku: str
    customer_id: str
    available: int
    subscribed_at: datetime
    cause: str  # the id of the inventory.back_in_stock.v1 event that made it happen

    @property
    def subject(self) -> str:
        return self.customer_id


class WaitlistJoined(DomainEvent):
    """Someone began (or renewed) a wait for the SKU: demand it could not meet. Names no one:
    analytics counts it, and nothing else needs to know who."""

    type: ClassVar[str] = "waitlist.joined.v1"
    sku: str
    joined_at: datetime

    @property
    def subject(self) -> str:
        return self.sku
