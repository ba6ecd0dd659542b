"""Tracing: one reservation over HTTP is one trace, from the request to the live push.

The app runs in-process with its relay, consumers and live hub (the lifespan), its spans going
to an in-memory exporter; a subscriber on the live hub (what an SSE, WebSocket or GraphQL
client is to the hub) watches the SKU so the push happens.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from instock.app import create_app
from instock.live.service import Connection
from instock.platform import tracing
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from tests.e2e.harness import create_location, create_product, receive
from tests.support import make_settings

SKU = "TRACE-1"
LIVE = {"run_relay": True, "run_consumers": True}


@asynccontextmanager
async def running(database_url: str, tmp_path: Path, exporter: InMemorySpanExporter | None,
                  **overrides: Any
                  ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Connection]]:
    """The app with its background work, a stocked SKU, and a live subscriber watching it."""
    settings = make_settings(database_url, tmp_path, migrate_on_start=False, **overrides)
    app = create_app(settings, span_exporter=exporter)
    async with app.router.lifespan_context(app):
        token = app.state.tokens.mint(Role.ADMIN, "admin-1")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            await create_location(client, "wh")
            await create_product(client, "p-trace", [SKU])
            await receive(client, SKU, "wh", 5)
            subscriber = Connection()
            await app.state.live.watch(subscriber, [SKU])
            yield app, client, subscriber
    tracing.shutdown()  # the app's close did it already; a failing test must not leak it


async def reserve(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/reservations",
                                 json={"lines": [{"sku": SKU, "quantity": 1}]})
    assert response.status_code == 201, response.text


async def until(found: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not found():
            await asyncio.sleep(0.02)


def traces_reached(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    """The spans of the trace, and of the traces that link to it (a batch's span)."""
    return [s for s in spans if s.context.trace_id == trace_id
            or any(link.context.trace_id == trace_id for link in s.links)]


async def test_one_reservation_is_one_trace_from_http_to_the_live_push(
        database_url: str, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    async with running(database_url, tmp_path, exporter, **LIVE) as (_, client, subscriber):
        # Wait out the setup's own events, then look at the reservation alone.
        await until(lambda: any(s.name == "live push" for s in exporter.get_finished_spans()))
        await asyncio.sleep(0.3)
        exporter.clear()
        await reserve(client)

        def server() -> ReadableSpan | None:
            return next((s for s in exporter.get_finished_spans()
                         if s.kind is SpanKind.SERVER and s.parent is None
                         and "/v1/reservations" in s.name), None)

        def reached(name: str) -> bool:
            root = server()
            return root is not None and any(
                s.name.startswith(name) for s in traces_reached(
                    list(exporter.get_finished_spans()), root.context.trace_id))

        await until(lambda: reached("live push") and reached("consume ")
                    and reached("outbox publish"))
        assert subscriber.mailbox.pending  # the push reached the subscriber

    root = server()
    assert root is not None
    spans = traces_reached(list(exporter.get_finished_spans()), root.context.trace_id)
    names = {s.name for s in spans}
    in_trace = [s for s in spans if s.context.trace_id == root.context.trace_id]
    # The request, its transaction and statements, its group commit: children of the request.
    assert "group_commit" in names
    assert any(s.name == "db.transaction" for s in in_trace)
    assert any({"db.statement", "db.query.text"} & set(s.attributes or {}) for s in in_trace)
    # The relay's publish serves a batch: linked to the request's trace, not in it.
    publish = [s for s in spans if s.name == "outbox publish"]
    assert publish
    assert all(any(link.context.trace_id == root.context.trace_id for link in s.links)
               for s in publish)
    # A consumer's handling and the live push continue the request's trace (the envelope's
    # traceparent) as children.
    handling = [s for s in in_trace if s.name.startswith("consume ")]
    assert handling and all(s.kind is SpanKind.CONSUMER for s in handling)
    pushed = [s for s in in_trace if s.name == "live push"]
    assert pushed and any((s.attributes or {}).get("live.connections") == 1 for s in pushed)
    # Every span of the trace hangs from the request, parent by parent.
    by_id = {s.context.span_id: s for s in in_trace}
    for span in in_trace:
        walk = span
        while walk.parent is not None and walk.parent.span_id in by_id:
            walk = by_id[walk.parent.span_id]
        assert walk is root, f"{span.name} is not under the request's span"


async def test_log_lines_carry_the_trace_and_span_ids(database_url: str,
                                                     tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    out = io.StringIO()
    async with running(database_url, tmp_path, exporter, log_level="info"):
        # The trace processor is in the logging configuration create_app made; only where
        # lines go changes here.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
        with tracing.span("work") as span:
            structlog.get_logger("test").info("inside")
        structlog.get_logger("test").info("outside")
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    inside = next(line for line in lines if line["event"] == "inside")
    assert span is not None
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    outside = next(line for line in lines if line["event"] == "outside")
    assert "trace_id" not in outside


async def test_tracing_off_makes_no_span_and_carries_no_traceparent(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSTOCK_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("INSTOCK_TRACE_CONSOLE", raising=False)
    async with running(database_url, tmp_path, None, **LIVE) as (app, client, subscriber):
        assert not tracing.enabled()
        assert tracing.current_traceparent() is None
        with tracing.span("nothing") as span:
            assert span is None
        await reserve(client)
        await until(lambda: bool(subscriber.mailbox.pending))
        async with app.state.inventory.db.read() as conn:
            rows = (await conn.execute(outbox.select())).all()
    assert rows and not any("traceparent" in row.envelope for row in rows)
