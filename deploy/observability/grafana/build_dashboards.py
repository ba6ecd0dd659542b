"""Writes the Grafana dashboards in dashboards/ (run it after editing this file:
`python3 deploy/observability/grafana/build_dashboards.py`); the tests check the JSON matches.

Every panel queries the provisioned Prometheus datasource (uid `instock-prometheus`,
provisioning/datasources/prometheus.yml). Rates use Grafana's `$__rate_interval`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "instock-prometheus"}
HERE = Path(__file__).resolve().parent
# Left out of HTTP rates and latency: the probes, /metrics and the live streams (a stream's
# "latency" is how long it stayed connected).
NOT_API = 'route!~"/livez|/readyz|/metrics|/v1/stream/.*"'
RI = "$__rate_interval"


def p99(metric: str, selector: str = "", by: str = "") -> str:
    keys = f"{by}, le" if by else "le"
    return (f"histogram_quantile(0.99, sum by ({keys}) "
            f"(rate({metric}_bucket{{{selector}}}[{RI}])))")


def error_ratio(selector: str, by: str = "route") -> str:
    """5xx share; a route with no 5xx at all gets 0 rather than no series."""
    total = f"sum by ({by}) (rate(instock_http_request_duration_seconds_count{{{selector}}}[{RI}]))"
    errors = (f"sum by ({by}) (rate(instock_http_request_duration_seconds_count"
              f"{{{selector},status=~\"5..\"}}[{RI}]))")
    return f"({errors} or {total} * 0) / {total}"


class Board:
    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "id": len(self.panels) + 1,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def panel(self, title: str, targets: list[tuple[str, str]], unit: str = "short",
              kind: str = "timeseries", width: int = 8, description: str = "") -> None:
        if self.x + width > 24:
            self._newline()
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1, "type": kind, "title": title,
            "description": description, "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), "expr": expr,
                         "legendFormat": legend, "range": True}
                        for i, (expr, legend) in enumerate(targets)],
        }
        if kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                                  "values": False},
                                "colorMode": "value", "graphMode": "area"}
        self.panels.append(panel)
        self.x += width

    def variable(self, name: str, query: str, label: str) -> None:
        self.variables.append({
            "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1})

    def _newline(self) -> None:
        if self.x:
            self.y += 8
            self.x = 0

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["instock"], "timezone": "browser", "editable": True,
            "graphTooltip": 1, "refresh": "10s", "schemaVersion": 39, "version": 1,
            "time": {"from": "now-1h", "to": "now"}, "timepicker": {},
            "templating": {"list": self.variables}, "annotations": {"list": []},
            "links": [{"type": "dashboards", "tags": ["instock"], "asDropdown": True,
                       "title": "instock dashboards"}],
            "panels": self.panels,
        }


def drop() -> Board:
    b = Board("instock-drop", "instock — Drop",
              "A drop as it happens: reservations, contention, live stock and ledger health.")
    b.row("Reservations")
    b.panel("Reservations by outcome", [
        (f"sum by (outcome) (rate(instock_reservations_total[{RI}]))", "{{outcome}}")], "reqps")
    b.panel("Confirmed share", [
        (f"sum(rate(instock_reservations_total{{outcome=\"confirmed\"}}[{RI}])) "
         f"/ sum(rate(instock_reservations_total[{RI}]))", "confirmed")], "percentunit")
    b.panel("Oversells prevented and version conflicts", [
        (f"sum(rate(instock_oversell_prevented_total[{RI}]))", "oversells prevented"),
        (f"sum(rate(instock_version_conflicts_total[{RI}]))", "version conflicts")], "ops")
    b.panel("Reservation routes: requests", [
        (f"sum by (route, status) (rate(instock_http_request_duration_seconds_count"
         f"{{route=~\"/v1/reservations.*\"}}[{RI}]))", "{{route}} {{status}}")], "reqps",
        width=12)
    b.panel("Reservation routes: p99", [
        (p99("instock_http_request_duration_seconds", 'route=~"/v1/reservations.*"', "route"),
         "{{route}}")], "s", width=12)
    b.row("Live stock")
    b.panel("Commit to live push", [
        (p99("instock_commit_to_push_seconds"), "p99"),
        (f"histogram_quantile(0.5, sum by (le) "
         f"(rate(instock_commit_to_push_seconds_bucket[{RI}])))", "p50")], "s")
    b.panel("Live connections", [
        ("sum by (kind) (instock_live_connections)", "{{kind}}")])
    b.panel("Drop lane batch size", [
        (p99("instock_lane_batch_size"), "p99"),
        (f"sum(rate(instock_lane_batch_size_sum[{RI}])) "
         f"/ sum(rate(instock_lane_batch_size_count[{RI}]))", "mean")])
    b.row("Integrity")
    b.panel("Open stock drifts", [
        ("max(instock_reconciliation_drifts)", "drifts")], kind="stat")
    b.panel("Ledger verification failures (24 h)", [
        ("sum(increase(instock_ledger_verification_failures_total[24h]))", "failures")],
        kind="stat")
    b.panel("Reconciliation pass p99", [
        (p99("instock_reconciliation_pass_seconds"), "p99")], "s")
    return b


def backbone() -> Board:
    b = Board("instock-backbone", "instock — Event backbone",
              "Outbox, relay, bus and consumers; outbound webhooks and marketplace pushes.")
    b.variable("consumer", "label_values(instock_consumer_lag_seconds, consumer)", "Consumer")
    b.row("Outbox and relay")
    b.panel("Outbox lag (oldest unpublished event)", [
        ("max(instock_outbox_lag_seconds)", "lag")], "s")
    b.panel("Outbox pending", [("max(instock_outbox_pending)", "pending")])
    b.panel("Events published", [
        (f"sum(rate(instock_events_published_total[{RI}]))", "published")], "ops")
    b.row("Consumers")
    b.panel("Consumer lag", [
        ("max by (consumer) (instock_consumer_lag_seconds{consumer=~\"$consumer\"})",
         "{{consumer}}")], "s")
    b.panel("Events consumed by outcome", [
        (f"sum by (consumer, outcome) (rate(instock_events_consumed_total"
         f"{{consumer=~\"$consumer\"}}[{RI}]))", "{{consumer}} {{outcome}}")], "ops")
    b.panel("Consumer handle p99", [
        (p99("instock_consumer_handle_duration_seconds", 'consumer=~"$consumer"', "consumer"),
         "{{consumer}}")], "s")
    b.panel("Dead letters (not replayed)", [
        ("max by (consumer) (instock_dead_letters{consumer=~\"$consumer\"})", "{{consumer}}")])
    b.panel("Outbound webhook deliveries", [
        (f"sum by (outcome) (rate(instock_webhook_deliveries_total[{RI}]))", "{{outcome}}")],
        "ops")
    b.panel("Marketplace pushes", [
        (f"sum by (channel, outcome) (rate(instock_channel_pushes_total[{RI}]))",
         "{{channel}} {{outcome}}")], "ops")
    b.row("Database")
    b.panel("Transactions by outcome", [
        (f"sum by (outcome) (rate(instock_db_transactions_total[{RI}]))", "{{outcome}}")],
        "ops", width=12)
    b.panel("Statements", [
        (f"sum(rate(instock_db_statements_total[{RI}]))", "statements")], "ops", width=12)
    return b


def checkout() -> Board:
    b = Board("instock-checkout", "instock — Checkout",
              "Checkout and the API as a whole: RED per route, sagas, the payment provider.")
    b.row("Checkout")
    b.panel("Checkout requests by status", [
        (f"sum by (status) (rate(instock_http_request_duration_seconds_count"
         f"{{route=\"/v1/checkout\"}}[{RI}]))", "{{status}}")], "reqps")
    b.panel("Checkout p99 / p50", [
        (p99("instock_http_request_duration_seconds", 'route="/v1/checkout"'), "p99"),
        (f"histogram_quantile(0.5, sum by (le) (rate(instock_http_request_duration_seconds_bucket"
         f"{{route=\"/v1/checkout\"}}[{RI}])))", "p50")], "s")
    b.panel("Circuit breakers (0 closed, 1 half-open, 2 open)", [
        ("max by (breaker) (instock_circuit_breaker_state)", "{{breaker}}")])
    b.panel("Saga steps by outcome", [
        (f"sum by (step, outcome) (rate(instock_saga_steps_total[{RI}]))",
         "{{step}} {{outcome}}")], "ops", width=12)
    b.panel("Payment provider calls by outcome", [
        (f"sum by (provider, call, outcome) (rate(instock_payment_provider_calls_total[{RI}]))",
         "{{provider}} {{call}} {{outcome}}")], "ops", width=12)
    b.row("API (RED per route; streams and probes aside)")
    b.panel("Requests by route", [
        (f"sum by (route) (rate(instock_http_request_duration_seconds_count{{{NOT_API}}}[{RI}]))",
         "{{route}}")], "reqps")
    b.panel("5xx ratio by route", [(error_ratio(NOT_API), "{{route}}")], "percentunit")
    b.panel("p99 by route", [
        (p99("instock_http_request_duration_seconds", NOT_API, "route"), "{{route}}")], "s")
    b.panel("5xx ratio, whole API (5 m, recorded)", [
        ("instock:http_errors:ratio_rate5m", "5xx ratio")], "percentunit", width=12)
    b.panel("Process CPU and memory", [
        (f"sum by (instance) (rate(process_cpu_seconds_total{{job=\"instock\"}}[{RI}]))",
         "{{instance}} CPU"),
        ("sum by (instance) (process_resident_memory_bytes{job=\"instock\"}) / 2^30",
         "{{instance}} RSS GiB")], width=12)
    return b


def recommendations() -> Board:
    b = Board("instock-recommendations", "instock — Recommendations",
              "How fresh the recommendations are and how they are served.")
    b.row("Freshness")
    b.panel("Model freshness", [("max(instock_recs_freshness_seconds)", "age")], "s")
    b.panel("Cache hit ratio", [
        (f"sum(rate(instock_recs_cache_requests_total{{result=\"hit\"}}[{RI}])) "
         f"/ sum(rate(instock_recs_cache_requests_total[{RI}]))", "hit ratio")], "percentunit")
    b.panel("Cache requests", [
        (f"sum by (result) (rate(instock_recs_cache_requests_total[{RI}]))", "{{result}}")],
        "ops")
    b.row("Serving")
    b.panel("/v1/recommendations requests by status", [
        (f"sum by (status) (rate(instock_http_request_duration_seconds_count"
         f"{{route=\"/v1/recommendations\"}}[{RI}]))", "{{status}}")], "reqps")
    b.panel("/v1/recommendations p99", [
        (p99("instock_http_request_duration_seconds", 'route="/v1/recommendations"'), "p99")],
        "s")
    return b


BOARDS = {"drop": drop, "backbone": backbone, "checkout": checkout,
          "recommendations": recommendations}


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(build().json(), indent=2, ensure_ascii=False) + "\n"
            for name, build in BOARDS.items()}


if __name__ == "__main__":
    for name, text in rendered().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote dashboards/{name}")
