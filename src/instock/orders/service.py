"""Orders use cases: carts, checkout, the order's life after it, marketplace orders.

Checkout, cancellation and return are sagas (`instock.orders.saga`): each step is its own short
transaction and a provider call never runs inside one, so no stock row is ever locked while a
payment provider thinks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from instock.catalog.service import CatalogService
from instock.inventory.errors import InsufficientStockConflict
from instock.inventory.model import Line, ReservationStatus, merge_lines
from instock.inventory.port import Inventory
from instock.inventory.reservation_batch import ReserveRequest
from instock.orders import store
from instock.orders.model import (
    PAID_FOR_STOCK,
    Cart,
    FailureKind,
    Order,
    OrderError,
    OrderLine,
    OrderStatus,
    ReturnLine,
    Saga,
    SagaKind,
    SagaStatus,
)
from instock.orders.saga import SagaRunner
from instock.payments.errors import CircuitOpen, PaymentDeclined, PaymentUnavailable
from instock.platform.bus import outbox
from instock.platform.db import Database, utcnow
from instock.platform.entry_context import EntryContext
from instock.platform.errors import (
    Conflict,
    Forbidden,
    InstockError,
    NotFound,
    ValidationFailed,
    error_of,
)
from instock.platform.ids import new_id


class OrderRuleBroken(Conflict):
    slug, title = "order-rule", "Not allowed for the order as it stands"


class CartClosed(Conflict):
    slug, title = "cart-closed", "The cart was checked out already"


class _PlacedAlready(Exception):
    """A keyed checkout's order exists already: its transaction rolls back."""


class HoldExpired(Conflict):
    slug, title = "hold-expired", "The stock hold ran out before the payment completed"


def checkout_failure(order: Order, saga: Saga) -> InstockError:
    """The problem a failed checkout answers with; the order (cancelled) is named in it."""
    reason, extra = saga.failure or "checkout failed", {"order_id": order.id}
    match saga.failure_kind:
        case FailureKind.PAYMENT_DECLINED:
            return PaymentDeclined(reason, order.payment_id, **extra)
        case FailureKind.INSUFFICIENT_STOCK:
            return InsufficientStockConflict(reason, **extra)
        case FailureKind.HOLD_EXPIRED:
            return HoldExpired(reason, **extra)
        case FailureKind.CIRCUIT_OPEN:
            return CircuitOpen(reason, **extra)
        case FailureKind.RESERVATION_REFUSED:  # inventory's own refusal, as it was raised
            refusal = saga.data.get("refusal")
            if isinstance(refusal, dict):
                return error_of({**refusal, **extra})
            return Forbidden(reason, **extra)
        case _:
            return PaymentUnavailable(reason, **extra)


@dataclass(frozen=True)
class OrderSettings:
    currency: str
    cart_hold_seconds: int  # how long a cart holds its items after the buyer's last touch
    checkout_hold_seconds: int  # how long checkout holds stock for the payment to finish
    inline: bool = True  # checkout runs its saga in the request, else a worker does


