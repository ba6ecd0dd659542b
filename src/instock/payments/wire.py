"""Stripe's wire format, read once for every provider that speaks it (Stripe itself through its
SDK, the sandbox through plain HTTP): PaymentIntents, Charges and Events become Observations,
error bodies become the house's payment errors. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from instock.payments.errors import (
    PaymentDeclined,
    PaymentRejected,
    PaymentStateConflict,
    PaymentUnavailable,
)
from instock.payments.model import Observation, PaymentStatus, captured_status, from_minor
from instock.platform.errors import InstockError

S = PaymentStatus
INTENT_STATUS = {"requires_capture": S.AUTHORISED, "succeeded": S.CAPTURED,
                 "canceled": S.VOIDED, "requires_action": S.FAILED,
                 "requires_payment_method": S.PENDING, "requires_confirmation": S.PENDING,
                 "processing": S.PENDING}
# The events that say something about a payment's state; others are acknowledged and dropped.
EVENT_TYPES = frozenset({"payment_intent.amount_capturable_updated", "payment_intent.succeeded",
                         "payment_intent.payment_failed", "payment_intent.canceled",
                         "charge.refunded"})
# Stripe's codes for a request that does not fit the object's state.
STATE_CODES = frozenset({"payment_intent_unexpected_state", "charge_already_refunded",
                         "amount_too_large", "charge_already_captured",
                         "charge_expired_for_capture", "refund_amount_too_large"})


@dataclass(frozen=True)
class ProviderEvent:
    """One webhook event, read: which payment (our id from the metadata, the provider's id)
    and what it says."""

    id: str
    type: str
    created: int
    payment_id: str | None
    provider_ref: str
    news: Observation


def decline_reason(error: Mapping[str, Any] | None) -> str:
    error = error or {}
    return str(error.get("decline_code") or error.get("code") or "declined")


def intent_observation(intent: Mapping[str, Any]) -> Observation:
    status = INTENT_STATUS.get(str(intent.get("status")), S.FAILED)
    error = intent.get("last_payment_error")
    if status is S.PENDING and error:  # confirmation failed: the card was refused
        return Observation(S.DECLINED, str(intent["id"]), decline_reason=decline_reason(error))
    captured = None
    if status is S.CAPTURED:
        captured = from_minor(int(intent.get("amount_received") or 0), str(intent["currency"]))
    return Observation(status, str(intent["id"]), amount_captured=captured)


def charge_observation(charge: Mapping[str, Any]) -> Observation:
    """A charge (`charge.refunded`): the amounts captured and refunded so far."""
    if charge.get("captured") is False:  # an authorisation released, not money given back
        return Observation(S.VOIDED, str(charge["payment_intent"]))
    currency = str(charge["currency"])
    captured = from_minor(int(charge.get("amount_captured") or 0), currency)
    refunded = from_minor(int(charge.get("amount_refunded") or 0), currency)
    return Observation(captured_status(captured, refunded), str(charge["payment_intent"]),
                       amount_captured=captured, amount_refunded=refunded)


def read_event(event: Mapping[str, Any]) -> ProviderEvent | None:
    """The payment news in a webhook event; None for event types that carry none."""
    kind = str(event.get("type"))
    if kind not in EVENT_TYPES:
        return None
    obj = event["data"]["object"]
    news = charge_observation(obj) if kind == "charge.refunded" else intent_observation(obj)
    assert news.provider_ref is not None
    metadata = obj.get("metadata") or {}
    return ProviderEvent(str(event["id"]), kind, int(event.get("created") or 0),
                         metadata.get("payment_id"), news.provider_ref, news)


def error_from(status: int | None, body: Mapping[str, Any] | None) -> InstockError:
    """The house's error for a Stripe error answer (`status` None: no answer at all)."""
    error = (body or {}).get("error") or {}
    message = str(error.get("message") or f"HTTP {status}")
    # 409: a request with the same idempotency key is still running there; ask again later.
    if status is None or status in (409, 429) or status >= 500:
        return PaymentUnavailable(f"the provider failed: {message}")
    if error.get("type") == "card_error" or status == 402:
        declined = PaymentDeclined(decline_reason(error))
        intent = error.get("payment_intent")
        declined.provider_ref = intent.get("id") if isinstance(intent, Mapping) else None
        return declined
    if error.get("code") in STATE_CODES:
        return PaymentStateConflict(f"the provider refused: {message}")
    return PaymentRejected(f"the provider rejected the request ({status}): {message}")
