"""The `sandbox` provider: plain HTTP against `instock sandbox payments`, which speaks Stripe's
wire format, so the answers are read by the same `wire` module as Stripe's.

Through aiohttp, not httpx: a checkout makes two calls, and httpx's request path (its request
and response objects, httpcore's pool and anyio's streams) was 9.5 % of an API process's CPU
samples at checkout saturation, about 2 ms a call; aiohttp's is about a third of that. One
session for the process, keep-alive, made on first use (it belongs to an event loop).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from instock.payments import wire
from instock.payments.errors import PaymentUnavailable, WebhookSignatureInvalid
from instock.payments.model import Observation
from instock.platform import signatures, tracing

# Below the sandbox's (uvicorn's) 5 s: a pooled connection is dropped here before the server
# closes it, so a call never goes out on a connection that is being closed.
KEEPALIVE_SECONDS = 4.0


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
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        if self._http is not None and not self._http.closed:
            await self._http.close()
        self._http = None

    def _session(self) -> aiohttp.ClientSession:
        """The process's session, made in (and for) the running loop: a test's next loop gets
        its own."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.closed or self._loop is not loop:
            self._loop = loop
            self._http = aiohttp.ClientSession(
                headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS))
        return self._http

    async def _send(self, method: str, path: str, idempotency_key: str | None = None,
                    params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        data = form(params or {}) or None
        # The client span and traceparent httpx's instrumentation made for this call.
        with tracing.span(method, kind=tracing.SpanKind.CLIENT,
                          attributes={"http.request.method": method,
                                      "url.full": self.url + path}):
            traceparent = tracing.current_traceparent()  # None at once when tracing is off
            if traceparent is not None:
                headers["traceparent"] = traceparent
            try:
                async with self._session().request(method, self.url + path, headers=headers,
                                                   data=data, allow_redirects=False) as response:
                    status, raw = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:  # no answer, or a broken one
                raise PaymentUnavailable(f"the sandbox did not answer: {exc!r}") from exc
        try:
            body: dict[str, Any] = orjson.loads(raw)
        except ValueError:
            body = {}
        if 200 <= status < 300:
            return body
        raise wire.error_from(status, body)
