"""Orders against a real database: carts and their holds, marketplace orders, the sagas of
cancellation and return (those need no payment provider: a marketplace collects the money).

Each test runs twice: with inventory in the same process, and with inventory in another one,
called over gRPC (a fleet's orders service): the same calls, the same answers and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from instock.app import Container, build
from instock.inventory.errors import InsufficientStockConflict
from instock.inventory.model import ReservationStatus
from instock.orders.model import FailureKind, OrderLine, OrderStatus, ReturnLine, SagaStatus
from instock.orders.service import CartClosed, OrderRuleBroken
from instock.payments.errors import PaymentUnavailable
from instock.platform.errors import NotFound, ValidationFailed
from tests.integration.helpers import CTX, orders_apart, stocked
from tests.support import make_settings


@pytest.fixture(params=["inventory-in-process", "inventory-over-grpc"])
async def container(request: pytest.FixtureRequest, database_url: str,
                    tmp_path: Path) -> AsyncIterator[Container]:
    if request.param == "inventory-over-grpc":
        async with orders_apart(database_url, tmp_path) as c:
            yield c
    else:
        c = build(make_settings(database_url, tmp_path))
        yield c
        await c.close()


async def available(c: Container, sku: str) -> int:
    return (await c.inventory.stock(sku)).available


async def test_a_cart_holds_each_item_and_gives_it_back(container: Container) -> None:
    c = container
    await stocked(c, "TEE", 3)
    cart = await c.orders.create_cart("web", "cust-1")
    cart = await c.orders.add_to_cart(cart.id, "TEE", 2, CTX)
    cart = await c.orders.add_to_cart(cart.id, "TEE", 1, CTX)
    assert [i.quantity for i in cart.items] == [2, 1] and await available(c, "TEE") == 0
    with pytest.raises(InsufficientStockConflict):
        await c.orders.add_to_cart(cart.id, "TEE", 1, CTX)
    before = cart.expires_at
    await asyncio.sleep(0.01)
    touched = await c.orders.touch_cart(cart.id, CTX)
    assert touched.expires_at is not None and before is not None and touched.expires_at > before
    cart = await c.orders.remove_from_cart(cart.id, "TEE", CTX)
    assert cart.items == [] and await available(c, "TEE") == 3
    with pytest.raises(NotFound):
        await c.orders.remove_from_cart(cart.id, "TEE", CTX)


async def test_bad_cart_input_changes_nothing(container: Container) -> None:
    c = container
    await stocked(c, "CAP", 1)
    with pytest.raises(NotFound):
        await c.orders.create_cart("no-such-channel", None)
    cart = await c.orders.create_cart("web", None)
    with pytest.raises(ValidationFailed):
        await c.orders.add_to_cart(cart.id, "CAP", 0, CTX)
    with pytest.raises(ValidationFailed, match="cart is empty"):
        await c.orders.checkout(channel="web", customer_id=None, cart_id=cart.id)
    with pytest.raises(ValidationFailed, match="either a cart_id or lines"):
        await c.orders.checkout(channel="web", customer_id=None)
    assert await available(c, "CAP") == 1 and await c.orders.find(None, None) == []


def lines(sku: str, quantity: int) -> list[OrderLine]:
    return [OrderLine(sku, quantity, Decimal("99.50"))]


async def test_a_marketplace_order_commits_stock_once(container: Container) -> None:
    c = container
    await stocked(c, "SNK", 2)
    order = await c.orders.place_marketplace_order("web", "mk-1", lines("SNK", 1), "EUR")
    again = await c.orders.place_marketplace_order("web", "mk-1", lines("SNK", 1), "EUR")
    assert again.id == order.id and order.status is OrderStatus.PAID
    assert order.paid == Decimal("99.50") and order.external_id == "mk-1"
    view = await c.inventory.stock("SNK")
    assert (view.available, view.totals.committed) == (1, 1)
    reservation = await c.inventory.get_reservation(order.reservation_ids[0])
    assert reservation.status is ReservationStatus.COMMITTED


async def test_a_marketplace_order_without_stock_is_recorded_cancelled(
        container: Container) -> None:
    c = container
    await stocked(c, "SNK", 1)
    first = await c.orders.place_marketplace_order("web", "a", lines("SNK", 1), "EUR")
    second = await c.orders.place_marketplace_order("web", "b", lines("SNK", 1), "EUR")
    assert first.status is OrderStatus.PAID and second.status is OrderStatus.CANCELLED
    assert second.cancel_reason is not None and "insufficient stock" in second.cancel_reason
    assert second.reservation_ids == [] and await available(c, "SNK") == 0


async def test_cancelling_gives_stock_and_money_back(container: Container) -> None:
    c = container
    await stocked(c, "SNK", 1)
    order = await c.orders.place_marketplace_order("web", "x", lines("SNK", 1), "EUR")
    cancelled = await c.orders.cancel_marketplace_order("web", "x", "buyer changed their mind")
    assert cancelled.status is OrderStatus.REFUNDED and cancelled.refunded == cancelled.paid
    assert await available(c, "SNK") == 1
    (saga,) = await c.orders.sagas(order.id)
    assert saga.status is SagaStatus.COMPLETED
    with pytest.raises(OrderRuleBroken):
        await c.orders.cancel(order.id, "again")


async def test_shipping_and_a_partial_return(container: Container) -> None:
    c = container
    await stocked(c, "SNK", 3)
    order = await c.orders.place_marketplace_order(
        "web", "r", [OrderLine("SNK", 3, Decimal("10"))], "EUR")
    with pytest.raises(OrderRuleBroken, match="only a fulfilled order ships"):
        await c.orders.ship(order.id, "T-1", CTX)
    await c.orders.fulfil(order.id, CTX)
    shipped = await c.orders.ship(order.id, "T-1", CTX)
    assert shipped.status is OrderStatus.SHIPPED
    view = await c.inventory.stock("SNK")
    assert (view.totals.on_hand, view.totals.committed) == (0, 0)
    with pytest.raises(ValidationFailed, match="between 1 and 3"):
        await c.orders.return_goods(order.id, [ReturnLine("SNK", 4, "wh", True)], "too big")
    returned, saga = await c.orders.return_goods(
        order.id, [ReturnLine("SNK", 1, "wh", True), ], "too big")
    assert saga.status is SagaStatus.COMPLETED
    returned = await c.orders.get(order.id)
    assert returned.status is OrderStatus.RETURNED and returned.refunded == Decimal("10")
    _, _ = await c.orders.return_goods(order.id, [ReturnLine("SNK", 2, "wh", False)], "torn")
    final = await c.orders.get(order.id)
    assert final.status is OrderStatus.REFUNDED and final.refunded == Decimal("30")
    view = await c.inventory.stock("SNK")
    assert (view.totals.on_hand, view.totals.unsellable, view.available) == (3, 2, 1)
    assert (await c.inventory.audit()).ok


async def test_a_checked_out_cart_is_closed(container: Container) -> None:
    c = container
    await stocked(c, "TEE", 1)
    cart = await c.orders.create_cart("web", None)
    await c.orders.add_to_cart(cart.id, "TEE", 1, CTX)
    # No payment provider runs here: the checkout fails at authorisation and gives the stock
    # back at once (the void of the unanswered authorisation is retried later); the cart
    # cannot be checked out again.
    with pytest.raises(PaymentUnavailable) as failed:
        await c.orders.checkout(channel="web", customer_id=None, cart_id=cart.id)
    order, saga = await c.orders.get_with_saga(failed.value.extensions["order_id"])
    assert saga is not None and saga.failure_kind is FailureKind.PAYMENT_UNAVAILABLE
    assert order.status is OrderStatus.CANCELLED and saga.status is SagaStatus.COMPENSATING
    assert await available(c, "TEE") == 1
    with pytest.raises(CartClosed):
        await c.orders.checkout(channel="web", customer_id=None, cart_id=cart.id)
    with pytest.raises(CartClosed):
        await c.orders.add_to_cart(cart.id, "TEE", 1, CTX)
