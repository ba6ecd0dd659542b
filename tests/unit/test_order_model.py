"""The order state machine: legal paths work, illegal transitions change nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.orders.model import (
    TRANSITIONS,
    IllegalOrderTransition,
    Order,
    OrderError,
    OrderLine,
    OrderStatus,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
S = OrderStatus


def order() -> Order:
    return Order.place("o-1", "c-1", "web", "EUR",
                       [OrderLine("TEE", 2, Decimal("25.00")), OrderLine("CAP", 1, Decimal("15"))],
                       NOW)


def test_the_happy_path_from_placing_to_delivery() -> None:
    o = order()
    assert o.status is S.PENDING_PAYMENT and o.total == Decimal("65.00")
    o.pay("pay-1", Decimal("65"), NOW)
    o.fulfil({"TEE": 1}, NOW)
    assert o.status is S.PARTIALLY_FULFILLED
    o.fulfil({"TEE": 1, "CAP": 1}, NOW)
    o.ship(NOW, "track-1")
    o.deliver(NOW)
    assert [c.status for c in o.history] == [S.PENDING_PAYMENT, S.PAID, S.PARTIALLY_FULFILLED,
                                             S.FULFILLED, S.SHIPPED, S.DELIVERED]


def test_cancelled_after_payment_owes_a_refund_until_it_is_paid_back() -> None:
    o = order()
    o.pay("pay-1", o.total, NOW)
    o.cancel("payment captured, customer changed their mind", NOW)
    assert o.refund_due == Decimal("65.00")
    o.refund(Decimal("40"), NOW)
    assert o.status is S.CANCELLED and o.refund_due == Decimal("25.00")
    with pytest.raises(OrderError, match=r"has 25\.00 EUR to refund"):
        o.refund(Decimal("30"), NOW)
    o.refund(Decimal("25"), NOW)
    assert o.status is S.REFUNDED and o.refund_due == 0


def test_an_illegal_transition_says_what_is_allowed_and_changes_nothing() -> None:
    o = order()
    before = copy.deepcopy(o)
    with pytest.raises(IllegalOrderTransition) as refused:
        o.ship(NOW)
    assert "pending_payment: it cannot become shipped" in str(refused.value)
    assert "may become cancelled, paid" in str(refused.value)
    assert o == before


def test_bad_input_is_refused() -> None:
    with pytest.raises(OrderError, match="at least one line"):
        Order.place("o", None, "web", "EUR", [], NOW)
    with pytest.raises(OrderError, match="quantity"):
        Order.place("o", None, "web", "EUR", [OrderLine("A", 0, Decimal(1))], NOW)
    with pytest.raises(OrderError, match="one line only"):
        Order.place("o", None, "web", "EUR", [OrderLine("A", 1, Decimal(1))] * 2, NOW)
    o = order()
    with pytest.raises(OrderError, match=r"costs 65\.00 EUR"):
        o.pay("p", Decimal("60"), NOW)
    o.pay("p", o.total, NOW)
    with pytest.raises(OrderError, match="only 2 ordered"):
        o.fulfil({"TEE": 3}, NOW)
    with pytest.raises(OrderError, match="not on order"):
        o.fulfil({"SHOE": 1}, NOW)


ACTIONS = st.lists(st.sampled_from(
    ["pay", "fulfil_one", "fulfil_all", "ship", "deliver", "cancel", "return", "refund_half",
     "refund_rest"]), max_size=25)


@given(ACTIONS)
def test_any_sequence_of_actions_follows_the_table_or_changes_nothing(actions: list[str]) -> None:
    o = order()
    for action in actions:
        before = copy.deepcopy(o)
        try:
            act(o, action)
        except OrderError:
            assert o == before  # refused: nothing changed
            continue
        assert o.status in TRANSITIONS[before.status] or o.status is before.status
        assert Decimal(0) <= o.refunded <= o.paid
        assert all(o.fulfilled.get(line.sku, 0) <= line.quantity for line in o.lines)
        assert o.history[-1].status is o.status


def act(o: Order, action: str) -> None:
    match action:
        case "pay":
            o.pay("pay", o.total, NOW)
        case "fulfil_one":
            o.fulfil({"TEE": 1}, NOW)
        case "fulfil_all":
            o.fulfil({line.sku: line.quantity - o.fulfilled.get(line.sku, 0)
                      for line in o.lines if line.quantity > o.fulfilled.get(line.sku, 0)}, NOW)
        case "ship":
            o.ship(NOW)
        case "deliver":
            o.deliver(NOW)
        case "cancel":
            o.cancel("changed mind", NOW)
        case "return":
            o.return_goods("did not fit", NOW)
        case "refund_half":
            o.refund(o.paid / 2, NOW)
        case "refund_rest":
            o.refund(o.refund_due, NOW)


def test_each_status_change_raises_its_event_with_the_new_version() -> None:
    o = order()
    o.pay("pay-1", Decimal("65"), NOW)
    o.request_fulfilment()
    types = [e.type for e in o.events]
    assert types == ["order.placed.v1", "order.paid.v1", "order.fulfilment_requested.v1"]
    assert [e.version for e in o.events] == [1, 2, 2]
    assert o.events[-1].total == Decimal("65.00") and o.events[-1].status == "paid"


def test_only_a_paid_order_goes_to_fulfilment() -> None:
    with pytest.raises(OrderError, match="only a paid order"):
        order().request_fulfilment()


def test_a_refund_with_a_known_reference_is_counted_once() -> None:
    o = order()
    o.pay("pay-1", Decimal("65"), NOW)
    o.cancel("out of stock", NOW)
    o.refund(Decimal("15"), NOW, reference="saga-1")
    o.refund(Decimal("15"), NOW, reference="saga-1")
    assert o.refunded == Decimal("15") and o.status is S.CANCELLED
    o.refund(Decimal("50"), NOW, reference="saga-2")
    assert o.status is S.REFUNDED and o.cancel_reason == "out of stock"


def test_fulfilling_the_rest_completes_a_partly_fulfilled_order() -> None:
    o = order()
    o.pay("pay-1", Decimal("65"), NOW)
    o.fulfil({"TEE": 1}, NOW)
    assert o.status is S.PARTIALLY_FULFILLED
    o.fulfil_rest(NOW)
    assert o.status is S.FULFILLED and o.fulfilled == {"TEE": 2, "CAP": 1}
