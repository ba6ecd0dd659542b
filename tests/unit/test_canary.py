"""The canary's decisions (instock.fleet.canary): what it reads of a process's metrics, when it
rolls back, and the weights that give it its share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from instock.fleet.canary import Reading, Thresholds, read_metrics, verdict, weights


def exposition(answers: dict[tuple[str, str], int], oversold: float | None = None) -> str:
    """A process's /metrics as prometheus_client writes it: `answers` by (route, status)."""
    registry = CollectorRegistry()
    latency = Histogram("instock_http_request_duration_seconds", "latency",
                        ["method", "route", "status"], registry=registry)
    for (route, status), count in answers.items():
        for _ in range(count):
            latency.labels("GET", route, status).observe(0.01)
    if oversold is not None:
        Gauge("instock_oversold_units", "oversold", registry=registry).set(oversold)
    return generate_latest(registry).decode()


def test_requests_and_errors_leave_probes_metrics_and_streams_out() -> None:
    text = exposition({("/v1/inventory/{sku}", "200"): 7, ("/v1/inventory/{sku}", "500"): 2,
                       ("/v1/reservations", "409"): 3, ("/v1/reservations", "503"): 1,
                       ("/readyz", "503"): 4, ("/livez", "200"): 5, ("/metrics", "200"): 6,
                       ("/v1/stream/stock", "200"): 8}, oversold=2)
    assert read_metrics(text) == Reading(requests=13, errors=3, oversold=2)
    assert read_metrics(exposition({})) == Reading()


def test_it_rolls_back_on_the_error_rate_once_it_has_served_enough() -> None:
    limits = Thresholds(max_error_rate=0.01, min_requests=20)
    start = Reading(requests=100, errors=5)  # before the canary: not its doing
    assert verdict(start, Reading(119, 24), 0, limits) is None  # 19 served: too few to judge
    assert "error rate" in (verdict(start, Reading(120, 6), 0, limits) or "")  # 1 of 20 = 5%
    assert verdict(start, Reading(300, 7), 0, limits) is None  # 2 of 200 = 1%: at the limit
    assert verdict(start, Reading(300, 8), 0, limits) is not None  # 3 of 200


def test_any_oversell_rolls_it_back_whatever_its_error_rate() -> None:
    reason = verdict(Reading(), Reading(500, 0), 1, Thresholds())
    assert reason is not None and "1 units oversold" in reason
    assert verdict(Reading(), Reading(500, 0), 2, Thresholds(max_oversold=2)) is None


@given(share=st.floats(0.01, 0.99), others=st.integers(1, 20))
def test_the_weights_give_the_canary_its_share(share: float, others: int) -> None:
    other, mine = weights(share, others)
    assert 1 <= other <= 256 and 1 <= mine <= 256
    got = mine / (mine + others * other)
    # Integer weights round: the share is kept to within what one unit of weight moves.
    assert abs(got - share) <= max(0.005, 1 / min(other, mine)), (other, mine, got)


def test_the_ends_of_the_range() -> None:
    assert weights(1.0, 3) == (0, 240)  # every request to the canary
    assert weights(0.0, 3) == (240, 0)
    assert weights(0.5, 1) == (240, 240)
    assert weights(0.25, 3) == (240, 240)  # four equal servers
