"""What a payment call can end in besides success, as problem+json types."""

from __future__ import annotations

from typing import Any

from instock.platform.errors import Conflict, InstockError


class PaymentDeclined(InstockError):
    """The provider refused the card; retrying the same request will not change that."""

    status, slug, title = 402, "payment-declined", "The payment was declined"
    provider_ref: str | None = None  # the provider's id of the refused payment, when it has one

    def __init__(self, reason: str, payment_id: str | None = None, **extensions: Any) -> None:
        super().__init__(f"the payment was declined: {reason}", reason=reason,
                         payment_id=payment_id, **extensions)
        self.reason = reason
        self.payment_id = payment_id


class PaymentUnavailable(InstockError):
    """The provider did not answer usefully (timeouts, connection errors, 5xx, 429) after
    retries. The outcome may be unknown: retry later with the same idempotency key."""

    status, slug, title = 503, "payment-unavailable", "The payment provider is unavailable"


class CircuitOpen(PaymentUnavailable):
    """The provider failed too often lately; no call was made (fail fast)."""

    slug, title = "payment-circuit-open", "Payments are paused: the provider keeps failing"


class PaymentStateConflict(Conflict):
    """The command does not fit the payment's state (capture a voided payment, refund more
    than was captured), here or at the provider."""

    slug, title = "payment-state-conflict", "The payment is not in a state that allows this"


class PaymentRejected(InstockError):
    """The provider refused the request itself (4xx other than a decline): a bug or a
    misconfiguration on our side, not something a retry fixes."""

    status, slug, title = 502, "payment-rejected", "The payment provider rejected the request"


class WebhookSignatureInvalid(InstockError):
    """A webhook whose signature is missing, wrong, or too old (a replay): not processed."""

    status, slug, title = 400, "webhook-signature", "The webhook signature is not valid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, errors=[{"field": "Stripe-Signature", "reason": reason}])
