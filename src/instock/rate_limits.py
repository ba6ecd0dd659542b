"""Every rate-limit policy of the API, declared in one place (the machinery: platform/ratelimit).

A request is counted against each policy below that applies to it, in this order, and refused
(429) by the first one that is full. Limits are on by default; `INSTOCK_RATE_LIMITS=off` turns
them off, and `INSTOCK_RATE_LIMIT_OVERRIDES='{"customer": "100/minute"}'` changes any of them.
The README's table lists them; keep the two in step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from instock.config import Settings
from instock.platform.ratelimit import OnStoreDown, Policy, RateLimiter, Who

# Never counted: the load balancer's and Prometheus's probes, the pages' static files.
EXEMPT = ("/livez", "/readyz", "/metrics", "/static/")

# The routes that reserve stock for a customer: a bot's loop in a drop.
RESERVING = (("POST", r"/v1/reservations"), ("POST", r"/v1/carts/[^/]+/items"),
             ("POST", r"/v1/checkout"))


def skus_of(body: Any) -> Iterable[str]:
    """The SKUs a reserving request asks for: its `lines` (a reservation, a checkout) or its
    own `sku` (an item added to a cart). A checkout of a cart names none: its items were counted
    when they were added."""
    if not isinstance(body, dict):
        return ()
    lines = body.get("lines")
    found = [line.get("sku") for line in lines if isinstance(line, dict)] \
        if isinstance(lines, list) else [body.get("sku")]
    return [sku[:128] for sku in found if isinstance(sku, str) and sku][:100]


POLICIES = (
    Policy("reservations", "20/minute", frozenset({Who.CUSTOMER}), RESERVING,
           extra_keys=skus_of,
           why="reservation attempts per customer per SKU: a drop's bots retry one SKU; a "
               "person asks a few times"),
    Policy("token", "20/minute", frozenset({Who.ANYONE}), (("POST", r"/v1/oauth/token"),),
           on_store_down=OnStoreDown.CLOSED,
           why="client-credentials attempts per client address: guessing secrets stays slow, "
               "and stops rather than runs unwatched when the counters are down"),
    Policy("graphql", "100000/minute", frozenset({Who.ANYONE}),
           (("POST", r"/graphql"), ("GET", r"/graphql")), weighted=True,
           why="GraphQL query cost per client (what each answer reports in extensions.cost; "
               "a page of 50 products with their stock is about 1,150)"),
    Policy("anonymous", "300/minute", frozenset({Who.ANONYMOUS}),
           why="requests without a valid token, per client address (the storefront's public "
               "reads, scrapers, credential guessing)"),
    Policy("customer", "600/minute", frozenset({Who.CUSTOMER}),
           why="every request of one customer"),
    Policy("staff", "3000/minute", frozenset({Who.STAFF}),
           why="every request of one member of staff (consoles, scripts)"),
    Policy("service", "30000/minute", frozenset({Who.SERVICE}),
           why="every request of one service or integration key"),
)


def policies(overrides: Mapping[str, str]) -> tuple[Policy, ...]:
    """The declared policies, with the limits `overrides` names changed (an unknown name is an
    error: a typo must not leave a limit where it was)."""
    unknown = set(overrides) - {p.name for p in POLICIES}
    if unknown:
        raise ValueError(f"unknown rate-limit policies in overrides: {sorted(unknown)}")
    return tuple(p.with_limit(overrides[p.name]) if p.name in overrides else p
                 for p in POLICIES)


def limiter(settings: Settings) -> RateLimiter | None:
    """The API's rate limiter as the settings ask for it (None: limits are off)."""
    if settings.rate_limits == "off":
        return None
    return RateLimiter(policies(settings.rate_limit_overrides), settings.redis_url,
                       timeout_seconds=settings.rate_limit_store_timeout_seconds)


def trusted_proxies(settings: Settings) -> list[str]:
    """The configured trusted proxies, each checked to be an address or a CIDR range (the
    proxy-headers middleware would take a typo for a host name and trust nothing)."""
    found = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    for proxy in found:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ValueError(f"INSTOCK_TRUSTED_PROXIES: {proxy!r} is not an address or a "
                             f"CIDR range") from exc
    return found


__all__ = ["EXEMPT", "POLICIES", "OnStoreDown", "limiter", "policies", "skus_of",
           "trusted_proxies"]
