"""Events the channels context publishes: what marketplaces told us through their webhooks.

They are written by `platform.inbound.receive` together with the webhook's receipt, so each
marketplace delivery becomes exactly one event however often it is sent.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from instock.platform.bus.envelope import DomainEvent


class MarketplaceOrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: str
    quantity: int = Field(ge=1)
    unit_price: Decimal = Field(ge=0, description="what the buyer paid per unit")


class MarketplaceOrderEvent(DomainEvent):
    channel: str = Field(description="the channel (marketplace) the order was placed on")
    external_id: str = Field(description="the marketplace's order id")
    marketplace_event_id: str = Field(description="the id of the webhook delivery")

    @property
    def subject(self) -> str:
        """`<channel>:<external order id>`."""
        return f"{self.channel}:{self.external_id}"


class ChannelOrderReceived(MarketplaceOrderEvent):
    """A buyer bought on a marketplace, which took the payment: we must fill it or cancel it."""

    type: ClassVar[str] = "channel.order_received.v1"
    lines: list[MarketplaceOrderLine] = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class ChannelOrderCancelled(MarketplaceOrderEvent):
    """The buyer (or the marketplace) cancelled a marketplace order."""

    type: ClassVar[str] = "channel.order_cancelled.v1"
    reason: str
