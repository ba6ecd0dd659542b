"""The payment sandbox's state and behaviour: Stripe-shaped payment intents, charges and
refunds, idempotency records, injected faults and the webhook sender. The HTTP face is
`instock.sandbox.payments`."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel, Field

from instock.platform import signatures
from instock.platform.retry import backoff

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
    webhook_secret: str = "whsec_instock_sandbox"  # noqa: S105 - the sandbox's published test secret
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
    # The configuration it started with, for POST /_sandbox/reset.
    initial: Config = field(init=False)

    def __post_init__(self) -> None:
        self.initial = self.config.model_copy(deep=True)

    def reset(self) -> None:
        """Back to the configuration it started with, counters at zero, nothing held (the
        payments stay): one sandbox process can serve many tests."""
        self.config = self.initial.model_copy(deep=True)
        self.stats.clear()
        self.held.clear()

    # -- the API's behaviour ----------------------------------------------------------------------

    def create_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = _int(params, "amount")
        if amount <= 0:
            raise invalid("Amount must be at least 1.", code="amount_too_small", param="amount")
        currency = str(params.get("currency") or "")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise invalid("Invalid currency.", code="parameter_invalid_string", param="currency")
        intent_id = object_id("pi")
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
                raise missing("charge", charge_id, "charge")
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
        refund_id = object_id("re")
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
            raise missing("payment_intent", intent_id, param)
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
        charge = {"id": object_id("ch"), "object": "charge", "amount": intent["amount"],
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
        event = {"id": object_id("evt"), "object": "event", "api_version": API_VERSION,
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
            await asyncio.sleep(backoff(attempt + 1, base=0.1, cap=5.0))
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


def object_id(prefix: str) -> str:
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


def missing(kind: str, wanted: str, param: str) -> ApiError:
    return invalid(f"No such {kind}: '{wanted}'", code="resource_missing", param=param,
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
