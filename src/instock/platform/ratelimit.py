"""Rate limits: declared policies, enforced by one ASGI middleware with a sliding-window counter.

The policies themselves are declared in one place (`instock.rate_limits`); this module is the
machinery. For each request the middleware finds the client (its address, as
`ProxyHeadersMiddleware` left it, and the principal of a valid bearer token), then counts the
request against every policy that applies, in declaration order:
- a policy counts the requests of some clients (`who`: anonymous, customers, staff, services or
  anyone) on some routes (every route when it names none);
- its counter is kept per client (the address of an anonymous one, else the token's subject)
  and, for a route class such as reservations, per extra key taken from the request (each SKU of
  the body), so one customer's attempts on one SKU are counted apart from its others;
- a request is refused (429 problem+json, `Retry-After`) if any counter it reaches is full.

Answers carry the IETF `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-
headers: `"name";q=quota;w=window` and `"name";r=remaining;t=seconds`) of the policies applied.

Counters live in Redis when one is configured (every API process then shares them) and in the
process otherwise. When the store cannot answer, each policy decides (`on_store_down`): `open`
lets the request through (selling must not stop because a counter is unreachable), `closed`
refuses it with 503 (a credential endpoint would rather stop than be brute-forced unwatched).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instock.platform.auth import Principal, Role, TokenAuthority
from instock.platform.errors import (
    InstockError,
    RateLimited,
    RateLimitUnavailable,
    send_problem,
)

log = structlog.get_logger(__name__)

_DECISIONS = Counter("instock_rate_limit_decisions_total",
                     "Requests counted by a rate-limit policy, by outcome",
                     ["policy", "outcome"])

# Bodies are read for extra keys only up to this size; a larger one is counted without them
# (the route refuses it as too large anyway).
MAX_KEYED_BODY = 64 * 1024


class Who(StrEnum):
    ANONYMOUS = "anonymous"  # no valid bearer token: counted per client address
    CUSTOMER = "customer"
    STAFF = "staff"  # every role but customer and service
    SERVICE = "service"
    ANYONE = "anyone"


class OnStoreDown(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Client:
    address: str
    principal: Principal | None

    @property
    def who(self) -> Who:
        if self.principal is None:
            return Who.ANONYMOUS
        if self.principal.role is Role.CUSTOMER:
            return Who.CUSTOMER
        return Who.SERVICE if self.principal.role is Role.SERVICE else Who.STAFF

    @property
    def key(self) -> str:
        return f"ip:{self.address}" if self.principal is None else f"sub:{self.principal.subject}"


# Extra keys of one request, from its parsed JSON body (None when it has none or it is not
# JSON): each is counted apart, and the request is refused if any is full.
ExtraKeys = Callable[[Any], Iterable[str]]


@dataclass(frozen=True)
class Policy:
    """One declared limit. `limit` is in the `limits` notation ("30/minute", "5 per second");
    `routes` are (method, path pattern) pairs, the pattern a regular expression matched
    against the whole path; none means every route."""

    name: str
    limit: str
    who: frozenset[Who]
    routes: tuple[tuple[str, str], ...] = ()
    extra_keys: ExtraKeys | None = None
    on_store_down: OnStoreDown = OnStoreDown.OPEN
    why: str = ""
    # Counted by the cost its route measures (a GraphQL query's), not by the middleware.
    weighted: bool = False
    item: RateLimitItem = field(init=False, repr=False, compare=False)
    _patterns: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False,
                                                               compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "item", parse(self.limit))
        object.__setattr__(self, "_patterns", tuple(
            (method, re.compile(pattern)) for method, pattern in self.routes))

    def with_limit(self, limit: str) -> Policy:
        return dataclasses.replace(self, limit=limit)

    def applies(self, method: str, path: str, who: Who) -> bool:
        if Who.ANYONE not in self.who and who not in self.who:
            return False
        return not self._patterns or any(
            m == method and p.fullmatch(path) for m, p in self._patterns)

    @property
    def quota(self) -> int:
        return self.item.amount

    @property
    def window(self) -> int:
        return self.item.get_expiry()


@dataclass(frozen=True)
class Count:
    """One counter after this request: whether it let the request through, what is left."""

    policy: Policy
    allowed: bool
    remaining: int
    reset_seconds: int


class StoreDown(Exception):
    """The counter store did not answer."""


class RateLimiter:
    """The declared policies over one counter store."""

    def __init__(self, policies: Sequence[Policy], storage_url: str | None = None, *,
                 prefix: str = "instock:ratelimit", timeout_seconds: float = 0.25) -> None:
        """`timeout_seconds`: how long a count waits for the store before it is down."""
        self.policies = tuple(policies)
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError(f"rate-limit policy names must be unique: {names}")
        self.storage: Storage = (
            RedisStorage("async+" + storage_url, implementation="redispy", key_prefix=prefix,
                         wrap_exceptions=True, socket_timeout=timeout_seconds,
                         socket_connect_timeout=timeout_seconds)
            if storage_url else MemoryStorage())
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    def applying(self, method: str, path: str, who: Who) -> list[Policy]:
        return [p for p in self.policies if p.applies(method, path, who)]

    async def count(self, policy: Policy, keys: Sequence[str], cost: int = 1) -> Count:
        """Count one request of `cost` against each of the policy's counters `keys`: the
        fullest of them (refused if any refused). Raises StoreDown."""
        worst: Count | None = None
        try:
            for key in keys:
                allowed = await self.strategy.hit(policy.item, policy.name, key, cost=cost)
                window = await self.storage.get_sliding_window(  # type: ignore[attr-defined]
                    policy.item.key_for(policy.name, key), policy.window)
                found = counted(policy, allowed, *window, cost=cost)
                if worst is None or (worst.allowed, worst.remaining) > (found.allowed,
                                                                         found.remaining):
                    worst = found
        except Exception as exc:  # any failure of the store is the store down
            raise StoreDown(f"{type(exc).__name__}: {exc}") from exc
        assert worst is not None
        return worst

    async def close(self) -> None:
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        aclose = getattr(client, "aclose", None)
        if aclose is not None:
            await aclose()


def counted(policy: Policy, allowed: bool, previous: int, previous_weight: float,
            current: int, current_expires_in: float, *, cost: int = 1) -> Count:
    """A counter as the store reported it after a hit (`limits`' sliding-window counter: the
    previous window's count weighs in by the share of it still inside the sliding window, which
    is the part of the current window still to come, `previous_weight` seconds).

    `reset_seconds` is when a request of `cost` fits again if none does now (what Retry-After
    must say: the library's own reset time is only when the current window ends, and a full
    previous window may still refuse then), else when the current window ends."""
    window, amount = policy.window, policy.quota
    left = current_expires_in - window if current else previous_weight
    weighted = previous * previous_weight / window + current
    remaining = max(0, amount - math.floor(weighted))
    room = amount - cost + 1  # a request fits while the weighted count stays below this
    if weighted < room:
        wait = left
    elif current < room:  # the previous window's share must fade enough
        wait = previous_weight - (room - current) * window / previous
    else:  # the current window must end, then its own count fade
        wait = left + window - room * window / current
    # The first whole second after it: at the exact moment the count still equals the bound.
    return Count(policy, allowed, remaining, max(1, math.floor(wait) + 1))


def policy_header(counts: Sequence[Count]) -> str:
    return ", ".join(f'"{c.policy.name}";q={c.policy.quota};w={c.policy.window}'
                     for c in counts)


def state_header(counts: Sequence[Count]) -> str:
    return ", ".join(f'"{c.policy.name}";r={c.remaining};t={c.reset_seconds}' for c in counts)


class Refused(Exception):
    """A request over a limit (429), or one a closed policy could not count (503): the error
    to answer with and the headers to send."""

    def __init__(self, error: InstockError, headers: dict[str, str]) -> None:
        super().__init__(error.detail)
        self.error, self.headers = error, headers


async def count_request(limiter: RateLimiter, policies: Sequence[Policy], client: Client,
                        body: Any = None, cost: int = 1) -> list[Count]:
    """Count one request against each policy in turn: the counts to advertise. Raises Refused
    at the first policy that is full (or that fails closed with its store down)."""
    counts: list[Count] = []
    for policy in policies:
        keys = [client.key]
        if policy.extra_keys is not None:
            extra = sorted(set(policy.extra_keys(body)))
            if not extra:
                continue  # nothing to count per key (the route refuses such a body)
            keys = [f"{client.key}|{key}" for key in extra]
        try:
            count = await limiter.count(policy, keys, cost)
        except StoreDown as exc:
            log.warning("rate_limit_store_down", policy=policy.name, error=str(exc),
                        on_store_down=policy.on_store_down.value)
            _DECISIONS.labels(policy.name, f"store_down_{policy.on_store_down}").inc()
            if policy.on_store_down is OnStoreDown.CLOSED:
                raise Refused(RateLimitUnavailable(
                    f"policy {policy.name} fails closed and its counter store is down"),
                    {"retry-after": "1"}) from exc
            continue
        _DECISIONS.labels(policy.name, "allowed" if count.allowed else "limited").inc()
        if not count.allowed:
            raise Refused(RateLimited(
                f"over the {policy.name} limit of {policy.limit}; retry after "
                f"{count.reset_seconds} s", policy=policy.name), {
                "retry-after": str(count.reset_seconds),
                "ratelimit-policy": policy_header([count]), "ratelimit": state_header([count])})
        counts.append(count)
    return counts


def advertised(counts: Sequence[Count]) -> dict[str, str]:
    return {"ratelimit-policy": policy_header(counts),
            "ratelimit": state_header(counts)} if counts else {}


@dataclass(frozen=True)
class Weighed:
    """The policies of a request whose cost only its route can measure (a GraphQL query,
    before it runs): the middleware leaves this in the request's state, the route charges it."""

    limiter: RateLimiter
    policies: tuple[Policy, ...]
    client: Client

    async def charge(self, cost: int) -> dict[str, str]:
        """Count the request at `cost`: the headers to advertise. Raises Refused."""
        return advertised(await count_request(self.limiter, self.policies, self.client,
                                              cost=max(1, cost)))


