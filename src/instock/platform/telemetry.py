"""Observability: JSON logs with a correlation id (structlog) and Prometheus metrics."""

from __future__ import annotations

import logging
import time

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instock.platform.ids import new_id

REQUEST_LATENCY = Histogram(
    "instock_http_request_duration_seconds", "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
RESERVATIONS = Counter("instock_reservations_total", "Reservation requests by outcome",
                       ["outcome"])
VERSION_CONFLICTS = Counter("instock_version_conflicts_total",
                            "Writes that lost a race and were retried or refused")
EVENTS_PUBLISHED = Counter("instock_events_published_total",
                           "Outbox events the relay moved to the bus")
EVENTS_CONSUMED = Counter("instock_events_consumed_total", "Events consumers handled, by outcome",
                          ["consumer", "outcome"])
# SQL work, counted by the database adapter's engine hooks (platform/db.py): the benches divide
# their growth by the requests a run made. Every engine of the process counts, the relay's and
# consumers' work included; statements the driver issues itself (asyncpg's BEGIN, COPY) do not.
DB_STATEMENTS = Counter("instock_db_statements_total",
                        "SQL statements sent to the database (an executemany counts once)")
DB_TRANSACTIONS = Counter("instock_db_transactions_total",
                          "Database transactions ended, by outcome (commit, rollback)",
                          ["outcome"])
LIVE_CONNECTIONS = Gauge("instock_live_connections", "Open SSE and WebSocket connections",
                         ["kind"])

CORRELATION_HEADER = "X-Correlation-ID"


def configure_logging(level: str = "info", json: bool = True) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        cache_logger_on_first_use=True)


QUIET_ROUTES = frozenset({"/livez", "/metrics"})


def _route_of(scope: Scope) -> str:
    # The template of the route the router chose (it records it in the scope), not the raw
    # path, so metrics do not explode per SKU.
    return str(getattr(scope.get("route"), "path", "unmatched"))


class ObserveMiddleware:
    """Correlation id in, latency histogram and one JSON log line out, for every request.

    Plain ASGI rather than BaseHTTPMiddleware: cheaper per request, and it leaves streaming
    responses (server-sent events) alone.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("instock.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        correlation_id = (headers.get(CORRELATION_HEADER.lower().encode(), b"").decode()
                          or new_id())[:128]
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (CORRELATION_HEADER.encode(), correlation_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            REQUEST_LATENCY.labels(scope["method"], route, str(status)).observe(elapsed)
            if route not in QUIET_ROUTES:
                self.log.info("request", method=scope["method"], path=scope["path"],
                              status=status, ms=round(elapsed * 1000, 2))
            structlog.contextvars.clear_contextvars()


def install(app: FastAPI) -> None:
    app.add_middleware(ObserveMiddleware)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def correlation_id(request: Request) -> str | None:
    """The request's correlation id, as the middleware above set it (None outside it)."""
    return getattr(request.state, "correlation_id", None)
