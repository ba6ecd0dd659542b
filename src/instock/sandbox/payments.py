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
State lives in the process (`instock.sandbox.payment_provider`); it is a stand-in, not a
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from instock.sandbox.payment_provider import (
    ApiError,
    Config,
    Flush,
    Provider,
    Resend,
    Stored,
    decode_form,
    missing,
    object_id,
)

Handler = Callable[[dict[str, Any]], dict[str, Any]]
router = APIRouter()


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
    app.include_router(router)
    return app


def _provider(request: Request) -> Provider:
    provider: Provider = request.app.state.provider
    return provider


async def api(request: Request, handler: Handler) -> JSONResponse:
    """Everything around the work of one API call: auth, latency, injected faults, and
    idempotent replays."""
    provider = _provider(request)
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
    status, body, replayed = await _run(provider, request, handler)
    if hang:
        await asyncio.sleep(provider.config.hang_seconds)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    headers["Request-Id"] = object_id("req")
    return JSONResponse(body, status_code=status, headers=headers)


async def _run(provider: Provider, request: Request,
               handler: Handler) -> tuple[int, dict[str, Any], bool]:
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


@router.post("/v1/payment_intents")
async def create_intent(request: Request) -> JSONResponse:
    return await api(request, _provider(request).create_intent)


@router.get("/v1/payment_intents/{intent_id}")
async def retrieve_intent(intent_id: str, request: Request) -> JSONResponse:
    return await api(request, lambda params: _provider(request).intent(intent_id))


@router.post("/v1/payment_intents/{intent_id}/{action}")
async def act_on_intent(intent_id: str, action: str, request: Request) -> JSONResponse:
    provider = _provider(request)
    actions: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
        "confirm": provider.confirm, "capture": provider.capture, "cancel": provider.cancel}
    if action not in actions:
        return _error(404, {"type": "invalid_request_error",
                            "message": f"Unrecognized request URL: {request.url.path}"})
    return await api(request, lambda params: actions[action](provider.intent(intent_id),
                                                              params))


@router.post("/v1/refunds")
async def create_refund(request: Request) -> JSONResponse:
    return await api(request, _provider(request).refund)


@router.get("/v1/charges/{charge_id}")
async def retrieve_charge(charge_id: str, request: Request) -> JSONResponse:
    provider = _provider(request)

    def found(params: dict[str, Any]) -> dict[str, Any]:
        if charge_id not in provider.charges:
            raise missing("charge", charge_id, "charge")
        return provider.charges[charge_id]

    return await api(request, found)


# -- control, for tests and demos -------------------------------------------------------------


@router.get("/_sandbox/config")
async def get_config(request: Request) -> Config:
    return _provider(request).config


@router.post("/_sandbox/config")
async def set_config(request: Request) -> Config:
    provider = _provider(request)
    changes = await request.json()
    try:
        provider.config = Config.model_validate({**provider.config.model_dump(), **changes})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    return provider.config


@router.post("/_sandbox/reset")
async def reset(request: Request) -> Config:
    """Back to the configuration it started with, counters at zero, nothing held (the
    payments stay): one sandbox process can serve many tests."""
    provider = _provider(request)
    provider.reset()
    return provider.config


@router.get("/_sandbox/stats")
async def stats(request: Request) -> dict[str, int]:
    provider = _provider(request)
    return {"payments": len(provider.intents), "held_webhooks": len(provider.held),
            **provider.stats}


@router.get("/_sandbox/payments/{intent_id}")
async def payment(intent_id: str, request: Request) -> JSONResponse:
    provider = _provider(request)
    intent = provider.intents.get(intent_id)
    if intent is None:
        return _error(404, {"type": "invalid_request_error",
                            "message": f"No such payment_intent: '{intent_id}'"})
    charge = provider.charges.get(intent["latest_charge"] or "")
    refunds = [provider.refunds[r] for r in charge["refunds"]] if charge else []
    return JSONResponse({**intent, "charge": charge, "refunds": refunds})


@router.get("/_sandbox/events")
async def events(request: Request, type: str | None = None) -> list[dict[str, Any]]:
    return [e for e in _provider(request).events if type is None or e["type"] == type]


@router.post("/_sandbox/webhooks/flush")
async def flush(body: Flush, request: Request) -> dict[str, int]:
    return {"queued": _provider(request).flush(body.order)}


@router.post("/_sandbox/webhooks/resend")
async def resend(body: Resend, request: Request) -> JSONResponse:
    provider = _provider(request)
    event = next((e for e in provider.events if e["id"] == body.event_id), None)
    if event is None:
        return _error(404, {"type": "invalid_request_error",
                            "message": f"No such event: '{body.event_id}'"})
    provider.queue(event, body.age_seconds)
    return JSONResponse({"queued": 1})


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
    process = subprocess.Popen(  # noqa: S603 - our own executable
        [instock_executable(), "sandbox", "payments", "--host", url.host,
         "--port", str(url.port or 80), "--webhook-url", webhook_url, "--webhook-secret",
         webhook_secret], stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        yield process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
