"""Events the orders context publishes: one per change of an order's status, and a checkout's
failed payment attempt.

Their subject is the order id and (the status changes') sequence the order's version after
the change, so a consumer can tell a late event from a new one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from instock.platform.bus.envelope import DomainEvent


class OrderLineData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: str
    quantity: int
    unit_price: Decimal


class OrderEvent(DomainEvent):
    """The order as it stands after the change."""

    order_id: str
    version: int
    channel: str
    customer_id: str | None
    external_id: str | None
    status: str
    currency: str
    total: Decimal
    lines: list[OrderLineData]
    reason: str

    @property
    def subject(self) -> str:
        return self.order_id

    @property
    def sequence(self) -> int:
        return self.version


class OrderPlaced(OrderEvent):
    """A checkout began (pending payment) or a marketplace order arrived."""

    type: ClassVar[str] = "order.placed.v1"


class OrderPaid(OrderEvent):
    """Stock is committed and the money taken."""

    type: ClassVar[str] = "order.paid.v1"


class FulfilmentRequested(OrderEvent):
    """A paid order is ready for the warehouse to pick, pack and ship."""

    type: ClassVar[str] = "order.fulfilment_requested.v1"


class OrderFulfilled(OrderEvent):
    """Units were handed to fulfilment (status fulfilled or partially_fulfilled)."""

    type: ClassVar[str] = "order.fulfilled.v1"


class OrderShipped(OrderEvent):
    type: ClassVar[str] = "order.shipped.v1"


class OrderDelivered(OrderEvent):
    type: ClassVar[str] = "order.delivered.v1"


class OrderCancelled(OrderEvent):
    """The order will not be filled; `reason` says why (declined, out of stock, by request)."""

    type: ClassVar[str] = "order.cancelled.v1"


class OrderReturned(OrderEvent):
    """Goods came back."""

    type: ClassVar[str] = "order.returned.v1"


class OrderRefunded(OrderEvent):
    """All money taken was given back."""

    type: ClassVar[str] = "order.refunded.v1"


class CheckoutPaymentFailed(DomainEvent):
    """A checkout gave up because the provider declined its payment (or the payment failed):
    one attempt of this customer's that did not pay. Written with the saga's failure, once per
    checkout. Not an OrderEvent: the order's cancellation follows as `order.cancelled.v1`; this
    says, in fields, whose payment failed and why (the drops' bot scoring counts them)."""

    type: ClassVar[str] = "order.payment_failed.v1"
    order_id: str
    customer_id: str | None = Field(description="the buyer; none for a guest checkout")
    channel: str
    payment_id: str | None = Field(description="the payment the provider refused")
    reason: str = Field(description="the provider's decline code (e.g. generic_decline, "
                                    "insufficient_funds), or 'failed'")
    amount: Decimal
    currency: str

    @property
    def subject(self) -> str:
        """The order."""
        return self.order_id
