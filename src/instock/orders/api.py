"""Orders HTTP routes: carts, checkout, orders, cancellations and returns."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, StringConstraints

from instock.inventory.model import Line
from instock.orders.model import CartStatus, Order, OrderStatus, ReturnLine, Saga, SagaStatus
from instock.orders.service import OrdersService
from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId, DropPass, LineIn, entry_context
from instock.platform.telemetry import correlation_id
from instock.platform.text import Printable

router = APIRouter(tags=["orders"], responses=problem_responses(400, 401, 403, 404, 409, 422))

BUYER_ROLES = (Role.CUSTOMER, Role.SERVICE, Role.SUPPORT)
BUYERS = requires(*BUYER_ROLES)
ORDER_READER_ROLES = (Role.CUSTOMER, *STAFF)
ORDER_READERS = requires(*ORDER_READER_ROLES)
FULFILLERS = requires(Role.FULFILMENT)
SUPPORTERS = requires(Role.SUPPORT, Role.SERVICE)
Reason = Annotated[Printable, StringConstraints(min_length=1, max_length=300,
                                                strip_whitespace=True)]
CustomerId = Annotated[Printable, StringConstraints(min_length=1, max_length=128)]


async def service(request: Request) -> OrdersService:
    svc: OrdersService = request.app.state.orders
    return svc


# -- carts ----------------------------------------------------------------------------------------


class CartIn(BaseModel):
    channel: CallerId = "web"
    customer_id: CustomerId | None = None


class CartItemOut(BaseModel):
    reservation_id: str
    sku: str
    quantity: int
    expires_at: datetime


class CartOut(BaseModel):
    id: str
    channel: str
    customer_id: str | None
    status: CartStatus
    order_id: str | None
    expires_at: datetime | None
    items: list[CartItemOut]


def render_cart(cart: Any) -> CartOut:
    return CartOut(id=cart.id, channel=cart.channel, customer_id=cart.customer_id,
                   status=cart.status, order_id=cart.order_id, expires_at=cart.expires_at,
                   items=[CartItemOut(reservation_id=i.reservation_id, sku=i.sku,
                                      quantity=i.quantity, expires_at=i.expires_at)
                          for i in cart.items])


def customer_for(principal: Principal, wanted: str | None) -> str | None:
    """Whom an order or cart is for: a customer is itself; staff name one (or none)."""
    customer_id = (wanted or principal.subject) if principal.is_customer else wanted
    principal.assert_acts_for(customer_id)
    return customer_id


async def own_cart(orders: OrdersService, cart_id: str, principal: Principal) -> None:
    principal.assert_acts_for((await orders.cart(cart_id)).customer_id)


@router.post("/v1/carts", status_code=201, response_model=CartOut)
async def create_cart(body: CartIn, principal: Principal = Depends(BUYERS),
                      orders: OrdersService = Depends(service)) -> CartOut:
    return render_cart(await orders.create_cart(body.channel,
                                                customer_for(principal, body.customer_id)))


@router.get("/v1/carts/{cart_id}", response_model=CartOut)
async def get_cart(cart_id: str, principal: Principal = Depends(BUYERS),
                   orders: OrdersService = Depends(service)) -> CartOut:
    cart = await orders.cart(cart_id)
    principal.assert_acts_for(cart.customer_id)
    return render_cart(cart)


@router.post("/v1/carts/{cart_id}/items", response_model=CartOut,
             responses=problem_responses(404, 409, 422))
async def add_item(cart_id: str, body: LineIn, request: Request,
                   principal: Principal = Depends(BUYERS),
                   orders: OrdersService = Depends(service),
                   drop_pass: DropPass = None) -> CartOut:
    """Hold more of a SKU; the cart's holds run `cart_hold_seconds` past the last touch. A SKU
    of a drop needs the drop's pass (`Drop-Pass`), as a reservation does."""
    await own_cart(orders, cart_id, principal)
    return render_cart(await orders.add_to_cart(cart_id, body.sku, body.quantity,
                                                entry_context(request, principal, "cart"),
                                                drop_pass))