class OrdersService:
    def __init__(self, db: Database, catalog: CatalogService, inventory: Inventory,
                 runner: SagaRunner, settings: OrderSettings,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.catalog = catalog
        self.inventory = inventory
        self.runner = runner
        self.settings = settings
        self.clock = clock

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return await store.export_customer(conn, customer_id)

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        async with self.db.write() as conn:
            await store.pseudonymise_customer(conn, customer_id, pseudonym)

    # -- carts ------------------------------------------------------------------------------------

    async def create_cart(self, channel: str, customer_id: str | None) -> Cart:
        await self.inventory.channel(channel)  # NotFound for an unknown channel
        cart_id = new_id()
        async with self.db.write() as conn:
            await store.insert_cart(conn, cart_id, channel, customer_id, self.clock())
        return await self.cart(cart_id)

    async def cart(self, cart_id: str) -> Cart:
        async with self.db.read() as conn:
            return await self._cart(conn, cart_id)

    async def _cart(self, conn: AsyncConnection, cart_id: str) -> Cart:
        cart = await store.get_cart(conn, cart_id)
        if cart is None:
            raise NotFound(f"cart {cart_id} does not exist")
        return cart

    async def add_to_cart(self, cart_id: str, sku: str, quantity: int,
                          ctx: EntryContext, drop_pass: str | None = None) -> Cart:
        """Hold `quantity` more of `sku` for the cart: a hold of its own, so adding never puts
        at risk what the cart already holds (in a drop the first unit is the one that counts)."""
        cart = await self._open_cart(cart_id)
        if quantity < 1:
            raise ValidationFailed("quantity", "must be at least 1")
        reservation = await self.inventory.reserve(
            ReserveRequest([Line(sku, quantity)], cart.channel, cart.customer_id,
                           self.settings.cart_hold_seconds, drop_pass),
            ctx if ctx.idempotency_key else EntryContext(ctx.actor, "cart",
                                                         ctx.correlation_id))
        async with self.db.write() as conn:
            if reservation.id not in {item.reservation_id for item in cart.items}:
                await store.add_cart_item(conn, cart_id, reservation.id, sku, quantity,
                                          reservation.expires_at)
            return await self._cart(conn, cart_id)

    async def remove_from_cart(self, cart_id: str, sku: str, ctx: EntryContext) -> Cart:
        """Give back every hold of `sku` in the cart."""
        cart = await self._open_cart(cart_id)
        gone = [item.reservation_id for item in cart.items if item.sku == sku]
        if not gone:
            raise NotFound(f"{sku} is not in cart {cart_id}")
        for reservation_id in gone:
            await self._give_back(reservation_id, ctx)
        async with self.db.write() as conn:
            await store.remove_cart_items(conn, cart_id, gone)
            return await self._cart(conn, cart_id)

    async def touch_cart(self, cart_id: str, ctx: EntryContext) -> Cart:
        """The buyer is still here: every hold of the cart runs for the full time again."""
        cart = await self._open_cart(cart_id)
        expiries = {}
        for item in cart.items:
            extended = await self.inventory.extend(item.reservation_id,
                                                   self.settings.cart_hold_seconds, ctx)
            expiries[item.reservation_id] = extended.expires_at
        async with self.db.write() as conn:
            await store.touch_cart(conn, cart_id, self.clock(), expiries)
            return await self._cart(conn, cart_id)

    async def _open_cart(self, cart_id: str) -> Cart:
        cart = await self.cart(cart_id)
        if not cart.is_open:
            raise CartClosed(f"cart {cart_id} was checked out (order {cart.order_id})")
        return cart

    async def _give_back(self, reservation_id: str, ctx: EntryContext) -> None:
        reservation = await self.inventory.get_reservation(reservation_id)
        if reservation.status is ReservationStatus.ACTIVE:
            await self.inventory.release(reservation_id, ctx)

    # -- checkout ---------------------------------------------------------------------------------

    async def checkout(self, *, channel: str, customer_id: str | None,
                       cart_id: str | None = None, lines: Sequence[Line] = (),
                       correlation_id: str | None = None,
                       idempotency_scope: str | None = None,
                       drop_pass: str | None = None) -> tuple[Order, Saga]:
        """Place an order and run its checkout saga as far as it goes now: the order with its
        saga, completed or still running (waiting for a provider). A checkout that failed
        raises its problem (declined, out of stock, hold expired, provider down), naming the
        cancelled order.

        From a cart, the cart's holds become the order's; otherwise the saga reserves the lines.
        The saga is stored with the order, so if this process dies a worker finishes it. With
        an `idempotency_scope` (the caller's key), a checkout that placed its order already,
        in a process that died before it answered or in a twin running now, is not placed
        again: the answer is that order as it stands.
        """
        if idempotency_scope is not None:
            placed = await self._placed_by(idempotency_scope)
            if placed is not None:
                return await self._as_it_stands(placed)
        if (cart_id is None) == (not lines):
            raise ValidationFailed("cart_id", "give either a cart_id or lines, not both")
        data: dict[str, Any] = {"correlation_id": correlation_id}
        if cart_id is not None:
            cart = await self._open_cart(cart_id)
            if not cart.items:
                raise ValidationFailed("cart_id", "the cart is empty")
            channel, customer_id = cart.channel, cart.customer_id
            lines = [Line(i.sku, i.quantity) for i in cart.items]
            data.update(cart_id=cart_id, reservation_ids=[i.reservation_id for i in cart.items])
        else:
            await self.inventory.channel(channel)
        order = Order.place(new_id(), customer_id, channel, self.settings.currency,
                            await self._priced(lines, "lines"), self.clock())
        data["lines"] = [{"sku": line.sku, "quantity": line.quantity} for line in order.lines]
        data["terms"] = {"channel": order.channel, "customer_id": order.customer_id,
                         "total": str(order.total), "currency": order.currency}
        data["hold_seconds"] = self.settings.checkout_hold_seconds
        if drop_pass is not None and cart_id is None:
            # The saga reserves the lines, maybe after a crash in another process: it keeps
            # the pass (short-lived; a cart's holds passed the gate when they were made).
            data["drop_pass"] = drop_pass
        saga = Saga.start(new_id(), SagaKind.CHECKOUT, order.id, self.clock(), data)
        # Several transactions, with a provider called between them: each commits as it ends.
        # A keyed checkout needs no claim on its key: the order keeps the key.
        async with self.db.durable(rerunnable=idempotency_scope is not None):
            try:
                async with self.db.write() as conn:
                    if cart_id is not None and not await store.check_out_cart(conn, cart_id,
                                                                              order.id):
                        raise CartClosed(f"cart {cart_id} was checked out already")
                    if not await self._insert(conn, order, correlation_id, idempotency_scope):
                        raise _PlacedAlready  # by a twin with the same key: this one goes
                    await self.runner.insert(conn, saga, leased=self.settings.inline)
            except _PlacedAlready:
                assert idempotency_scope is not None
                placed = await self._placed_by(idempotency_scope)
                assert placed is not None
                return await self._as_it_stands(placed)
            known: Order | None = None
            if self.settings.inline:
                try:
                    # The saga starts from the order placed here, not a read of it; the order
                    # as its steps left it (committed) is the answer's.
                    saga, known = await self.runner.drive_known(saga, order)
                except store.LeaseLost:  # a step outlived the lease and a saga worker took
                    # the saga over: it goes on there, and the answer is where it stands now
                    [saga, *_] = [s for s in await self.sagas(order.id)
                                  if s.kind is SagaKind.CHECKOUT]
        return await self._outcome(order.id, saga, known)

    async def _placed_by(self, idempotency_scope: str) -> Order | None:
        async with self.db.read() as conn:
            return await store.order_placed_by(conn, idempotency_scope)

    async def _as_it_stands(self, order: Order) -> tuple[Order, Saga]:
        """A checkout placed before: its saga is driven on if nobody holds it (its process
        died), and the answer is what the first try would have answered by now."""
        [saga, *_] = [s for s in await self.sagas(order.id) if s.kind is SagaKind.CHECKOUT]
        if self.settings.inline and not saga.finished:
            try:
                saga = await self.runner.drive(saga.id)
            except store.LeaseLost:  # a saga worker took it over meanwhile: it goes on there
                [saga, *_] = [s for s in await self.sagas(order.id)
                              if s.kind is SagaKind.CHECKOUT]
        return await self._outcome(order.id, saga)

    async def _outcome(self, order_id: str, saga: Saga,
                       known: Order | None = None) -> tuple[Order, Saga]:
        """The answer: the order (`known`: as this process's saga just committed it, else
        read) and its saga, or the failed checkout's problem."""
        order = known if known is not None else await self.get(order_id)
        if saga.status in (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED):
            raise checkout_failure(order, saga)
        return order, saga

    async def _priced(self, lines: Sequence[Line], field: str) -> list[OrderLine]:
        merged = merge_lines(lines)
        prices = await self.catalog.prices(line.sku for line in merged)
        unknown = sorted({line.sku for line in merged} - prices.keys())
        if unknown:
            raise ValidationFailed(f"{field}.sku", f"unknown SKU: {', '.join(unknown)}")
        foreign = sorted(sku for sku, (_, currency) in prices.items()
                         if currency != self.settings.currency)
        if foreign:
            raise ValidationFailed(f"{field}.sku", f"not sold in {self.settings.currency}: "
                                                  f"{', '.join(foreign)}")
        return [OrderLine(line.sku, line.quantity, prices[line.sku][0]) for line in merged]

    # -- after checkout ---------------------------------------------------------------------------

    async def get(self, order_id: str) -> Order:
        async with self.db.read() as conn:
            found = await store.get_order(conn, order_id)
        if found is None:
            raise NotFound(f"order {order_id} does not exist")
        return found

    async def find(self, customer_id: str | None, status: str | None,
                   limit: int = 50) -> list[Order]:
        async with self.db.read() as conn:
            return await store.list_orders(conn, customer_id, status, limit)

    async def sagas(self, order_id: str) -> list[Saga]:
        async with self.db.read() as conn:
            return await store.sagas_of(conn, order_id)

    async def get_with_saga(self, order_id: str) -> tuple[Order, Saga | None]:
        """The order and its latest saga (None for an order that never had one)."""
        order = await self.get(order_id)
        sagas = await self.sagas(order_id)
        return order, sagas[-1] if sagas else None

    # -- what the reconciler asks ------------------------------------------------------------

    async def holders(self, reservation_ids: set[str]) -> dict[str, tuple[str, OrderStatus]]:
        """The order (id, status) that holds each of these reservations, where one does."""
        if not reservation_ids:
            return {}
        async with self.db.read() as conn:
            return await store.holders(conn, sorted(reservation_ids))

    async def paid_for_stock(self, ids: set[str], limit: int, changed: bool = True,
                             changed_since: datetime | None = None) -> dict[str, list[str]]:
        """Orders paid for stock they have not shipped, among `ids` and (if `changed`) those
        changed since `changed_since`: id -> reservation ids."""
        statuses = sorted(PAID_FOR_STOCK)
        rows = []
        async with self.db.read() as conn:
            if changed:
                rows += await store.changed_orders(conn, changed_since, statuses, limit)
            if ids:
                rows += await store.changed_orders(conn, None, statuses, len(ids), sorted(ids))
        return {order_id: reservation_ids for order_id, _, reservation_ids in rows}

    async def fulfil(self, order_id: str, ctx: EntryContext) -> Order:
        """The warehouse picked every unit: the order is fulfilled."""
        return await self.change(order_id, lambda o, now: o.fulfil_rest(now),
                                 ctx.correlation_id)

    async def ship(self, order_id: str, tracking: str, ctx: EntryContext) -> Order:
        """The parcel left: the order's units leave on-hand stock, then the order is shipped."""
        order = await self.get(order_id)
        if order.status is not OrderStatus.FULFILLED:
            raise OrderRuleBroken(f"order {order_id} is {order.status.value}; only a fulfilled "
                                  "order ships")
        for reservation_id in order.reservation_ids:
            reservation = await self.inventory.get_reservation(reservation_id)
            if reservation.status is ReservationStatus.COMMITTED:
                await self.inventory.ship(reservation_id, ctx)
        return await self.change(order_id, lambda o, now: o.ship(now, tracking),
                                 ctx.correlation_id)

    async def deliver(self, order_id: str, ctx: EntryContext) -> Order:
        return await self.change(order_id, lambda o, now: o.deliver(now), ctx.correlation_id)

    async def cancel(self, order_id: str, reason: str,
                     correlation_id: str | None = None) -> tuple[Order, Saga]:
        """Cancel a paid order before it is fulfilled: stock back, money back (a saga)."""
        order = await self.get(order_id)
        if order.status is not OrderStatus.PAID:
            raise OrderRuleBroken(f"order {order_id} is {order.status.value}; only a paid, "
                                  "unfulfilled order can be cancelled")
        saga = Saga.start(new_id(), SagaKind.CANCELLATION, order_id, self.clock(),
                          {"reason": reason, "correlation_id": correlation_id})
        async with self.db.write() as conn:
            await self.runner.insert(conn, saga)
        saga = await self.runner.drive(saga.id, leased=saga)
        return await self.get(order_id), saga

    async def return_goods(self, order_id: str, lines: Sequence[ReturnLine], reason: str,
                           correlation_id: str | None = None) -> tuple[Order, Saga]:
        """Goods came back: count them in (sellable or not) and refund what they cost."""
        order = await self.get(order_id)
        if order.status not in (OrderStatus.SHIPPED, OrderStatus.DELIVERED,
                                OrderStatus.RETURNED):
            raise OrderRuleBroken(f"order {order_id} is {order.status.value}; only shipped or "
                                  "delivered goods can come back")
        prices = {line.sku: line for line in order.lines}
        if not lines:
            raise ValidationFailed("lines", "return at least one line")
        for i, line in enumerate(lines):
            if line.sku not in prices:
                raise ValidationFailed(f"lines[{i}].sku", f"{line.sku} is not on the order")
            if not 1 <= line.quantity <= prices[line.sku].quantity:
                raise ValidationFailed(f"lines[{i}].quantity",
                                       f"between 1 and {prices[line.sku].quantity}")
        amount = sum((prices[line.sku].unit_price * line.quantity for line in lines),
                      Decimal(0))
        if amount > order.paid - order.refunded:
            raise OrderRuleBroken(f"order {order_id} has {order.paid - order.refunded} left "
                                  f"to refund, the return is worth {amount}")
        saga = Saga.start(new_id(), SagaKind.RETURN, order_id, self.clock(), {
            "reason": reason, "correlation_id": correlation_id, "amount": str(amount),
            "lines": [{"sku": line.sku, "quantity": line.quantity, "location": line.location,
                       "resellable": line.resellable} for line in lines]})
        async with self.db.write() as conn:
            await self.runner.insert(conn, saga)
        saga = await self.runner.drive(saga.id, leased=saga)
        return await self.get(order_id), saga

    # -- marketplace orders -----------------------------------------------------------------------

    async def place_marketplace_order(self, channel: str, external_id: str,
                                      lines: list[OrderLine], currency: str,
                                      correlation_id: str | None = None) -> Order:
        """An order a marketplace took (and was paid for): commit its stock on that channel at
        once, or record it cancelled when the channel cannot supply it. Once per external id."""
        async with self.db.read() as conn:
            known = await store.order_by_external_id(conn, channel, external_id)
        if known is not None:
            return known
        now = self.clock()
        try:
            order = Order.place(new_id(), None, channel, currency, lines, now, external_id)
        except OrderError as exc:
            raise ValidationFailed("lines", str(exc)) from exc
        ctx = EntryContext(f"marketplace:{channel}", "marketplace order", correlation_id,
                           idempotency_key=f"marketplace:{external_id}")
        try:
            reservation = await self.inventory.reserve(
                ReserveRequest([Line(line.sku, line.quantity) for line in lines], channel,
                               ttl_seconds=self.settings.checkout_hold_seconds), ctx)
        except InsufficientStockConflict as exc:
            order.cancel(f"insufficient stock: {exc}", now)
        else:
            if reservation.status is ReservationStatus.ACTIVE:
                await self.inventory.commit(reservation.id, ctx)
            order.reservation_ids = [reservation.id]
            order.pay(f"{channel}:{external_id}", order.total, now)
            order.request_fulfilment()
        async with self.db.write() as conn:
            if await store.order_by_external_id(conn, channel, external_id) is None:
                await self._insert(conn, order, correlation_id)
        return await self._by_external_id(channel, external_id)

    async def cancel_marketplace_order(self, channel: str, external_id: str, reason: str,
                                       correlation_id: str | None = None) -> Order:
        """The marketplace's buyer cancelled (the marketplace refunds them)."""
        order = await self._by_external_id(channel, external_id)
        if order.status is OrderStatus.PAID:
            order, _ = await self.cancel(order.id, reason, correlation_id)
        return order

    async def _by_external_id(self, channel: str, external_id: str) -> Order:
        async with self.db.read() as conn:
            found = await store.order_by_external_id(conn, channel, external_id)
        if found is None:
            raise NotFound(f"{channel} order {external_id} is not known")
        return found

    # -- one place where an order is written ------------------------------------------------------

    async def _insert(self, conn: AsyncConnection, order: Order, correlation_id: str | None,
                      idempotency_scope: str | None = None) -> bool:
        """Insert the order with its events; False if its scope placed one already."""
        if not await store.insert_order(conn, order, self.clock(), idempotency_scope):
            return False
        await outbox.add(conn, order.events, correlation_id)
        order.events.clear()
        return True

    async def change(self, order_id: str, change: Callable[[Order, datetime], None],
                     correlation_id: str | None) -> Order:
        """Read, change through the model, write back with its events, all or nothing."""
        try:
            return await self.runner.change_order(order_id, change, correlation_id)
        except OrderError as exc:
            raise OrderRuleBroken(str(exc)) from exc
