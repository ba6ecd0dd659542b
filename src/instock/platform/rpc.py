"""gRPC between the house's processes: the plumbing every context's `grpc.py` shares.

A context that runs in another process is called through a `Remote` (the client side) and
answers through its servicer, whose methods wrap their work in `answered` (the server side).
What crosses the wire besides the message:
- a service token (`authorization: Bearer …`, minted by the caller with the fleet's shared
  key, role `service`): a server answers only services and admins;
- the caller's trace (`traceparent`), so one trace spans both processes;
- on failure, the house's problem document (RFC 9457) in the trailing metadata
  `instock-problem-bin`, beside a gRPC status code, so the caller raises the very error type
  it would have got in-process (an `InsufficientStockConflict` stays one).

The client side: a deadline on every call; retries only for calls marked `safe` (reads, and
writes whose repeat is the same as one: they carry an idempotency key or a reference), only
on a transport failure; a circuit breaker, so a caller does not queue behind a callee that is
down. Neither a retry nor the breaker counts a domain error (a 409 is an answer).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import orjson
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from instock.platform import tracing
from instock.platform.breaker import Breaker, BreakerOpen
from instock.platform.errors import Forbidden, InstockError, error_of
from instock.platform.principal import Principal, Role
from instock.platform.retry import retry
from instock.platform.tokens import InvalidToken, TokenAuthority

log = structlog.get_logger(__name__)
T = TypeVar("T")

PROBLEM_KEY = "instock-problem-bin"
SERVICE_TOKEN_SECONDS = 3600
CALLERS = frozenset({Role.SERVICE, Role.ADMIN})

# HTTP status of the problem -> the gRPC code a gRPC client expects for it.
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
          409: grpc.StatusCode.FAILED_PRECONDITION, 412: grpc.StatusCode.FAILED_PRECONDITION,
          422: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
          503: grpc.StatusCode.UNAVAILABLE}
# Transport failures: the call may not have reached the callee, or its answer was lost.
_TRANSPORT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                        grpc.StatusCode.INTERNAL})


class RemoteUnavailable(InstockError):
    """A context in another process could not be reached (down, too slow, or its breaker is
    open): try again later."""

    status, slug, title = 503, "dependency-unavailable", "A service this needs is unavailable"


# -- server side ---------------------------------------------------------------------------------


async def answered(context: grpc.aio.ServicerContext, tokens: TokenAuthority,
                   work: Callable[[Principal], Awaitable[T]], what: str) -> T:
    """Run one RPC's work for an authenticated service caller, in a span that continues the
    caller's trace; an error of the house ends the call with its status and problem."""
    metadata = dict(context.invocation_metadata() or ())
    parent = tracing.context_of(_text(metadata.get("traceparent")))
    with tracing.span(f"grpc {what}", kind=tracing.SpanKind.SERVER, parent=parent,
                      attributes={"rpc.system": "grpc", "rpc.method": what}):
        try:
            return await work(_caller(tokens, metadata))
        except InstockError as exc:
            await _abort(context, exc)
    raise AssertionError("unreachable")  # abort raises


def _caller(tokens: TokenAuthority, metadata: dict[str, Any]) -> Principal:
    """The calling service, from its bearer token; Unauthorized or Forbidden otherwise."""
    scheme, _, token = _text(metadata.get("authorization")).partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken("missing", "send authorization: Bearer <token>")
    principal = tokens.verify(token)
    if principal.role not in CALLERS:
        raise Forbidden(f"role {principal.role.value} may not call services")
    return principal


async def _abort(context: grpc.aio.ServicerContext, exc: InstockError) -> None:
    problem = orjson.dumps(exc.problem())
    await context.abort(_CODES.get(exc.status, grpc.StatusCode.UNKNOWN), exc.detail,
                        trailing_metadata=((PROBLEM_KEY, problem),))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


