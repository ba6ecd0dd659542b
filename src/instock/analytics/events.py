"""Events the analytics context publishes."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from pydantic import Field

from instock.platform.bus.envelope import DomainEvent


class StockoutPredicted(DomainEvent):
    """At its 28-day velocity in stock the SKU runs out before its next expected receipt (or,
    with none expected, within the alert horizon). Published again only when the forecast gets
    worse (an earlier stock-out) or the receipt moves; not while nothing changed."""

    type: ClassVar[str] = "inventory.stockout_predicted.v1"
    sku: str
    available: int
    incoming: int = Field(description="units on order")
    velocity_28d: float = Field(description="units sold per day in stock")
    days_of_cover: float
    stockout_on: date = Field(description="the day it is projected to run out")
    receipt_on: date | None = Field(description="the earliest day its incoming units should "
                                                "arrive (null: none expected)")

    @property
    def subject(self) -> str:
        return self.sku
