"""Events the inventory context publishes (the `data` of a CloudEvents envelope)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from instock.platform.bus.outbox import DomainEvent as Event


class StockChanged(Event):
    type: ClassVar[str] = "inventory.stock_changed.v1"
    sku: str
    location: str
    version: int
    on_hand: int
    reserved: int
    committed: int
    safety_stock: int
    unsellable: int
    quarantined: int
    incoming: int
    available: int
    reason: str

    @property
    def subject(self) -> str:
        return self.sku


class ReservationEvent(Event):
    reservation_id: str
    channel: str
    customer_id: str | None
    status: str
    expires_at: datetime
    lines: list[dict[str, int | str]]

    @property
    def subject(self) -> str:
        return self.reservation_id


class ReservationCreated(ReservationEvent):
    type: ClassVar[str] = "reservation.created.v1"


class ReservationCommitted(ReservationEvent):
    type: ClassVar[str] = "reservation.committed.v1"


class ReservationReleased(ReservationEvent):
    type: ClassVar[str] = "reservation.released.v1"


class ReservationExpired(ReservationEvent):
    type: ClassVar[str] = "reservation.expired.v1"