@router.delete("/v1/carts/{cart_id}/items/{sku}", response_model=CartOut)
async def remove_item(cart_id: str, sku: str, request: Request,
                      principal: Principal = Depends(BUYERS),
                      orders: OrdersService = Depends(service)) -> CartOut:
    await own_cart(orders, cart_id, principal)
    return render_cart(await orders.remove_from_cart(cart_id, sku,
                                                     entry_context(request, principal, "cart")))


@router.post("/v1/carts/{cart_id}/touch", response_model=CartOut)
async def touch_cart(cart_id: str, request: Request, principal: Principal = Depends(BUYERS),
                     orders: OrdersService = Depends(service)) -> CartOut:
    """The buyer is active: extend every hold of the cart."""
    await own_cart(orders, cart_id, principal)
    return render_cart(await orders.touch_cart(cart_id,
                                               entry_context(request, principal, "cart")))


# -- orders ---------------------------------------------------------------------------------------


class OrderLineOut(BaseModel):
    sku: str
    quantity: int
    unit_price: Decimal


class StatusChangeOut(BaseModel):
    status: OrderStatus
    at: datetime
    reason: str


class SagaOut(BaseModel):
    id: str
    kind: str
    status: SagaStatus
    next_step: str | None
    failure: str | None
    failure_kind: str | None


class OrderOut(BaseModel):
    id: str
    status: OrderStatus
    channel: str
    customer_id: str | None
    external_id: str | None
    currency: str
    total: Decimal
    paid: Decimal
    refunded: Decimal
    payment_id: str | None
    lines: list[OrderLineOut]
    reservation_ids: list[str]
    history: list[StatusChangeOut]
    created_at: datetime
    saga: SagaOut | None = None


def render_saga(saga: Saga) -> SagaOut:
    return SagaOut(id=saga.id, kind=saga.kind.value, status=saga.status,
                   next_step=saga.step.value if saga.step else None, failure=saga.failure,
                   failure_kind=saga.failure_kind)


def render_order(order: Order, saga: Saga | None = None) -> OrderOut:
    return OrderOut(
        id=order.id, status=order.status, channel=order.channel, customer_id=order.customer_id,
        external_id=order.external_id, currency=order.currency, total=order.total,
        paid=order.paid, refunded=order.refunded, payment_id=order.payment_id,
        lines=[OrderLineOut(sku=line.sku, quantity=line.quantity, unit_price=line.unit_price)
               for line in order.lines],
        reservation_ids=order.reservation_ids,
        history=[StatusChangeOut(status=c.status, at=c.at, reason=c.reason)
                 for c in order.history],
        created_at=order.created_at, saga=None if saga is None else render_saga(saga))


class CheckoutIn(BaseModel):
    cart_id: str | None = None
    lines: list[LineIn] = Field(default_factory=list, max_length=100)
    channel: CallerId = "web"
    customer_id: CustomerId | None = None


CHECKOUT_WAITING = "Placed; a step waits for the payment provider (poll the order)"


@router.post("/v1/checkout", status_code=201, response_model=OrderOut,
             responses={202: {"model": OrderOut, "description": CHECKOUT_WAITING},
                        **problem_responses(402, 404, 409, 422, 503)})
async def checkout(body: CheckoutIn, request: Request, response: Response,
                   principal: Principal = Depends(BUYERS),
                   orders: OrdersService = Depends(service),
                   drop_pass: DropPass = None) -> OrderOut:
    """Turn a cart (or lines) into a paid order: reserve → authorise → commit → capture →
    hand to fulfilment. 201 when paid; 202 while a step waits for a provider (the saga goes
    on in the background: poll the order); 402/409/503 when it failed, stock released."""
    if body.cart_id is not None:
        await own_cart(orders, body.cart_id, principal)
    order, saga = await orders.checkout(
        channel=body.channel, customer_id=customer_for(principal, body.customer_id),
        cart_id=body.cart_id, lines=[Line(line.sku, line.quantity) for line in body.lines],
        correlation_id=correlation_id(request),
        idempotency_scope=entry_context(request, principal).idempotency_scope(),
        drop_pass=drop_pass)
    if saga.status is SagaStatus.RUNNING:
        response.status_code = 202
    return render_order(order, saga)


