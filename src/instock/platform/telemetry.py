"""Observability: JSON logs with a correlation id (structlog) and Prometheus metrics."""

from __future__ import annotations

import logging
import time

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instock.platform import tracing
from instock.platform.ids import new_id
from instock.platform.origin import WORK_ORIGIN

REQUEST_LATENCY = Histogram(
    "instock_http_request_duration_seconds", "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
RESERVATIONS = Counter("instock_reservations_total", "Reservation requests by outcome",
                       ["outcome"])
OVERSELL_PREVENTED = Counter(
    "instock_oversell_prevented_total",
    "Units asked for beyond what was available, refused: each would have been oversold")
VERSION_CONFLICTS = Counter("instock_version_conflicts_total",
                            "Writes that lost a race and were retried or refused")
EVENTS_PUBLISHED = Counter("instock_events_published_total",
                           "Outbox events the relay moved to the bus")
EVENTS_CONSUMED = Counter("instock_events_consumed_total", "Events consumers handled, by outcome",
                          ["consumer", "outcome"])
# SQL work, counted by the database adapter's engine hooks (platform/db.py): the benches divide
# their growth by the requests a run made. Every engine of the process counts, the relay's and
# consumers' work included; statements the driver issues itself (asyncpg's BEGIN, COPY) do not.
# Each is labelled with the work it was for (platform/origin.py): `request` (an HTTP request, and
# the group-commit batch its request started), a background loop by its name (`relay`,
# `reconciler`, `sweeper`, ...), `consumer:<name>`, or `other` (start-up, migrations).
DB_STATEMENTS = Counter("instock_db_statements_total",
                        "SQL statements sent to the database (an executemany counts once), "
                        "by the work they were for", ["origin"])
DB_TRANSACTIONS = Counter("instock_db_transactions_total",
                          "Database transactions ended, by outcome (commit, rollback) and the "
                          "work they were for", ["outcome", "origin"])

# The event backbone, for operators: how far behind the relay and each consumer are, and what
# was given up on. The outbox and dead-letter gauges are sampled from the database
# (platform/bus/health.py); consumer lag is read live from each consumer's batch in hand.
OUTBOX_LAG = Gauge("instock_outbox_lag_seconds",
                   "Age of the oldest outbox event not yet published (0 when none waits)")
OUTBOX_PENDING = Gauge("instock_outbox_pending", "Outbox events not yet published")
CONSUMER_LAG = Gauge("instock_consumer_lag_seconds",
                     "Age of the oldest event a consumer holds and has not finished (0 when idle)",
                     ["consumer"])
CONSUMER_DURATION = Histogram(
    "instock_consumer_handle_duration_seconds",
    "Time a consumer took to handle a delivered burst of events (one transaction)",
    ["consumer"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
DEAD_LETTERS = Gauge("instock_dead_letters", "Dead letters not replayed, by consumer",
                     ["consumer"])
COMMIT_TO_PUSH = Histogram(
    "instock_commit_to_push_seconds",
    "From an event's time (its transaction) to its push to live connections of this process",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
LANE_BATCH_SIZE = Histogram("instock_lane_batch_size",
                            "Requests decided together in one group-commit batch, by lane",
                            ["lane"], buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000))
# Deliveries to the outside world: each attempt of a webhook, each push to a marketplace.
WEBHOOK_DELIVERIES = Counter("instock_webhook_deliveries_total",
                             "Webhook delivery attempts by outcome (delivered, failed, dead)",
                             ["outcome"])
for _outcome in ("delivered", "failed", "dead"):
    WEBHOOK_DELIVERIES.labels(_outcome)  # every outcome a series from the start, at 0
# Notifications by channel, outcome (sent, retry, failed = dead-lettered, suppressed) and reason
# (back_in_stock, order_confirmation, low_stock, ...; for suppressed, the suppression reason).
NOTIFICATIONS = Counter("instock_notifications_total",
                        "Notifications by channel, outcome (sent, retry, failed, suppressed) "
                        "and reason", ["channel", "outcome", "reason"])
CHANNEL_PUSHES = Counter("instock_channel_pushes_total",
                         "Stock pushes to marketplace channels by channel and outcome (ok, failed)",
                         ["channel", "outcome"])
# Recommendations: how far the live model is behind the event stream, and the list cache.
RECS_FRESHNESS = Gauge("instock_recs_freshness_seconds",
                       "From the time of the newest event the live model learned to its learning")
RECS_CACHE = Counter("instock_recs_cache_requests_total",
                     "Recommendation lists asked for, by whether the cache had them (hit, miss)",
                     ["result"])
RECS_BLEND_CPU = Counter("instock_recs_blend_cpu_seconds_total",
                         "CPU time of the serving thread spent ranking fresh lists (the blend of "
                         "the models and the rules; a cache miss each)")
# Reconciliation: drifts open now, what a pass costs, and ledgers that failed verification.
RECONCILIATION_DRIFTS = Gauge("instock_reconciliation_drifts",
                              "Drifts found by reconciliation and not yet decided")
RECONCILIATION_PASS = Histogram(
    "instock_reconciliation_pass_seconds", "Time a reconciliation pass took",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
LEDGER_VERIFICATION_FAILURES = Counter(
    "instock_ledger_verification_failures_total",
    "Stock levels whose ledger failed verification (an entry altered, the chain broken)")
# Units held (reserved or committed) beyond what is on hand, over every stock level: 0 unless
# something wrote around the model's checks. Sampled from the database by each process serving
# inventory (every INSTOCK_OVERSELL_WATCH_SECONDS): what `instock fleet canary` and the canary
# analysis (deploy/k8s) read.
OVERSOLD_UNITS = Gauge("instock_oversold_units",
                       "Units held (reserved + committed) beyond on hand, over every stock level")
LIVE_CONNECTIONS = Gauge("instock_live_connections", "Open SSE and WebSocket connections",
                         ["kind"])
# The drops' waiting rooms (drops/room.py), per drop, as each process watching a room sees it:
# the counts are the same arithmetic on the same rows in every process (take the max over
# processes), the watchers are each process's own (sum them).
DROP_TICKETS = Gauge("instock_drop_room_tickets", "Places taken in a drop's waiting room",
                     ["drop"])
DROP_QUEUE_LENGTH = Gauge("instock_drop_room_queue_length",
                          "Places in a drop's waiting room not yet admitted", ["drop"])
DROP_ADMITTED = Gauge("instock_drop_room_admitted",
                      "Places a drop's waiting room has admitted so far", ["drop"])
DROP_ADMIT_RATE = Gauge("instock_drop_room_admit_rate",
                        "Shoppers per second a drop's waiting room admits now (0 before the "
                        "start, once sold out, or after the end)", ["drop"])
DROP_WAIT = Histogram("instock_drop_room_wait_seconds",
                      "How long admitted shoppers waited, arrival (or the start) to admission, "
                      "of those watching their standing live when admitted",
                      buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
DROP_WATCHERS = Gauge("instock_drop_room_watchers",
                      "Shoppers watching their standing in a drop's waiting room (SSE) on this "
                      "process", ["drop"])

CORRELATION_HEADER = "X-Correlation-ID"


def configure_logging(level: str = "info", json: bool = True) -> None:
    """JSON lines; while tracing is on, each carries the current trace_id and span_id."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer())
    traced: list[structlog.typing.Processor] = (
        [tracing.add_trace_ids] if tracing.enabled() else [])
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *traced,
                    structlog.processors.add_log_level,
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
        WORK_ORIGIN.set("request")
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
