"""Tracing with OpenTelemetry: one trace from an HTTP request to the live push it causes.

Off unless `INSTOCK_OTLP_ENDPOINT` or `INSTOCK_TRACE_CONSOLE` is set (or a test hands in an
exporter). Off costs nothing measurable on the hot write path: no instrumentation is installed,
no span is made, and every helper here returns after one test of a module flag (`current_
traceparent()` is None, `span()` hands back one shared null context).

On, the trace crosses the process's asynchronous hops through the envelope, not the context:
- the outbox stores the W3C `traceparent` of the span that wrote an event (a reservation decided
  in a group commit keeps the one of the request that asked for it: `EntryContext.traceparent`);
- the relay publishes a batch in one span *linked* to every trace in it (a batch serves many
  requests, so no single parent is true);
- a consumer handles each event in a span that is a *child* of the event's traceparent (a
  transaction that applies many events together is linked to all of them);
- the live hub pushes an event to its SSE, WebSocket and GraphQL subscribers in a child span of
  the event's traceparent.

Instrumentors are process-wide singletons, so one configuration is active per process at a time:
`shutdown()` takes it all down again (a test process builds many apps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from sqlalchemy.ext.asyncio import AsyncEngine

# What an event or request carries between processes: the W3C trace context.
_propagator = TraceContextTextMapPropagator()
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()  # reusable: one for all


class _State:
    """The active configuration; `provider` None means tracing is off."""

    provider: TracerProvider | None = None
    tracer: trace.Tracer = trace.NoOpTracer()
    instrumented: list[Any] = []  # noqa: RUF012 (reset as a whole, never shared by instances)


_state = _State()


def enabled() -> bool:
    return _state.provider is not None


def configure(*, otlp_endpoint: str | None = None, console: bool = False,
              sample_ratio: float = 1.0, service_name: str = "instock",
              exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on if an exporter is asked for (OTLP, the console, a test's); True if on.

    The exporters run behind a batch processor (spans leave the request path at once); a
    test's exporter behind a simple one, so a span is there to look at the moment it ends.
    """
    if not otlp_endpoint and not console and exporter is None:
        return False
    shutdown()  # one configuration per process: the instrumentors are singletons
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        # A child follows its parent's decision, so a trace is kept or dropped whole, across
        # processes too (the traceparent's sampled flag travels with every event).
        sampler=ParentBased(_NoLoneStatements(TraceIdRatioBased(sample_ratio))))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=_traces_url(otlp_endpoint))))
    if console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(
            formatter=_one_line)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _state.provider = provider
    _state.tracer = provider.get_tracer("instock")
    _instrument_clients(provider)
    return True


# The first word of the span names the SQLAlchemy instrumentation gives statements (and its
# "connect"): such a span with no parent is a background loop polling (the relay, the sweeper,
# the saga and webhook workers, each a few times a second), not anyone's request.
_SQL_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT",
                        "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA", "LISTEN", "UNLISTEN",
                        "connect"})


class _NoLoneStatements(Sampler):
    """Drops a trace that would start with a lone SQL statement, else asks `then`: a trace
    begins with a request, an event or a batch, so the idle polls of the background loops
    do not bury them (in the console above all)."""

    def __init__(self, then: Sampler) -> None:
        self.then = then

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        if kind is SpanKind.CLIENT and name.split(" ", 1)[0] in _SQL_VERBS:
            return SamplingResult(Decision.DROP)
        return self.then.should_sample(parent_context, trace_id, name, kind, attributes,
                                       links, trace_state)

    def get_description(self) -> str:
        return f"NoLoneStatements{{{self.then.get_description()}}}"


def _traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: the collector's base (as OTEL_EXPORTER_OTLP_ENDPOINT) or
    the full path."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def _one_line(span: ReadableSpan) -> str:
    # One JSON document a line, as the logs are: the default is indented over ~40 lines.
    return span.to_json(indent=None) + "\n"


