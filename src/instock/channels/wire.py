"""A marketplace's webhook on the wire (StockX/GOAT style): its signature is checked and its
body's JSON read field by field here; its meaning (which event is which work) is
`model.feed_event`'s. What is read becomes the context's event, recorded once by the service.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from instock.channels import model
from instock.channels.events import (
    ChannelOrderCancelled,
    ChannelOrderReceived,
    MarketplaceOrderLine,
)
from instock.channels.model import FeedDelivery, FeedLine, OrderWork
from instock.platform import signatures
from instock.platform.errors import InstockError, ValidationFailed
from instock.platform.http import CallerId
from instock.platform.text import Printable

ExternalId = Annotated[Printable, StringConstraints(min_length=1, max_length=128)]


class WebhookSignatureRejected(InstockError):
    status, slug, title = 400, "webhook-signature", "The webhook signature was not accepted"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, errors=[{"field": "Marketplace-Signature", "reason": reason}])


def verify(body: bytes, header: str | None, secret: str, tolerance_seconds: float) -> None:
    """Check the `Marketplace-Signature` over the raw body; a timestamp outside the tolerance
    is a replay. Raises WebhookSignatureRejected."""
    try:
        signatures.verify(body, header, secret, tolerance_seconds=tolerance_seconds)
    except signatures.SignatureError as exc:
        raise WebhookSignatureRejected(str(exc)) from exc


class FeedLineIn(BaseModel):
    sku: CallerId
    quantity: int = Field(ge=1, le=10_000)
    price: Decimal = Field(ge=0, max_digits=18, decimal_places=4)


class FeedOrderIn(BaseModel):
    id: ExternalId
    lines: list[FeedLineIn] = Field(default_factory=list, max_length=100)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class FeedDataIn(BaseModel):
    order: FeedOrderIn


class FeedEventIn(BaseModel):
    """A marketplace webhook delivery: an id, a type, the order."""

    id: ExternalId
    type: Annotated[str, StringConstraints(max_length=64)]
    data: FeedDataIn


def parse_feed(body: bytes) -> FeedEventIn:
    """The body's JSON, checked; the first problem found is the 422's field and reason."""
    try:
        return FeedEventIn.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise ValidationFailed(field, first.get("msg", "invalid")) from exc


def read_feed(body: bytes) -> FeedDelivery | None:
    """What a (verified) delivery asks for; None for an event kind instock does not act on.
    Raises ValidationFailed (422) for a body that is not a feed event or asks the impossible."""
    feed = parse_feed(body)
    order = feed.data.order
    try:
        return model.feed_event(
            feed.id, feed.type, order.id,
            [FeedLine(line.sku, line.quantity, line.price) for line in order.lines],
            order.currency, order.reason)
    except model.FeedError as exc:
        raise ValidationFailed(exc.field, exc.reason) from exc


def order_event(channel_id: str,
                delivery: FeedDelivery) -> ChannelOrderReceived | ChannelOrderCancelled:
    """The event the context publishes for a delivery on `channel_id`."""
    if delivery.work is OrderWork.CREATED:
        return ChannelOrderReceived(
            channel=channel_id, external_id=delivery.external_id,
            marketplace_event_id=delivery.event_id, currency=delivery.currency,
            lines=[MarketplaceOrderLine(sku=line.sku, quantity=line.quantity,
                                        unit_price=line.unit_price) for line in delivery.lines])
    return ChannelOrderCancelled(channel=channel_id, external_id=delivery.external_id,
                                 marketplace_event_id=delivery.event_id, reason=delivery.reason)
