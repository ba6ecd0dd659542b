"""A marketplace's webhook on the wire, without a server: the signature, the body's fields,
and the event each delivery becomes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from instock.channels import wire
from instock.channels.events import ChannelOrderCancelled, ChannelOrderReceived
from instock.platform.errors import ValidationFailed
from instock.platform.signatures import sign


def body(kind: str = "order.created", **order: Any) -> bytes:
    order = {"id": "ord-1", "lines": [{"sku": "SKU-1", "quantity": 2, "price": "19.90"}],
             **order}
    return json.dumps({"id": "evt-1", "type": kind, "data": {"order": order}}).encode()


def test_a_signed_body_passes_and_a_forged_one_is_a_webhook_signature_400() -> None:
    wire.verify(body(), sign(body(), "s" * 16), "s" * 16, 300)
    with pytest.raises(wire.WebhookSignatureRejected) as rejected:
        wire.verify(body(), sign(body(), "t" * 16), "s" * 16, 300)
    problem = rejected.value.problem()
    assert (problem["status"], rejected.value.slug) == (400, "webhook-signature")
    assert problem["errors"][0]["field"] == "Marketplace-Signature"


def test_an_order_created_becomes_channel_order_received() -> None:
    delivery = wire.read_feed(body(currency="USD"))
    assert delivery is not None
    event = wire.order_event("mkt", delivery)
    assert isinstance(event, ChannelOrderReceived)
    assert (event.channel, event.external_id, event.marketplace_event_id, event.currency) == (
        "mkt", "ord-1", "evt-1", "USD")
    assert [(line.sku, line.quantity, line.unit_price) for line in event.lines] == [
        ("SKU-1", 2, Decimal("19.90"))]


def test_an_order_cancelled_becomes_channel_order_cancelled() -> None:
    delivery = wire.read_feed(body("order.cancelled", lines=[]))
    assert delivery is not None
    event = wire.order_event("mkt", delivery)
    assert isinstance(event, ChannelOrderCancelled)
    assert (event.external_id, event.reason) == ("ord-1", "cancelled by the buyer")


def test_an_unknown_kind_is_read_as_nothing_to_do() -> None:
    assert wire.read_feed(body("order.shipped")) is None


@pytest.mark.parametrize(("raw", "field"), [
    (body(lines=[]), "data.order.lines"),  # the model's rule
    (body(lines=[{"sku": "SKU-1", "quantity": 0, "price": "1"}]), "data.order.lines.0.quantity"),
    (body(currency="eur"), "data.order.currency"),
    (b"not json", "body"),
])
def test_a_bad_body_is_a_422_naming_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        wire.read_feed(raw)
    assert refused.value.extensions["errors"][0]["field"] == field
