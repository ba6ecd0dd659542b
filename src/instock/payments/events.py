"""Events the payments context publishes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from instock.payments.model import PaymentStatus
from instock.platform.bus.envelope import DomainEvent


class PaymentProviderEvent(DomainEvent):
    """What a payment provider's webhook said about a payment, verified and read (one event per
    provider event id). The `payment-events` consumer merges it into the payment order-safely:
    a status only moves forward, so late and repeated news changes nothing."""

    type: ClassVar[str] = "payment.provider_event.v1"
    provider: str
    event_id: str  # the provider's event id (evt_…), unique per provider
    event_type: str  # the provider's event type, e.g. payment_intent.succeeded
    created: datetime  # when the provider created the event
    payment_id: str | None  # ours, from the payment's metadata (None: not made by instock)
    provider_ref: str  # the provider's payment id (pi_…)
    status: PaymentStatus
    amount_captured: Decimal | None = None
    amount_refunded: Decimal | None = None
    decline_reason: str | None = None

    @property
    def subject(self) -> str:
        """The payment: our id when the provider's event carries it, else the provider's."""
        return self.payment_id or self.provider_ref
