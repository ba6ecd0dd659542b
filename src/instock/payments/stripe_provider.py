"""The `stripe` provider: the official SDK, async (PaymentIntents and Refunds, webhook
signatures). Pointed at the sandbox in tests (`payments_url`), at api.stripe.com in production.

The SDK's own network retries are off: `providers.Resilient` retries, in one place, with the
same idempotency key on every attempt."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import stripe

from instock.payments import wire
from instock.payments.errors import WebhookSignatureInvalid
from instock.payments.model import Observation
from instock.platform.errors import InstockError

T = TypeVar("T")


def _error(exc: stripe.StripeError) -> InstockError:
    if isinstance(exc, stripe.APIConnectionError):  # no answer: timeouts, refused connections
        return wire.error_from(None, None)
    body = exc.json_body if isinstance(exc.json_body, Mapping) else None
    return wire.error_from(exc.http_status, body)


async def _answer(call: Awaitable[T]) -> T:
    """Await one SDK call; its errors become the house's (one mapping for both providers)."""
    try:
        return await call
    except stripe.StripeError as exc:
        raise _error(exc) from exc


class StripeProvider:
    name = "stripe"

    def __init__(self, url: str, api_key: str, webhook_secret: str, timeout: float) -> None:
        self.webhook_secret = webhook_secret
        self.http = stripe.HTTPXClient(timeout=timeout)
        self.client = stripe.StripeClient(api_key, base_addresses={"api": url},
                                          http_client=self.http, max_network_retries=0)

    async def authorise(self, *, payment_id: str, order_id: str, amount_minor: int,
                        currency: str, idempotency_key: str) -> Observation:
        intent = await _answer(self.client.v1.payment_intents.create_async(
            {"amount": amount_minor, "currency": currency.lower(), "confirm": True,
             "capture_method": "manual", "payment_method": "pm_card_visa",
             "metadata": {"payment_id": payment_id, "order_id": order_id}},
            {"idempotency_key": idempotency_key}))
        return wire.intent_observation(intent.to_dict())

    async def capture(self, provider_ref: str, *, idempotency_key: str) -> Observation:
        intent = await _answer(self.client.v1.payment_intents.capture_async(
            provider_ref, options={"idempotency_key": idempotency_key}))
        return wire.intent_observation(intent.to_dict())

    async def void(self, provider_ref: str, *, idempotency_key: str) -> Observation:
        intent = await _answer(self.client.v1.payment_intents.cancel_async(
            provider_ref, options={"idempotency_key": idempotency_key}))
        return wire.intent_observation(intent.to_dict())

    async def refund(self, provider_ref: str, amount_minor: int | None, *,
                     idempotency_key: str) -> Observation:
        params: stripe.params.RefundCreateParams = {"payment_intent": provider_ref,
                                                    "expand": ["charge"]}
        if amount_minor is not None:
            params["amount"] = amount_minor
        refund = await _answer(self.client.v1.refunds.create_async(
            params, {"idempotency_key": idempotency_key}))
        return wire.charge_observation(refund.to_dict()["charge"])

    async def retrieve(self, provider_ref: str) -> Observation:
        intent = await _answer(self.client.v1.payment_intents.retrieve_async(provider_ref))
        return wire.intent_observation(intent.to_dict())

    def read_webhook(self, body: bytes, signature: str | None,
                     tolerance_seconds: float) -> Mapping[str, Any]:
        try:
            event = stripe.Webhook.construct_event(body, signature, self.webhook_secret,
                                                   tolerance=int(tolerance_seconds))
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise WebhookSignatureInvalid(str(exc) or "the signature does not verify") from None
        return event.to_dict()

    async def close(self) -> None:
        await self.http.close_async()
