"""Talking to marketplaces: one Protocol, one reference connector over HTTP.

The reference connector speaks the seller API of `instock sandbox marketplace` (in the style of
StockX's and GOAT's: absolute listing quantities per SKU, order cancellations). Every call has a
timeout; what is safe to repeat (a PUT of an absolute quantity, a GET, a cancellation carrying
an Idempotency-Key) is retried with exponential backoff and jitter, and a 429's Retry-After is
waited out as asked. Another marketplace is one more class with these methods, registered in
CONNECTORS under its connection kind.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import structlog

from instock.channels.model import Connection
from instock.platform.outbound import OutboundGuard, PinnedTransport
from instock.platform.retry import retry

log = structlog.get_logger(__name__)


class ConnectorError(Exception):
    """A marketplace call failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class RateLimited(ConnectorError):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, retryable=True, status=429)
        self.retry_after = retry_after


class MarketplaceConnector(Protocol):
    async def push_quantity(self, sku: str, quantity: int) -> None:
        """Set the listing of `sku` to `quantity` units (absolute, so repeating it is safe)."""

    async def listings(self) -> dict[str, int]:
        """Every listing's quantity, by SKU."""

    async def cancel_order(self, order_id: str, reason: str) -> None:
        """Cancel an order we cannot fill; the marketplace refunds its buyer."""

    async def aclose(self) -> None: ...


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


class HttpMarketplace:
    """The reference connector (kind `marketplace`)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 5.0, attempts: int = 4,
                 max_wait: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.attempts = attempts
        self.max_wait = max_wait
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=httpx.Timeout(timeout),
            headers={"Authorization": f"Bearer {api_key}"}, transport=transport)

    async def push_quantity(self, sku: str, quantity: int) -> None:
        await self._call("PUT", f"/v1/listings/{sku}", json={"quantity": quantity})

    async def listings(self) -> dict[str, int]:
        found: dict[str, int] = {}
        cursor: str | None = None
        while True:  # follows the marketplace's pages, if it pages
            body = await self._call("GET", "/v1/listings",
                                    params={"cursor": cursor} if cursor else None)
            for listing in body.get("listings", []):
                found[str(listing["sku"])] = int(listing["quantity"])
            cursor = body.get("next_cursor")
            if not cursor:
                return found

    async def cancel_order(self, order_id: str, reason: str) -> None:
        await self._call("POST", f"/v1/orders/{order_id}/cancel", json={"reason": reason},
                         headers={"Idempotency-Key": f"cancel-{order_id}"})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One call, tried again while its error says that may help (a 429 after the wait its
        Retry-After asks for, capped at `max_wait`)."""
        def retrying(exc: Exception) -> None:
            log.warning("marketplace_call_retry", method=method, path=path, error=str(exc))

        return await retry(
            lambda: self._once(method, path, **kwargs), retry_on=(ConnectorError,),
            retry_if=lambda exc: exc.retryable, attempts=self.attempts, base_delay=0.1,
            max_delay=self.max_wait, on_retry=retrying,
            wait_asked=lambda exc: exc.retry_after if isinstance(exc, RateLimited) else None)

    async def _once(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ConnectorError(f"{method} {path}: timed out", retryable=True) from exc
        except httpx.TransportError as exc:
            raise ConnectorError(f"{method} {path}: {type(exc).__name__}",
                                 retryable=True) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # a request that cannot be sent
            raise ConnectorError(f"{method} {path}: {exc}", retryable=False) from exc
        status = response.status_code
        if status == 429:
            raise RateLimited(f"{method} {path}: rate limited",
                              retry_after_seconds(response.headers.get("retry-after")))
        if status >= 400:
            # A 4xx other than 408/409/425 is our mistake, and sending it again will not help.
            raise ConnectorError(f"{method} {path}: HTTP {status} {response.text[:200]}",
                                 retryable=status >= 500 or status in (408, 409, 425),
                                 status=status)
        if not response.content:
            return {}
        body: dict[str, Any] = response.json()
        return body

ConnectorFactory = Callable[[Connection], MarketplaceConnector]

# Connection kind -> how to build its connector from a connection and the call settings.
# Every call goes through the guard: a base URL that (now) resolves inside is never called.
CONNECTORS: dict[str, Callable[[Connection, float, int, OutboundGuard],
                               MarketplaceConnector]] = {
    "marketplace": lambda c, timeout, attempts, guard: HttpMarketplace(
        c.base_url, c.api_key, timeout=timeout, attempts=attempts,
        transport=PinnedTransport(guard)),
}


def connector_factory(timeout: float, attempts: int,
                      guard: OutboundGuard | None = None) -> ConnectorFactory:
    """Builds the connector of a connection's kind with the configured timeout and attempts."""
    checked = guard or OutboundGuard()

    def build(connection: Connection) -> MarketplaceConnector:
        return CONNECTORS[connection.kind](connection, timeout, attempts, checked)

    return build