STATE_KEY = "rate_limit"  # where a Weighed waits in the request's state


class RateLimitMiddleware:
    """Counts every HTTP request against the policies that apply, refusing what is over.

    Plain ASGI (no BaseHTTPMiddleware): streaming answers (SSE) pass through untouched, and a
    request that needs no body for its keys is never buffered."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, tokens: TokenAuthority,
                 exempt: Sequence[str] = ()) -> None:
        self.app, self.limiter, self.tokens = app, limiter, tokens
        self.exempt = tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        client = Client(_address(scope), self._principal(scope))
        policies = self.limiter.applying(scope["method"], scope["path"], client.who)
        weighted = tuple(p for p in policies if p.weighted)
        if weighted:
            scope.setdefault("state", {})[STATE_KEY] = Weighed(self.limiter, weighted, client)
        policies = [p for p in policies if not p.weighted]
        body: Any = None
        if any(p.extra_keys is not None for p in policies):
            raw, receive = await _buffered(receive)
            body = _json(raw)
        try:
            counts = await count_request(self.limiter, policies, client, body)
        except Refused as refused:
            await send_problem(send, refused.error, headers=refused.headers)
            return
        if not counts:
            await self.app(scope, receive, send)
            return
        added = [(k.encode(), v.encode()) for k, v in advertised(counts).items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _principal(self, scope: Scope) -> Principal | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not token:
                    return None
                try:
                    return self.tokens.verify(token.strip())
                except InstockError:  # invalid here is anonymous; the route answers 401
                    return None
        return None


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The request body read whole (up to MAX_KEYED_BODY, beyond which the rest streams on),
    and a `receive` that hands the app the same body."""
    chunks: list[bytes] = []
    size, more = 0, True
    messages: list[Message] = []
    while more and size <= MAX_KEYED_BODY:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    replay = iter(messages)

    async def replaying() -> Message:
        for message in replay:
            return message
        return await receive()

    return (b"".join(chunks) if not more else b""), replaying


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
