"""Orders in GraphQL: carts, checkout and orders, through the same service calls and the same
ownership rules as the REST routes, rendered by the REST routes' own documents."""

from __future__ import annotations

import strawberry
from strawberry.experimental.pydantic import type as from_model

from instock.inventory.model import Line
from instock.orders import api
from instock.orders.model import CartStatus, OrderStatus, SagaStatus
from instock.orders.service import OrdersService
from instock.platform.graphql import Info, correlation_id, entry_context, parse, require

strawberry.enum(OrderStatus, name="OrderStatus")
strawberry.enum(SagaStatus, name="SagaStatus")
strawberry.enum(CartStatus, name="CartStatus")


def service(info: Info) -> OrdersService:
    svc: OrdersService = info.context.state.orders
    return svc


@from_model(model=api.CartItemOut, all_fields=True)
class CartItem:
    pass


@from_model(model=api.CartOut, all_fields=True)
class Cart:
    pass


@from_model(model=api.OrderLineOut, all_fields=True)
class OrderLine:
    pass


@from_model(model=api.StatusChangeOut, all_fields=True)
class StatusChange:
    pass


@from_model(model=api.SagaOut, all_fields=True)
class Saga:
    pass


@from_model(model=api.OrderOut, all_fields=True)
class Order:
    pass


@strawberry.input
class CheckoutLine:
    sku: str
    quantity: int


@strawberry.type
class OrdersQuery:
    @strawberry.field
    async def cart(self, info: Info, id: strawberry.ID) -> Cart:
        principal = require(info, *api.BUYER_ROLES)
        cart = await service(info).cart(str(id))
        principal.assert_acts_for(cart.customer_id)
        return Cart.from_pydantic(api.render_cart(cart))

    @strawberry.field
    async def order(self, info: Info, id: strawberry.ID) -> Order:
        principal = require(info, *api.ORDER_READER_ROLES)
        order, saga = await service(info).get_with_saga(str(id))
        principal.assert_acts_for(order.customer_id)
        return Order.from_pydantic(api.render_order(order, saga))

    @strawberry.field(description="a customer's own orders; staff name the customer (or not)")
    async def orders(self, info: Info, customer_id: str | None = None,
                     status: OrderStatus | None = None, first: int = 50) -> list[Order]:
        principal = require(info, *api.ORDER_READER_ROLES)
        page = parse(api.OrdersPage, {"limit": first})
        found = await service(info).find(api.customer_for(principal, customer_id),
                                         status.value if status else None, page.limit)
        return [Order.from_pydantic(api.render_order(order)) for order in found]


@strawberry.type
class OrdersMutation:
    @strawberry.mutation(description="hold more of a SKU in a cart; without `cartId` a new cart "
                                     "is opened for the caller")
    async def add_to_cart(self, info: Info, sku: str, quantity: int = 1,
                          cart_id: strawberry.ID | None = None, channel: str = "web") -> Cart:
        principal = require(info, *api.BUYER_ROLES)
        line = parse(api.LineIn, {"sku": sku, "quantity": quantity})
        orders = service(info)
        if cart_id is None:
            opened = parse(api.CartIn, {"channel": channel})
            cart_id = strawberry.ID((await orders.create_cart(
                opened.channel, api.customer_for(principal, None))).id)
        else:
            await api.own_cart(orders, str(cart_id), principal)
        return Cart.from_pydantic(api.render_cart(await orders.add_to_cart(
            str(cart_id), line.sku, line.quantity, entry_context(info, principal, "cart"))))

    @strawberry.mutation
    async def remove_from_cart(self, info: Info, cart_id: strawberry.ID, sku: str) -> Cart:
        principal = require(info, *api.BUYER_ROLES)
        orders = service(info)
        await api.own_cart(orders, str(cart_id), principal)
        return Cart.from_pydantic(api.render_cart(await orders.remove_from_cart(
            str(cart_id), sku, entry_context(info, principal, "cart"))))

    @strawberry.mutation(description="a cart (or lines) becomes a paid order; the order's "
                                     "`saga.status` is `running` while a step waits for the "
                                     "payment provider")
    async def checkout(self, info: Info, cart_id: strawberry.ID | None = None,
                       lines: list[CheckoutLine] | None = None, channel: str = "web",
                       customer_id: str | None = None) -> Order:
        principal = require(info, *api.BUYER_ROLES)
        body = parse(api.CheckoutIn, {
            "cart_id": cart_id, "channel": channel, "customer_id": customer_id,
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in lines or ()]})
        orders = service(info)
        if body.cart_id is not None:
            await api.own_cart(orders, body.cart_id, principal)
        order, saga = await orders.checkout(
            channel=body.channel, customer_id=api.customer_for(principal, body.customer_id),
            cart_id=body.cart_id, lines=[Line(line.sku, line.quantity) for line in body.lines],
            correlation_id=correlation_id(info),
            idempotency_scope=entry_context(info, principal).idempotency_scope())
        return Order.from_pydantic(api.render_order(order, saga))