@dataclass
class RpcServer:
    """The process's gRPC server: the mounted contexts' servicers and the standard health
    service (`grpc.health.v1`, what Kubernetes' gRPC probes ask)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let calls in flight finish for up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(host: str, port: int,
                       add: Sequence[tuple[str, Callable[[grpc.aio.Server], None]]]
                       ) -> RpcServer:
    """Serve the given services (full name, and how to add its servicer) on host:port (0: any
    free port); every one reported SERVING to the health service."""
    server = grpc.aio.server()
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    for name, adder in add:
        adder(server)
        await checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("grpc_serving", port=bound, services=[name for name, _ in add])
    return RpcServer(server, bound, checks)


# -- client side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallPolicy:
    deadline_seconds: float = 5.0
    attempts: int = 3  # for safe calls; others are tried once
    breaker_threshold: int = 5
    breaker_cooldown_seconds: float = 5.0


def target_of(url: str) -> str:
    """`grpc://host:port` (the settings' form) as gRPC's target `host:port`."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "grpc" or not rest.strip("/"):
        raise ValueError(f"expected grpc://host:port, got {url!r}")
    return rest.strip("/")


class Remote:
    """One connection to a context served by another process, shared by all its calls."""

    def __init__(self, name: str, url: str, tokens: TokenAuthority,
                 policy: CallPolicy = CallPolicy()) -> None:
        self.name = name
        self.policy = policy
        self.target = target_of(url)
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[Callable[[grpc.aio.Channel], Any], Any] = {}
        self._tokens = tokens
        self._token: tuple[str, float] | None = None
        self.breaker = Breaker(f"grpc-{name}", threshold=policy.breaker_threshold,
                               cooldown=policy.breaker_cooldown_seconds,
                               is_failure=lambda exc: isinstance(exc, RemoteUnavailable))

    @property
    def channel(self) -> grpc.aio.Channel:
        """The connection, made at first use: a gRPC channel belongs to the event loop it is
        made on, and the composition root builds its clients before any loop runs."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=[
                # Notice a dead peer between calls (a killed process), not at the next deadline.
                ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
                # A callee restarted in a rolling deploy is back within a second or two: try
                # it again that soon (gRPC's default backoff grows to two minutes).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 2000)])
            self._stubs = {}
        return self._channel

    async def call(self, stub: Callable[[grpc.aio.Channel], Any], method: str, request: Any, *,
                   safe: bool) -> Any:
        """`stub(channel).method(request)` with a deadline, through the breaker; retried on a
        transport failure only when `safe`."""
        async def once() -> Any:
            try:
                async with self.breaker.guard():
                    try:
                        return await getattr(self._stub(stub), method)(
                            request, timeout=self.policy.deadline_seconds,
                            metadata=self._metadata())
                    except grpc.aio.AioRpcError as err:
                        raise self._raised(err) from None
            except BreakerOpen as exc:
                raise RemoteUnavailable(str(exc), retry_after=round(exc.retry_after, 1)) from None

        if not safe:
            return await once()
        return await retry(once, retry_on=(RemoteUnavailable,), attempts=self.policy.attempts,
                           base_delay=0.05, max_delay=0.5)

    def _stub(self, stub: Callable[[grpc.aio.Channel], Any]) -> Any:
        channel = self.channel
        if stub not in self._stubs:
            self._stubs[stub] = stub(channel)
        return self._stubs[stub]

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        now = time.time()
        if self._token is None or self._token[1] - now < SERVICE_TOKEN_SECONDS / 4:
            self._token = (self._tokens.mint(Role.SERVICE, f"service:{self.name}",
                                             ttl_seconds=SERVICE_TOKEN_SECONDS),
                           now + SERVICE_TOKEN_SECONDS)
        metadata = [("authorization", f"Bearer {self._token[0]}")]
        traceparent = tracing.current_traceparent()
        if traceparent:
            metadata.append(("traceparent", traceparent))
        return tuple(metadata)

    def _raised(self, err: grpc.aio.AioRpcError) -> Exception:
        """The house's error for a failed call: the callee's own, from its problem document,
        or RemoteUnavailable for a transport failure."""
        problem = dict(err.trailing_metadata() or ()).get(PROBLEM_KEY)
        if problem:
            return error_of(orjson.loads(problem))
        if err.code() in _TRANSPORT:
            return RemoteUnavailable(f"{self.name}: {err.code().name.lower()}: {err.details()}")
        return RemoteUnavailable(f"{self.name} refused the call: {err.code().name}: "
                                 f"{err.details()}")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


@contextlib.asynccontextmanager
async def serving(host: str, port: int,
                  add: Sequence[tuple[str, Callable[[grpc.aio.Server], None]]],
                  grace: float = 5.0) -> AsyncIterator[RpcServer]:
    """A gRPC server for the block (tests, and a process's lifespan)."""
    server = await start_server(host, port, add)
    try:
        yield server
    finally:
        await server.stop(grace)
