"""The `sandbox` provider: plain httpx against `instock sandbox payments`, which speaks Stripe's
wire format, so the answers are read by the same `wire` module as Stripe's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from instock.payments import wire
from instock.payments.errors import PaymentUnavailable, WebhookSignatureInvalid
from instock.payments.model import Observation
from instock.platform import signatures


def form(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Stripe's form encoding: nested maps as `metadata[order_id]`, lists as `expand[0]`."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(form(value, name))
        elif isinstance(value, list | tuple):
            out.update(form({str(i): item for i, item in enumerate(value)}, name))
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif value is not None:
            out[name] = str(value)
    return out


class SandboxProvider:
    name = "sandbox"

    def __init__(self, url: str, api_key: str, webhook_secret: str, timeout: float) -> None:
        self.webhook_secret = webhook_secret
        self.http = httpx.AsyncClient(base_url=url, timeout=timeout,
                                      headers={"Authorization": f"Bearer {api_key}"})

    async def authorise(self, *, payment_id: str, order_id: str, amount_minor: int,
                        currency: str, idempotency_key: str) -> Observation:
        intent = await self._send("POST", "/v1/payment_intents", idempotency_key, {
            "amount": amount_minor, "currency": currency.lower(), "confirm": True,
            "capture_method": "manual", "payment_method": "pm_card_visa",
            "metadata": {"payment_id": payment_id, "order_id": order_id}})
        return wire.intent_observation(intent)

    async def capture(self, provider_ref: str, *, idempotency_key: str) -> Observation:
        return wire.intent_observation(await self._send(
            "POST", f"/v1/payment_intents/{provider_ref}/capture", idempotency_key))

    async def void(self, provider_ref: str, *, idempotency_key: str) -> Observation:
        return wire.intent_observation(await self._send(
            "POST", f"/v1/payment_intents/{provider_ref}/cancel", idempotency_key))

    async def refund(self, provider_ref: str, amount_minor: int | None, *,
                     idempotency_key: str) -> Observation:
        refund = await self._send("POST", "/v1/refunds", idempotency_key, {
            "payment_intent": provider_ref, "amount": amount_minor, "expand": ["charge"]})
        return wire.charge_observation(refund["charge"])

    async def retrieve(self, provider_ref: str) -> Observation:
        return wire.intent_observation(await self._send(
            "GET", f"/v1/payment_intents/{provider_ref}"))

    def read_webhook(self, body: bytes, signature: str | None,
                     tolerance_seconds: float) -> Mapping[str, Any]:
        try:
            signatures.verify(body, signature, self.webhook_secret,
                              tolerance_seconds=tolerance_seconds)
            event: dict[str, Any] = json.loads(body)
        except (signatures.SignatureError, ValueError) as exc:
            raise WebhookSignatureInvalid(str(exc)) from None
        return event

    async def close(self) -> None:
        await self.http.aclose()

    async def _send(self, method: str, path: str, idempotency_key: str | None = None,
                    params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            response = await self.http.request(method, path, headers=headers,
                                               data=form(params or {}) or None)
        except httpx.TransportError as exc:  # no answer: timeouts and connection errors
            raise PaymentUnavailable(f"the sandbox did not answer: {exc!r}") from exc
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.is_success:
            return body
        raise wire.error_from(response.status_code, body)
