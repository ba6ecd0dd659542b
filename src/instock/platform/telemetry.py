"""Observability: JSON logs with a correlation id (structlog) and Prometheus metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.routing import Match

from instock.platform.ids import new_id

REQUEST_LATENCY = Histogram(
    "instock_http_request_duration_seconds", "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
RESERVATIONS = Counter("instock_reservations_total", "Reservation requests by outcome",
                       ["outcome"])
VERSION_CONFLICTS = Counter("instock_version_conflicts_total",
                            "Writes that lost a race and were retried or refused")

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


def _route_of(request: Request) -> str:
    # The route template, not the raw path, so metrics do not explode per SKU.
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return str(getattr(route, "path", request.url.path))
    return "unmatched"


def install(app: FastAPI) -> None:
    log = structlog.get_logger("instock.http")

    @app.middleware("http")
    async def observe(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        correlation_id = request.headers.get(CORRELATION_HEADER) or new_id()
        request.state.correlation_id = correlation_id[:128]
        structlog.contextvars.bind_contextvars(correlation_id=request.state.correlation_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers[CORRELATION_HEADER] = request.state.correlation_id
            return response
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(request)
            REQUEST_LATENCY.labels(request.method, route, str(status)).observe(elapsed)
            if route not in ("/livez", "/metrics"):
                log.info("request", method=request.method, path=request.url.path,
                         status=status, ms=round(elapsed * 1000, 2))
            structlog.contextvars.clear_contextvars()

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
