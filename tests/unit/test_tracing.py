"""Tracing helpers: the off path does nothing, a traceparent survives the trip through an
event, and a lone SQL statement (a background loop's idle poll) starts no trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from instock.platform import tracing


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    assert tracing.configure(exporter=spans)
    yield spans
    tracing.shutdown()


def test_off_makes_nothing() -> None:
    tracing.shutdown()
    assert not tracing.configure()  # nowhere to send spans: stays off
    assert tracing.current_traceparent() is None
    assert tracing.current_span_context() is None
    assert tracing.span("x") is tracing.span("y")  # one shared null context, nothing made
    with tracing.span_from({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
                           "x") as span:
        assert span is None


def test_an_event_continues_the_trace_that_wrote_it(exporter: InMemorySpanExporter) -> None:
    with tracing.span("request") as request:
        traceparent = tracing.current_traceparent()
    assert request is not None and traceparent is not None
    with tracing.span_from({"id": "e1", "type": "t", "traceparent": traceparent},
                           "consume x") as handling:
        assert handling is not None
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["consume x"].context.trace_id == spans["request"].context.trace_id
    assert spans["consume x"].parent is not None
    assert spans["consume x"].parent.span_id == spans["request"].context.span_id


def test_a_batch_is_linked_to_each_trace_once(exporter: InMemorySpanExporter) -> None:
    parents = []
    for _ in range(2):
        with tracing.span("request"):
            parents.append(tracing.current_traceparent())
    events = [{"traceparent": parents[0]}, {"traceparent": parents[0]},
              {"traceparent": parents[1]}, {}, {"traceparent": "garbage"}]
    with tracing.batch_span(events, "outbox publish"):
        pass
    publish = next(s for s in exporter.get_finished_spans() if s.name == "outbox publish")
    assert publish.parent is None
    assert [f"{link.context.span_id:016x}" for link in publish.links] == [
        p.split("-")[2] for p in parents if p]


def test_a_lone_statement_starts_no_trace(exporter: InMemorySpanExporter) -> None:
    with tracing.span("SELECT instock.db", kind=SpanKind.CLIENT) as lone:
        assert lone is not None and not lone.is_recording()
    with tracing.span("work"), tracing.span("SELECT instock.db", kind=SpanKind.CLIENT) as child:
        assert child is not None and child.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["SELECT instock.db", "work"]


def test_otlp_endpoint_takes_a_base_or_a_full_url() -> None:
    assert tracing._traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert tracing._traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
