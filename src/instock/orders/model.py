"""The orders domain, pure: an order's lines, money and the one table of its legal transitions.

An order is placed on a reservation (pending payment), paid, fulfilled (in parts or whole),
shipped and delivered; it may be cancelled before fulfilment, returned after shipping, and
refunded when money was taken. Every change goes through `Order._move`, which checks the
transition against `TRANSITIONS` and changes nothing when it is illegal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class OrderError(Exception):
    """An order rule was broken; nothing was changed."""


class IllegalOrderTransition(OrderError):
    def __init__(self, order_id: str, current: OrderStatus, wanted: OrderStatus) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        super().__init__(f"order {order_id} is {current.value}: it cannot become "
                         f"{wanted.value} (from {current.value} it may become {allowed})")
        self.current, self.wanted = current, wanted


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    PARTIALLY_FULFILLED = "partially_fulfilled"
    FULFILLED = "fulfilled"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    RETURNED = "returned"
    REFUNDED = "refunded"


S = OrderStatus
# Which status may follow which. Cancelling is only possible before anything was fulfilled; money
# taken is given back from `cancelled` or `returned`, and `refunded` is the end.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING_PAYMENT: frozenset({S.PAID, S.CANCELLED}),
    S.PAID: frozenset({S.PARTIALLY_FULFILLED, S.FULFILLED, S.CANCELLED}),
    S.PARTIALLY_FULFILLED: frozenset({S.PARTIALLY_FULFILLED, S.FULFILLED}),
    S.FULFILLED: frozenset({S.SHIPPED}),
    S.SHIPPED: frozenset({S.DELIVERED, S.RETURNED}),
    S.DELIVERED: frozenset({S.RETURNED}),
    S.CANCELLED: frozenset({S.REFUNDED}),
    S.RETURNED: frozenset({S.REFUNDED}),
    S.REFUNDED: frozenset(),
}


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class StatusChange:
    status: OrderStatus
    at: datetime
    reason: str


@dataclass
class Order:
    id: str
    customer_id: str | None
    channel: str
    currency: str
    lines: list[OrderLine]
    reservation_id: str
    status: OrderStatus = OrderStatus.PENDING_PAYMENT
    payment_id: str | None = None
    paid: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    fulfilled: dict[str, int] = field(default_factory=dict)
    history: list[StatusChange] = field(default_factory=list)

    @classmethod
    def place(cls, id: str, customer_id: str | None, channel: str, currency: str,
              lines: list[OrderLine], reservation_id: str, now: datetime) -> Order:
        if not lines:
            raise OrderError("an order needs at least one line")
        if len({line.sku for line in lines}) != len(lines):
            raise OrderError("each SKU may appear on one line only")
        for line in lines:
            if line.quantity < 1:
                raise OrderError(f"{line.sku}: quantity must be at least 1")
            if line.unit_price < 0:
                raise OrderError(f"{line.sku}: a price cannot be negative")
        order = cls(id, customer_id, channel, currency, list(lines), reservation_id)
        order.history.append(StatusChange(order.status, now, "placed"))
        return order

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def refund_due(self) -> Decimal:
        """Money taken and not yet given back, once the order was cancelled or returned."""
        if self.status not in (S.CANCELLED, S.RETURNED):
            return Decimal(0)
        return self.paid - self.refunded

    def pay(self, payment_id: str, amount: Decimal, now: datetime) -> None:
        if amount != self.total:
            raise OrderError(f"order {self.id} costs {self.total} {self.currency}, "
                             f"not {amount}")
        self._move(S.PAID, now, f"payment {payment_id}")
        self.payment_id, self.paid = payment_id, amount

    def fulfil(self, quantities: dict[str, int], now: datetime) -> None:
        """Record units handed to fulfilment; the order is fulfilled when every unit is."""
        ordered = {line.sku: line.quantity for line in self.lines}
        after = dict(self.fulfilled)
        for sku, quantity in quantities.items():
            if sku not in ordered:
                raise OrderError(f"{sku} is not on order {self.id}")
            if quantity < 1:
                raise OrderError(f"{sku}: fulfil at least one unit")
            after[sku] = after.get(sku, 0) + quantity
            if after[sku] > ordered[sku]:
                raise OrderError(f"{sku}: {after[sku]} fulfilled, only {ordered[sku]} ordered")
        done = all(after.get(sku, 0) == quantity for sku, quantity in ordered.items())
        self._move(S.FULFILLED if done else S.PARTIALLY_FULFILLED, now, "fulfilment")
        self.fulfilled = after

    def ship(self, now: datetime, tracking: str = "") -> None:
        self._move(S.SHIPPED, now, tracking or "shipped")

    def deliver(self, now: datetime) -> None:
        self._move(S.DELIVERED, now, "delivered")

    def cancel(self, reason: str, now: datetime) -> None:
        self._move(S.CANCELLED, now, reason)

    def return_goods(self, reason: str, now: datetime) -> None:
        self._move(S.RETURNED, now, reason)

    def refund(self, amount: Decimal, now: datetime) -> None:
        """Give money back; the order is refunded once all that was taken is returned."""
        if amount <= 0:
            raise OrderError("a refund must be more than nothing")
        if amount > self.refund_due:
            raise OrderError(f"order {self.id} has {self.refund_due} {self.currency} to "
                             f"refund, not {amount}")
        if self.refunded + amount == self.paid:
            self._move(S.REFUNDED, now, f"refunded {amount}")
        self.refunded += amount

    def _move(self, wanted: OrderStatus, now: datetime, reason: str) -> None:
        if wanted not in TRANSITIONS[self.status]:
            raise IllegalOrderTransition(self.id, self.status, wanted)
        self.status = wanted
        self.history.append(StatusChange(wanted, now, reason))