def _instrument_clients(provider: TracerProvider) -> None:
    """httpx (payments, marketplaces, webhooks) and redis, process-wide. Not asyncpg: the
    engine-level SQLAlchemy spans already cover every statement, its spans would duplicate
    them."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    for instrumentor in (HTTPXClientInstrumentor(), RedisInstrumentor()):
        instrumentor.instrument(tracer_provider=provider)
        _state.instrumented.append(instrumentor)


def instrument_engines(engines: Iterable[AsyncEngine]) -> None:
    """A span per SQL statement, at the engine level (under the transaction's span)."""
    if _state.provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    instrumentor = SQLAlchemyInstrumentor()
    # Its declared range stops below SQLAlchemy 2.1, which it predates; what it uses (engine
    # events: before/after_cursor_execute, handle_error) is unchanged in 2.1, and the trace
    # test checks its statement spans are there.
    instrumentor.instrument(engines=[engine.sync_engine for engine in engines],
                            tracer_provider=_state.provider, skip_dep_check=True)
    _state.instrumented.append(instrumentor)


def instrument_app(app: FastAPI) -> None:
    """The HTTP server span of every request (and of SSE/WebSocket connections), continuing a
    caller's `traceparent` header. /metrics and /livez are left out: scrapes are not news."""
    if _state.provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    # No span per ASGI message: an SSE stream would make one per event it writes.
    FastAPIInstrumentor.instrument_app(app, tracer_provider=_state.provider,
                                       excluded_urls="/metrics,/livez,/readyz",
                                       exclude_spans=["receive", "send"])


def shutdown() -> None:
    """Export what is pending and turn tracing off (the process-wide instrumentations too)."""
    provider = _state.provider
    for instrumentor in _state.instrumented:
        instrumentor.uninstrument()
    _state.instrumented = []
    _state.provider = None
    _state.tracer = trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


# -- carrying a trace through events -------------------------------------------------------------


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, for an event to carry; None when tracing is
    off or no span is current (the off path: one attribute test)."""
    if _state.provider is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def current_span_context() -> SpanContext | None:
    """The current span's context (what a batch links to), or None when off or none."""
    if _state.provider is None:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def context_of(traceparent: str | None) -> SpanContext | None:
    """The span context a traceparent names, or None if it names none (absent, malformed)."""
    if not traceparent:
        return None
    context = trace.get_current_span(
        _propagator.extract({"traceparent": traceparent})).get_span_context()
    return context if context.is_valid else None


def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL,
         attributes: Mapping[str, Any] | None = None,
         links: Iterable[SpanContext | None] = (),
         parent: SpanContext | None = None) -> contextlib.AbstractContextManager[Span | None]:
    """A span made current for the block, or a shared null context when tracing is off.

    `parent` starts it under another span than the current one (a batch under its first
    request); `links` point at the other traces it serves (duplicates and None dropped).
    """
    if _state.provider is None:
        return _NO_SPAN
    context = (trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())
               if parent is not None else None)
    return _state.tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=dict(attributes or {}),
        links=_links(links, parent))


def span_from(envelope: Mapping[str, Any], name: str, *,
              kind: SpanKind = SpanKind.CONSUMER,
              link: SpanContext | None = None) -> contextlib.AbstractContextManager[Span | None]:
    """A span continuing the trace of the request that caused the event: a child of the
    envelope's traceparent (a new trace if it carries none), maybe linked to a batch's span."""
    if _state.provider is None:
        return _NO_SPAN
    parent = context_of(envelope.get("traceparent"))
    return _state.tracer.start_as_current_span(
        name, context=(trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())
                       if parent is not None else Context()),
        kind=kind, attributes=event_attributes(envelope), links=_links([link], None))


def batch_span(envelopes: Iterable[Mapping[str, Any]], name: str, *,
               kind: SpanKind = SpanKind.PRODUCER,
               attributes: Mapping[str, Any] | None = None,
               ) -> contextlib.AbstractContextManager[Span | None]:
    """A span for work done on many events at once, in a trace of its own, linked to each
    distinct trace the events carry (the SDK keeps the first 128 links)."""
    if _state.provider is None:
        return _NO_SPAN
    links = _links((context_of(e.get("traceparent")) for e in envelopes), None)
    return _state.tracer.start_as_current_span(
        name, context=Context(), kind=kind, attributes=dict(attributes or {}), links=links)


def _links(contexts: Iterable[SpanContext | None], parent: SpanContext | None) -> list[Link]:
    seen = {parent.span_id} if parent is not None else set()
    links = []
    for context in contexts:
        if context is not None and context.span_id not in seen:
            seen.add(context.span_id)
            links.append(Link(context))
    return links


def event_attributes(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies an event on a span (CloudEvents semantic conventions)."""
    return {"messaging.message.id": str(envelope.get("id", "")),
            "cloudevents.event_type": str(envelope.get("type", "")),
            "cloudevents.event_subject": str(envelope.get("subject", ""))}


# -- logs ----------------------------------------------------------------------------------------


def add_trace_ids(_logger: Any, _method: str,
                  event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace_id and span_id on the line, so a log line
    leads to its trace and back. Installed only while tracing is on."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = f"{context.trace_id:032x}"
        event_dict["span_id"] = f"{context.span_id:016x}"
    return event_dict

