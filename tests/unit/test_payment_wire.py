"""Stripe's wire format read once for both providers: what is retryable, what is a decline,
what a charge or an intent says about the payment."""

from __future__ import annotations

from decimal import Decimal

import pytest

from instock.payments import wire
from instock.payments.errors import (
    CircuitOpen,
    PaymentDeclined,
    PaymentRejected,
    PaymentStateConflict,
    PaymentUnavailable,
)
from instock.payments.model import PaymentStatus

S = PaymentStatus


@pytest.mark.parametrize("status", [None, 409, 429, 500, 502, 503])
def test_no_answer_5xx_429_and_a_busy_key_are_retryable(status: int | None) -> None:
    error = wire.error_from(status, {"error": {"type": "api_error", "message": "boom"}})
    assert type(error) is PaymentUnavailable and not isinstance(error, CircuitOpen)


def test_a_card_error_is_a_decline_with_its_reason_and_intent() -> None:
    error = wire.error_from(402, {"error": {
        "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
        "payment_intent": {"id": "pi_1", "status": "requires_payment_method"}}})
    assert isinstance(error, PaymentDeclined)
    assert (error.reason, error.provider_ref, error.status) == ("insufficient_funds", "pi_1", 402)


@pytest.mark.parametrize(("code", "kind"), [
    ("payment_intent_unexpected_state", PaymentStateConflict),
    ("charge_already_refunded", PaymentStateConflict), ("resource_missing", PaymentRejected),
    (None, PaymentRejected)])
def test_other_4xx_are_not_retried(code: str | None, kind: type[Exception]) -> None:
    error = wire.error_from(400, {"error": {"type": "invalid_request_error", "code": code}})
    assert type(error) is kind and not isinstance(error, PaymentUnavailable)


@pytest.mark.parametrize(("intent", "status"), [
    ({"status": "requires_capture"}, S.AUTHORISED), ({"status": "canceled"}, S.VOIDED),
    ({"status": "processing"}, S.PENDING), ({"status": "requires_action"}, S.FAILED),
    ({"status": "requires_payment_method", "last_payment_error": {"code": "card_declined"}},
     S.DECLINED)])
def test_intent_statuses(intent: dict[str, object], status: PaymentStatus) -> None:
    news = wire.intent_observation({"id": "pi_1", "currency": "eur", **intent})
    assert (news.status, news.provider_ref) == (status, "pi_1")


def test_a_succeeded_intent_says_how_much_was_taken() -> None:
    news = wire.intent_observation({"id": "pi_1", "status": "succeeded", "currency": "jpy",
                                    "amount_received": 1500})
    assert (news.status, news.amount_captured) == (S.CAPTURED, Decimal(1500))


def test_charges_refunded_in_part_whole_or_released_before_capture() -> None:
    charge = {"payment_intent": "pi_1", "currency": "eur", "captured": True,
              "amount_captured": 5000}
    part = wire.charge_observation({**charge, "amount_refunded": 1000})
    assert (part.status, part.amount_refunded) == (S.PARTIALLY_REFUNDED, Decimal(10))
    assert wire.charge_observation({**charge, "amount_refunded": 5000}).status is S.REFUNDED
    released = wire.charge_observation({**charge, "captured": False, "amount_captured": 0,
                                        "amount_refunded": 5000})
    assert released.status is S.VOIDED  # an uncaptured charge given back is a void


def test_events_that_say_nothing_about_a_payment_are_dropped() -> None:
    assert wire.read_event({"id": "evt_1", "type": "customer.created", "data": {}}) is None
    read = wire.read_event({"id": "evt_2", "type": "payment_intent.succeeded", "created": 7,
                            "data": {"object": {"id": "pi_1", "status": "succeeded",
                                                "currency": "eur", "amount_received": 100,
                                                "metadata": {"payment_id": "p-1"}}}})
    assert read is not None
    assert (read.payment_id, read.provider_ref, read.news.status) == ("p-1", "pi_1", S.CAPTURED)
