"""The payment provider interface, the resilience every call goes through, and the factory that
picks the provider once from settings.

`Resilient` wraps whichever provider runs: each call gets a timeout, is retried with jittered
exponential backoff (the house's tenacity-based `retry`) only when that is safe (no answer,
connection errors, 5xx, 429; never a decline or another 4xx), always with the caller's
idempotency key so a retried call cannot charge twice, and passes a circuit breaker that fails
fast while the provider keeps failing. The breaker sits inside the retries: every failed
attempt counts, and an open breaker ends the retries at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import structlog
from prometheus_client import Counter

from instock.config import Settings
from instock.payments.errors import CircuitOpen, PaymentUnavailable
from instock.payments.model import Observation
from instock.platform.breaker import Breaker, BreakerOpen
from instock.platform.retry import retry

T = TypeVar("T")
log = structlog.get_logger(__name__)

PROVIDER_CALLS = Counter("instock_payment_provider_calls_total",
                         "Payment provider calls (attempts) by provider, call and outcome",
                         ["provider", "call", "outcome"])


class PaymentProvider(Protocol):
    """What instock needs from a payment provider. Amounts are in the currency's minor unit;
    every command carries an idempotency key the provider must honour."""

    name: str

    async def authorise(self, *, payment_id: str, order_id: str, amount_minor: int,
                        currency: str, idempotency_key: str) -> Observation:
        """Create and confirm a payment for manual capture (hold the money)."""
        ...

    async def capture(self, provider_ref: str, *, idempotency_key: str) -> Observation: ...

    async def void(self, provider_ref: str, *, idempotency_key: str) -> Observation: ...

    async def refund(self, provider_ref: str, amount_minor: int | None, *,
                     idempotency_key: str) -> Observation:
        """Refund `amount_minor` (None: what is left); the news carries the totals after it."""
        ...

    async def retrieve(self, provider_ref: str) -> Observation: ...

    def read_webhook(self, body: bytes, signature: str | None,
                     tolerance_seconds: float) -> Mapping[str, Any]:
        """The verified webhook event; raises WebhookSignatureInvalid."""
        ...

    async def close(self) -> None: ...


def _is_failure(exc: BaseException) -> bool:
    """What says the provider is unwell. A decline or a rejected request is an answer."""
    return isinstance(exc, PaymentUnavailable | TimeoutError)


class Resilient:
    """A PaymentProvider that adds timeout, retries and a circuit breaker to another one."""

    def __init__(self, inner: PaymentProvider, *, timeout: float, attempts: int,
                 backoff: float, max_backoff: float, breaker: Breaker) -> None:
        self.inner = inner
        self.name = inner.name
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.breaker = breaker

    async def authorise(self, *, payment_id: str, order_id: str, amount_minor: int,
                        currency: str, idempotency_key: str) -> Observation:
        return await self._call("authorise", lambda: self.inner.authorise(
            payment_id=payment_id, order_id=order_id, amount_minor=amount_minor,
            currency=currency, idempotency_key=idempotency_key))

    async def capture(self, provider_ref: str, *, idempotency_key: str) -> Observation:
        return await self._call("capture", lambda: self.inner.capture(
            provider_ref, idempotency_key=idempotency_key))

    async def void(self, provider_ref: str, *, idempotency_key: str) -> Observation:
        return await self._call("void", lambda: self.inner.void(
            provider_ref, idempotency_key=idempotency_key))

    async def refund(self, provider_ref: str, amount_minor: int | None, *,
                     idempotency_key: str) -> Observation:
        return await self._call("refund", lambda: self.inner.refund(
            provider_ref, amount_minor, idempotency_key=idempotency_key))

    async def retrieve(self, provider_ref: str) -> Observation:
        return await self._call("retrieve", lambda: self.inner.retrieve(provider_ref))

    def read_webhook(self, body: bytes, signature: str | None,
                     tolerance_seconds: float) -> Mapping[str, Any]:
        return self.inner.read_webhook(body, signature, tolerance_seconds)

    async def close(self) -> None:
        await self.inner.close()

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        def retrying(exc: Exception) -> None:
            log.warning("payment_provider_retry", provider=self.name, call=what, error=str(exc))

        return await retry(lambda: self._attempt(what, call), retry_on=(PaymentUnavailable,),
                           except_for=(CircuitOpen,), attempts=self.attempts,
                           base_delay=self.backoff, max_delay=self.max_backoff,
                           on_retry=retrying)

    async def _attempt(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        outcome = "ok"
        try:
            async with self.breaker.guard(), asyncio.timeout(self.timeout):
                return await call()
        except BreakerOpen as exc:
            outcome = "circuit_open"
            raise CircuitOpen(f"{self.name} failed {self.breaker.threshold} times in a row; "
                              f"no calls for {exc.retry_after:.1f} s",
                              retry_after=round(exc.retry_after, 3)) from None
        except TimeoutError:
            outcome = "timeout"
            raise PaymentUnavailable(f"{self.name} did not answer {what} within "
                                     f"{self.timeout} s") from None
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            PROVIDER_CALLS.labels(self.name, what, outcome).inc()


def _sandbox(settings: Settings) -> PaymentProvider:
    from instock.payments.sandbox_provider import SandboxProvider

    return SandboxProvider(settings.payments_url, settings.payments_api_key,
                           settings.payments_webhook_secret, settings.payments_timeout_seconds)


def _stripe(settings: Settings) -> PaymentProvider:
    from instock.payments.stripe_provider import StripeProvider

    return StripeProvider(settings.payments_url, settings.payments_api_key,
                          settings.payments_webhook_secret, settings.payments_timeout_seconds)


PROVIDERS: dict[str, Callable[[Settings], PaymentProvider]] = {"sandbox": _sandbox,
                                                               "stripe": _stripe}


def make_provider(settings: Settings) -> Resilient:
    """The configured provider, made resilient. The one place that looks at which it is."""
    inner = PROVIDERS[settings.payment_provider](settings)
    breaker = Breaker(f"payments:{inner.name}", threshold=settings.payments_breaker_threshold,
                      cooldown=settings.payments_breaker_cooldown_seconds,
                      is_failure=_is_failure)
    return Resilient(inner, timeout=settings.payments_timeout_seconds,
                     attempts=settings.payments_retry_attempts,
                     backoff=settings.payments_retry_backoff_seconds,
                     max_backoff=settings.payments_retry_max_backoff_seconds, breaker=breaker)