@router.get("/v1/orders/{order_id}", response_model=OrderOut)
async def get_order(order_id: str, principal: Principal = Depends(ORDER_READERS),
                    orders: OrdersService = Depends(service)) -> OrderOut:
    order, saga = await orders.get_with_saga(order_id)
    principal.assert_acts_for(order.customer_id)
    return render_order(order, saga)


class OrdersPage(BaseModel):
    limit: int = Field(default=50, ge=1, le=500)


@router.get("/v1/orders", response_model=list[OrderOut])
async def list_orders(customer_id: str | None = None, status: OrderStatus | None = None,
                      limit: int = Query(50, ge=1, le=500),
                      principal: Principal = Depends(ORDER_READERS),
                      orders: OrdersService = Depends(service)) -> list[OrderOut]:
    customer_id = customer_for(principal, customer_id)
    found = await orders.find(customer_id, status.value if status else None, limit)
    return [render_order(order) for order in found]


class CancelIn(BaseModel):
    reason: Reason = "requested by the customer"


@router.post("/v1/orders/{order_id}/cancel", response_model=OrderOut,
             responses=problem_responses(404, 409))
async def cancel_order(order_id: str, body: CancelIn, request: Request,
                       principal: Principal = Depends(BUYERS),
                       orders: OrdersService = Depends(service)) -> OrderOut:
    """Cancel a paid order before fulfilment: its stock is back on sale, its money refunded."""
    principal.assert_acts_for((await orders.get(order_id)).customer_id)
    order, saga = await orders.cancel(order_id, body.reason, correlation_id(request))
    return render_order(order, saga)


@router.post("/v1/orders/{order_id}/fulfil", response_model=OrderOut)
async def fulfil_order(order_id: str, request: Request,
                       principal: Principal = Depends(FULFILLERS),
                       orders: OrdersService = Depends(service)) -> OrderOut:
    return render_order(await orders.fulfil(order_id, entry_context(request, principal,
                                                                    "fulfilment")))


class ShipIn(BaseModel):
    tracking: Annotated[Printable, StringConstraints(max_length=200)] = ""


@router.post("/v1/orders/{order_id}/ship", response_model=OrderOut)
async def ship_order(order_id: str, body: ShipIn, request: Request,
                     principal: Principal = Depends(FULFILLERS),
                     orders: OrdersService = Depends(service)) -> OrderOut:
    """The parcel left: the order's units leave on-hand stock."""
    return render_order(await orders.ship(order_id, body.tracking,
                                          entry_context(request, principal, "shipped")))


@router.post("/v1/orders/{order_id}/deliver", response_model=OrderOut)
async def deliver_order(order_id: str, request: Request,
                        principal: Principal = Depends(FULFILLERS),
                        orders: OrdersService = Depends(service)) -> OrderOut:
    return render_order(await orders.deliver(order_id, entry_context(request, principal,
                                                                     "delivered")))


class ReturnLineIn(BaseModel):
    sku: CallerId
    quantity: int = Field(ge=1, le=10_000)
    location: CallerId
    resellable: bool = Field(description="true: back on sale; false: counted in as unsellable")


class ReturnIn(BaseModel):
    lines: list[ReturnLineIn] = Field(min_length=1, max_length=100)
    reason: Reason


@router.post("/v1/orders/{order_id}/returns", response_model=OrderOut,
             responses=problem_responses(404, 409, 422))
async def return_goods(order_id: str, body: ReturnIn, request: Request,
                       principal: Principal = Depends(SUPPORTERS),
                       orders: OrdersService = Depends(service)) -> OrderOut:
    """Goods came back: restock them (or count them unsellable) and refund what they cost."""
    order, saga = await orders.return_goods(
        order_id, [ReturnLine(line.sku, line.quantity, line.location, line.resellable)
                   for line in body.lines], body.reason,
        correlation_id(request))
    return render_order(order, saga)
