"""A failed checkout's saga says why (FailureKind); the service answers with that problem."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from instock.orders.model import FailureKind, Order, OrderLine, Saga, SagaKind
from instock.orders.service import checkout_failure

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


@pytest.mark.parametrize(("kind", "status", "slug"), [
    (FailureKind.PAYMENT_DECLINED, 402, "payment-declined"),
    (FailureKind.INSUFFICIENT_STOCK, 409, "insufficient-stock"),
    (FailureKind.HOLD_EXPIRED, 409, "hold-expired"),
    (FailureKind.CIRCUIT_OPEN, 503, "payment-circuit-open"),
    (FailureKind.PAYMENT_UNAVAILABLE, 503, "payment-unavailable"),
    (FailureKind.CONFLICT, 503, "payment-unavailable"),
])
def test_each_failure_kind_answers_with_its_problem_naming_the_order(
        kind: FailureKind, status: int, slug: str) -> None:
    order = Order.place("o-1", None, "web", "EUR", [OrderLine("TEE", 1, Decimal("10"))], NOW)
    saga = Saga.start("s-1", SagaKind.CHECKOUT, order.id, NOW)
    saga.failure_kind = kind
    saga.failed("it went wrong", NOW)
    problem = checkout_failure(order, saga).problem()
    assert (problem["status"], problem["type"].rsplit("/", 1)[-1]) == (status, slug)
    assert problem["order_id"] == "o-1"
    # Kept as the plain string in the saga's data, as stored sagas have it.
    assert saga.data["failure_kind"] == kind.value and type(saga.data["failure_kind"]) is str
