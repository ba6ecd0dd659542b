"""A payment provider, run as its own process: `instock sandbox payments`.

It speaks Stripe's wire format for what instock uses, so the `sandbox` provider (httpx) and the
`stripe` provider (the official SDK, pointed here) both talk to it:

- form-encoded `POST /v1/payment_intents` (`amount` in minor units, `currency`, `confirm`,
  `capture_method`, `payment_method`, `metadata[...]`), `POST /v1/payment_intents/{id}/confirm`,
  `/capture` (`amount_to_capture`), `/cancel`, `GET /v1/payment_intents/{id}`,
  `POST /v1/refunds` (`payment_intent`, `amount`, `expand[]=charge`), `GET /v1/charges/{id}`;
- `Idempotency-Key` as Stripe does it: a POST repeated with the same key and parameters gets
  the first answer again (header `Idempotent-Replayed: true`), with other parameters a 400
  `idempotency_error`; injected 5xx answers are not remembered (a retry runs for real);
- Stripe-shaped objects and errors (`{"error": {"type": "card_error", "code": "card_declined",
  "decline_code": …}}` with 402, `invalid_request_error` with 400/404, `api_error` with 5xx);
- webhooks to `--webhook-url`, signed `Stripe-Signature: t=…,v1=…` with `--webhook-secret`:
  `payment_intent.amount_capturable_updated`, `.succeeded`, `.payment_failed`, `.canceled`,
  `charge.refunded`, each optionally sent twice, or held and flushed out of order.

Faults and behaviour are set at start (`--latency-ms`) or at any time through
`POST /_sandbox/config` (latency; declines for all, the next N, given amounts, or the magic
payment methods `pm_card_chargeDeclined…` and `metadata[sandbox_decline]=<code>`; the next N
calls or all answering 5xx; the next N calls or all hanging for `hang_seconds`, after doing
their work (an ambiguous timeout) or before; webhook duplicates and holding).
`GET /_sandbox/payments/{id}`, `GET /_sandbox/stats`, `GET /_sandbox/events`,
`POST /_sandbox/reset`,
`POST /_sandbox/webhooks/flush` and `POST /_sandbox/webhooks/resend` are for tests and demos.
State lives in the process; it is a stand-in, not a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from instock.platform import signatures

log = structlog.get_logger(__name__)
API_VERSION = "2025-06-30.basil"
DECLINING_METHODS = {"pm_card_chargeDeclined": "generic_decline",
                     "pm_card_visa_chargeDeclined": "generic_decline",
                     "pm_card_visa_chargeDeclinedInsufficientFunds": "insufficient_funds",
                     "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
                     "pm_card_visa_chargeDeclinedFraudulent": "fraudulent",
                     "pm_card_chargeDeclinedExpiredCard": "expired_card"}
CANCELABLE = frozenset({"requires_payment_method", "requires_capture", "requires_confirmation",
                        "requires_action"})


class Config(BaseModel):
    """What the sandbox does; `POST /_sandbox/config` changes any part of it."""

    latency_ms: float = Field(default=0, ge=0)  # added to every API answer
    decline_all: bool = False
    decline_next: int = Field(default=0, ge=0)  # the next N confirmations are declined
    decline_amounts: list[int] = []  # amounts (minor units) that are always declined
    decline_code: str = "generic_decline"
    fail_all: bool = False  # every API call answers `fail_status` (the provider is down)
    fail_next: int = Field(default=0, ge=0)
    fail_status: int = Field(default=500, ge=429, le=599)
    timeout_all: bool = False  # every API call hangs `hang_seconds` before answering
    timeout_next: int = Field(default=0, ge=0)
    hang_seconds: float = Field(default=30.0, ge=0)
    # "after": the work is done and the answer is late (the client cannot know whether it
    # happened); "before": nothing happens, then an error after the hang.
    hang: Literal["after", "before"] = "after"
    webhook_url: str | None = None
    webhook_secret: str = "whsec_instock_sandbox"
    webhook_duplicates: bool = False  # every event is delivered twice
    webhook_hold: bool = False  # events wait for POST /_sandbox/webhooks/flush


class Flush(BaseModel):
    order: Literal["in_order", "reverse", "shuffle"] = "in_order"


class Resend(BaseModel):
    event_id: str
    age_seconds: int = 0  # sign it as if sent this long ago (a replay)


class ApiError(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.status, self.error = status, error


def invalid(message: str, *, code: str | None = None, param: str | None = None,
            status: int = 400) -> ApiError:
    return ApiError(status, {"type": "invalid_request_error", "message": message,
                             **({"code": code} if code else {}),
                             **({"param": param} if param else {})})


@dataclass
class Stored:
    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass
class Provider:
    """The sandbox's state: payments, idempotency records, counters, the webhook queue."""

    config: Config
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, Stored] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)
    outbox: asyncio.Queue[tuple[dict[str, Any], int]] = field(default_factory=asyncio.Queue)

    # -- the API's behaviour ----------------------------------------------------------------------

    def create_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = _int(params, "amount")
        if amount <= 0:
            raise invalid("Amount must be at least 1.", code="amount_too_small", param="amount")
        currency = str(params.get("currency") or "")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise invalid("Invalid currency.", code="parameter_invalid_string", param="currency")
        intent_id = _id("pi")
        method = params.get("payment_method")
        intent: dict[str, Any] = {
            "id": intent_id, "object": "payment_intent", "amount": amount,
            "amount_capturable": 0, "amount_received": 0, "currency": currency,
            "capture_method": params.get("capture_method") or "automatic_async",
            "confirmation_method": "automatic", "created": int(time.time()),
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(8)}",
            "description": params.get("description"), "last_payment_error": None,
            "latest_charge": None, "livemode": False, "metadata": params.get("metadata") or {},
            "payment_method": method, "payment_method_types": ["card"],
            "status": "requires_confirmation" if method else "requires_payment_method",
            "canceled_at": None, "cancellation_reason": None}
        self.intents[intent_id] = intent
        self.stats["intents_created"] += 1
        if _true(params.get("confirm")):
            self.confirm(intent, params)
        return intent

    def confirm(self, intent: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if params.get("payment_method"):
            intent["payment_method"] = params["payment_method"]
        if not intent["payment_method"]:
            raise invalid("You cannot confirm this PaymentIntent because it's missing a "
                          "payment method.", code="payment_intent_unexpected_state")
        if intent["status"] not in ("requires_confirmation", "requires_payment_method"):
            raise _unexpected_state(intent, "confirm")
        reason = self._decline_reason(intent)
        if reason is not None:
            self._decline(intent, reason)
        charge = self._charge(intent)
        if intent["capture_method"] == "manual":
            intent.update(status="requires_capture", amount_capturable=intent["amount"])
            self.stats["authorisations"] += 1
            self.emit("payment_intent.amount_capturable_updated", intent)
        else:
            self._take(intent, charge, intent["amount"])
            self.stats["authorisations"] += 1
        return intent

    def capture(self, intent: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if intent["status"] != "requires_capture":
            raise _unexpected_state(intent, "capture")
        amount = int(params.get("amount_to_capture") or intent["amount_capturable"])
        if not 0 < amount <= intent["amount_capturable"]:
            raise invalid("amount_to_capture is more than the capturable amount.",
                          code="amount_too_large", param="amount_to_capture")
        self._take(intent, self.charges[intent["latest_charge"]], amount)
        return intent

    def cancel(self, intent: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if intent["status"] not in CANCELABLE:
            raise _unexpected_state(intent, "cancel")
        reason = params.get("cancellation_reason") or "requested_by_customer"
        intent.update(status="canceled", amount_capturable=0, canceled_at=int(time.time()),
                      cancellation_reason=reason)
        self.stats["cancels"] += 1
        self.emit("payment_intent.canceled", intent)
        return intent

    def refund(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("payment_intent"):
            intent = self.intent(str(params["payment_intent"]), "payment_intent")
            charge_id = intent["latest_charge"]
            if intent["status"] != "succeeded" or charge_id is None:
                raise _unexpected_state(intent, "refund")
        elif params.get("charge"):
            charge_id = str(params["charge"])
            if charge_id not in self.charges:
                raise _missing("charge", charge_id, "charge")
        else:
            raise invalid("One of payment_intent or charge is required.",
                          code="parameter_missing", param="payment_intent")
        charge = self.charges[charge_id]
        left = charge["amount_captured"] - charge["amount_refunded"]
        if left <= 0:
            raise invalid(f"Charge {charge_id} has already been refunded.",
                          code="charge_already_refunded")
        amount = _int(params, "amount") if params.get("amount") is not None else left
        if not 0 < amount <= left:
            raise invalid(f"Refund amount ({amount}) is greater than unrefunded amount on "
                          f"charge ({left})", code="amount_too_large", param="amount")
        refund_id = _id("re")
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        refund = {"id": refund_id, "object": "refund", "amount": amount, "charge": charge_id,
                  "currency": charge["currency"], "payment_intent": charge["payment_intent"],
                  "status": "succeeded", "created": int(time.time()),
                  "metadata": params.get("metadata") or {}}
        self.refunds[refund_id] = refund
        charge["refunds"].append(refund_id)
        self.stats["refunds"] += 1
        self.emit("charge.refunded", charge)
        if "charge" in (params.get("expand") or []):
            return {**refund, "charge": copy.deepcopy(charge)}
        return refund

    def intent(self, intent_id: str, param: str = "intent") -> dict[str, Any]:
        if intent_id not in self.intents:
            raise _missing("payment_intent", intent_id, param)
        return self.intents[intent_id]

    def _decline_reason(self, intent: dict[str, Any]) -> str | None:
        cfg = self.config
        magic = (intent["metadata"].get("sandbox_decline")
                 or DECLINING_METHODS.get(str(intent["payment_method"])))
        if magic:
            return str(magic)
        if cfg.decline_all or intent["amount"] in cfg.decline_amounts:
            return cfg.decline_code
        if cfg.decline_next > 0:
            cfg.decline_next -= 1
            return cfg.decline_code
        return None

    def _decline(self, intent: dict[str, Any], reason: str) -> None:
        charge = self._charge(intent, failed=True)
        error = {"type": "card_error", "code": "card_declined", "decline_code": reason,
                 "message": "Your card was declined.", "charge": charge["id"],
                 "doc_url": "https://stripe.com/docs/error-codes/card-declined"}
        intent.update(status="requires_payment_method", last_payment_error=dict(error))
        self.stats["declines"] += 1
        self.emit("payment_intent.payment_failed", intent)
        raise ApiError(402, {**error, "payment_intent": copy.deepcopy(intent)})

    def _charge(self, intent: dict[str, Any], *, failed: bool = False) -> dict[str, Any]:
        charge = {"id": _id("ch"), "object": "charge", "amount": intent["amount"],
                  "amount_captured": 0, "amount_refunded": 0, "captured": False,
                  "currency": intent["currency"], "metadata": intent["metadata"],
                  "payment_intent": intent["id"], "refunded": False, "refunds": [],
                  "status": "failed" if failed else "succeeded", "created": int(time.time())}
        self.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        return charge

    def _take(self, intent: dict[str, Any], charge: dict[str, Any], amount: int) -> None:
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        charge.update(amount_captured=amount, captured=True)
        self.stats["captures"] += 1
        self.emit("payment_intent.succeeded", intent)

    # -- webhooks ---------------------------------------------------------------------------------

    def emit(self, kind: str, obj: dict[str, Any]) -> None:
        event = {"id": _id("evt"), "object": "event", "api_version": API_VERSION,
                 "created": int(time.time()), "type": kind, "livemode": False,
                 "pending_webhooks": 1, "data": {"object": copy.deepcopy(obj)},
                 "request": {"id": None, "idempotency_key": None}}
        self.events.append(event)
        if not self.config.webhook_url:
            return
        if self.config.webhook_hold:
            self.held.append(event)
        else:
            self.queue(event)

    def queue(self, event: dict[str, Any], age_seconds: int = 0) -> None:
        for _ in range(2 if self.config.webhook_duplicates else 1):
            self.outbox.put_nowait((event, age_seconds))
            self.stats["webhooks_queued"] += 1

    def flush(self, order: str) -> int:
        held, self.held = self.held, []
        if order == "reverse":
            held.reverse()
        elif order == "shuffle":
            random.shuffle(held)
        for event in held:
            self.queue(event)
        return len(held)

    async def deliver_forever(self) -> None:
        """One sender, first in first out, so a flush's order is the order of arrival."""
        async with httpx.AsyncClient(timeout=10.0) as http:
            while True:
                event, age = await self.outbox.get()
                await self._deliver(http, event, age)

    async def _deliver(self, http: httpx.AsyncClient, event: dict[str, Any], age: int) -> None:
        url = self.config.webhook_url
        if not url:
            return
        body = json.dumps(event).encode()
        for attempt in range(6):  # Stripe retries for days; a stand-in gives up sooner
            header = signatures.sign(body, self.config.webhook_secret, int(time.time()) - age)
            try:
                response = await http.post(url, content=body, headers={
                    "content-type": "application/json", "Stripe-Signature": header})
                if response.is_success:
                    self.stats["webhooks_sent"] += 1
                    return
                log.warning("sandbox_webhook_refused", status=response.status_code,
                            event=event["id"])
            except httpx.HTTPError as exc:
                log.warning("sandbox_webhook_failed", error=repr(exc), event=event["id"])
            self.stats["webhooks_failed"] += 1
            await asyncio.sleep(min(5.0, 0.1 * 2 ** attempt))
        self.stats["webhooks_dropped"] += 1

    # -- faults -----------------------------------------------------------------------------------

    def take_fault(self, flag: str, counter: str) -> bool:
        """Whether this call gets the fault: always while `flag` is on, else once per count."""
        if getattr(self.config, flag):
            return True
        left = getattr(self.config, counter)
        if left > 0:
            setattr(self.config, counter, left - 1)
            return True
        return False


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _true(value: Any) -> bool:
    return str(value).lower() == "true"


def _int(params: dict[str, Any], name: str) -> int:
    try:
        return int(params[name])
    except KeyError:
        raise invalid(f"Missing required param: {name}.", code="parameter_missing",
                      param=name) from None
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {params[name]}", code="parameter_invalid_integer",
                      param=name) from None


def _missing(kind: str, object_id: str, param: str) -> ApiError:
    return invalid(f"No such {kind}: '{object_id}'", code="resource_missing", param=param,
                   status=404)


def _unexpected_state(intent: dict[str, Any], action: str) -> ApiError:
    return ApiError(400, {
        "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
        "message": f"This PaymentIntent's {action} could not be performed because it has a "
                   f"status of {intent['status']}.",
        "payment_intent": copy.deepcopy(intent)})


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding back to nested values: `metadata[k]=v` -> {"metadata": {k: v}},
    `expand[0]=charge` or `expand[]=charge` -> {"expand": ["charge"]}."""
    params: dict[str, Any] = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)\[([^\[\]]*)\]", key)
        if match is None:
            params[key] = value
            continue
        name, inner = match.groups()
        if inner == "" or inner.isdigit():
            params.setdefault(name, []).append(value)
        else:
            params.setdefault(name, {})[inner] = value
    return params


Handler = Callable[[dict[str, Any]], dict[str, Any]]


def create_app(config: Config | None = None) -> FastAPI:
    provider = Provider(config or Config())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sender = asyncio.create_task(provider.deliver_forever())
        yield
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    app = FastAPI(title="instock payment sandbox (Stripe wire format)", lifespan=lifespan)
    app.state.provider = provider

    async def api(request: Request, handler: Handler) -> JSONResponse:
        """Everything around the work of one API call: auth, latency, injected faults, and
        idempotent replays."""
        provider.stats["requests"] += 1
        if not request.headers.get("authorization", "").startswith("Bearer sk_"):
            return _error(401, {"type": "invalid_request_error",
                                "message": "Invalid API Key provided."})
        if provider.config.latency_ms:
            await asyncio.sleep(provider.config.latency_ms / 1000)
        if provider.take_fault("fail_all", "fail_next"):
            provider.stats["injected_errors"] += 1
            return _error(provider.config.fail_status, {
                "type": "api_error", "message": "Something went wrong on the sandbox's end."})
        hang = provider.take_fault("timeout_all", "timeout_next")
        if hang:
            provider.stats["injected_timeouts"] += 1
            if provider.config.hang == "before":
                await asyncio.sleep(provider.config.hang_seconds)
                return _error(504, {"type": "api_error", "message": "Timed out."})
        status, body, replayed = await _run(request, handler)
        if hang:
            await asyncio.sleep(provider.config.hang_seconds)
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        headers["Request-Id"] = _id("req")
        return JSONResponse(body, status_code=status, headers=headers)

    async def _run(request: Request, handler: Handler) -> tuple[int, dict[str, Any], bool]:
        if request.method == "GET":
            params = decode_form(list(request.query_params.multi_items()))
        else:
            params = decode_form(parse_qsl((await request.body()).decode(),
                                           keep_blank_values=True))
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        fingerprint = json.dumps([request.url.path, params], sort_keys=True)
        if key is not None and key in provider.keys:
            stored = provider.keys[key]
            if stored.fingerprint != fingerprint:
                return 400, {"error": {
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same "
                               f"parameters they were first used with. Try using a key other "
                               f"than '{key}' if you meant to execute a different request."}}, \
                    False
            provider.stats["idempotent_replays"] += 1
            return stored.status, copy.deepcopy(stored.body), True
        try:
            status, body = 200, copy.deepcopy(handler(params))
        except ApiError as exc:
            status, body = exc.status, {"error": exc.error}
        if key is not None:  # remembered before any hang: the work is done
            provider.keys[key] = Stored(fingerprint, status, copy.deepcopy(body))
        return status, body, False

    @app.post("/v1/payment_intents")
    async def create_intent(request: Request) -> JSONResponse:
        return await api(request, provider.create_intent)

    @app.get("/v1/payment_intents/{intent_id}")
    async def retrieve_intent(intent_id: str, request: Request) -> JSONResponse:
        return await api(request, lambda params: provider.intent(intent_id))

    @app.post("/v1/payment_intents/{intent_id}/{action}")
    async def act_on_intent(intent_id: str, action: str, request: Request) -> JSONResponse:
        actions: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
            "confirm": provider.confirm, "capture": provider.capture, "cancel": provider.cancel}
        if action not in actions:
            return _error(404, {"type": "invalid_request_error",
                                "message": f"Unrecognized request URL: {request.url.path}"})
        return await api(request, lambda params: actions[action](provider.intent(intent_id),
                                                                  params))

    @app.post("/v1/refunds")
    async def create_refund(request: Request) -> JSONResponse:
        return await api(request, provider.refund)

    @app.get("/v1/charges/{charge_id}")
    async def retrieve_charge(charge_id: str, request: Request) -> JSONResponse:
        def found(params: dict[str, Any]) -> dict[str, Any]:
            if charge_id not in provider.charges:
                raise _missing("charge", charge_id, "charge")
            return provider.charges[charge_id]

        return await api(request, found)

    # -- control, for tests and demos -------------------------------------------------------------

    @app.get("/_sandbox/config")
    async def get_config() -> Config:
        return provider.config

    @app.post("/_sandbox/config")
    async def set_config(request: Request) -> Config:
        changes = await request.json()
        try:
            provider.config = Config.model_validate({**provider.config.model_dump(), **changes})
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return provider.config

    initial = provider.config.model_copy(deep=True)

    @app.post("/_sandbox/reset")
    async def reset() -> Config:
        """Back to the configuration it started with, counters at zero, nothing held (the
        payments stay): one sandbox process can serve many tests."""
        provider.config = initial.model_copy(deep=True)
        provider.stats.clear()
        provider.held.clear()
        return provider.config

    @app.get("/_sandbox/stats")
    async def stats() -> dict[str, int]:
        return {"payments": len(provider.intents), "held_webhooks": len(provider.held),
                **provider.stats}

    @app.get("/_sandbox/payments/{intent_id}")
    async def payment(intent_id: str) -> JSONResponse:
        intent = provider.intents.get(intent_id)
        if intent is None:
            return _error(404, {"type": "invalid_request_error",
                                "message": f"No such payment_intent: '{intent_id}'"})
        charge = provider.charges.get(intent["latest_charge"] or "")
        refunds = [provider.refunds[r] for r in charge["refunds"]] if charge else []
        return JSONResponse({**intent, "charge": charge, "refunds": refunds})

    @app.get("/_sandbox/events")
    async def events(type: str | None = None) -> list[dict[str, Any]]:
        return [e for e in provider.events if type is None or e["type"] == type]

    @app.post("/_sandbox/webhooks/flush")
    async def flush(body: Flush) -> dict[str, int]:
        return {"queued": provider.flush(body.order)}

    @app.post("/_sandbox/webhooks/resend")
    async def resend(body: Resend) -> JSONResponse:
        event = next((e for e in provider.events if e["id"] == body.event_id), None)
        if event is None:
            return _error(404, {"type": "invalid_request_error",
                                "message": f"No such event: '{body.event_id}'"})
        provider.queue(event, body.age_seconds)
        return JSONResponse({"queued": 1})

    return app


def _error(status: int, error: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


def serve(host: str, port: int, config: Config) -> None:
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level="warning",
                access_log=False)


def _die_with_parent() -> None:
    """In the child: end when the server ends. uvicorn re-raises the SIGTERM it shut down on,
    so the server dies by the signal and a `finally` of ours never runs to stop the child."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def beside_the_demo(payments_url: str, webhook_url: str,
                    webhook_secret: str) -> Iterator[subprocess.Popen[bytes] | None]:
    """For `instock serve --demo`: the sandbox as a child process at `payments_url`, so a
    checkout can be paid, unless something answers there already (or it is not this host)."""
    from instock.bench.local import instock_executable

    url = httpx.URL(payments_url)
    if url.host not in ("127.0.0.1", "localhost"):
        yield None
        return
    with contextlib.suppress(httpx.TransportError):
        httpx.get(f"{payments_url}/_sandbox/config", timeout=1)
        yield None  # already running
        return
    process = subprocess.Popen(
        [instock_executable(), "sandbox", "payments", "--host", url.host,
         "--port", str(url.port or 80), "--webhook-url", webhook_url, "--webhook-secret",
         webhook_secret], stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        yield process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
