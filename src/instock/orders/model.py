"""The orders domain, pure: an order's lines, money and the one table of its legal transitions.

An order is placed on a reservation (pending payment), paid, fulfilled (in parts or whole),
shipped and delivered; it may be cancelled before fulfilment, returned after shipping, and
refunded when money was taken. Every change goes through `Order._move`, which checks the
transition against `TRANSITIONS` and changes nothing when it is illegal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from instock.orders.events import (
    FulfilmentRequested,
    OrderCancelled,
    OrderDelivered,
    OrderEvent,
    OrderFulfilled,
    OrderLineData,
    OrderPaid,
    OrderPlaced,
    OrderRefunded,
    OrderReturned,
    OrderShipped,
)


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

# An order in these statuses has paid for its units and not shipped them: its reservations must
# be committed (or shipped, between shipping the stock and marking the order). A checkout commits
# its stock before it captures the payment, so a pending order may hold committed stock too.
PAID_FOR_STOCK = frozenset({S.PAID, S.PARTIALLY_FULFILLED, S.FULFILLED})
MAY_HOLD_STOCK = PAID_FOR_STOCK | {S.PENDING_PAYMENT}

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
    created_at: datetime
    external_id: str | None = None  # the marketplace's order id, for marketplace orders
    reservation_ids: list[str] = field(default_factory=list)
    status: OrderStatus = OrderStatus.PENDING_PAYMENT
    payment_id: str | None = None
    paid: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    fulfilled: dict[str, int] = field(default_factory=dict)
    history: list[StatusChange] = field(default_factory=list)
    refund_refs: list[str] = field(default_factory=list)  # refunds already counted, by reference
    version: int = 1
    events: list[OrderEvent] = field(default_factory=list, compare=False)

    @classmethod
    def place(cls, id: str, customer_id: str | None, channel: str, currency: str,
              lines: list[OrderLine], now: datetime, external_id: str | None = None) -> Order:
        if not lines:
            raise OrderError("an order needs at least one line")
        if len({line.sku for line in lines}) != len(lines):
            raise OrderError("each SKU may appear on one line only")
        for line in lines:
            if line.quantity < 1:
                raise OrderError(f"{line.sku}: quantity must be at least 1")
            if line.unit_price < 0:
                raise OrderError(f"{line.sku}: a price cannot be negative")
        order = cls(id, customer_id, channel, currency, list(lines), now, external_id)
        order.history.append(StatusChange(order.status, now, "placed"))
        order._raise(OrderPlaced, "placed")
        return order

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def cancel_reason(self) -> str | None:
        cancelled = [change for change in self.history if change.status is S.CANCELLED]
        return cancelled[-1].reason if cancelled else None

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

    def fulfil_rest(self, now: datetime) -> None:
        """Every unit not yet handed to fulfilment is handed now."""
        self.fulfil({line.sku: line.quantity - self.fulfilled.get(line.sku, 0)
                     for line in self.lines
                     if line.quantity > self.fulfilled.get(line.sku, 0)}, now)

    def ship(self, now: datetime, tracking: str = "") -> None:
        self._move(S.SHIPPED, now, tracking or "shipped")

    def deliver(self, now: datetime) -> None:
        self._move(S.DELIVERED, now, "delivered")

    def cancel(self, reason: str, now: datetime) -> None:
        self._move(S.CANCELLED, now, reason)

    def return_goods(self, reason: str, now: datetime) -> None:
        self._move(S.RETURNED, now, reason)

    def refund(self, amount: Decimal, now: datetime, reference: str = "") -> None:
        """Give money back; the order is refunded once all that was taken is returned.
        A refund with a `reference` already counted changes nothing (a resumed saga)."""
        if reference and reference in self.refund_refs:
            return
        if amount <= 0:
            raise OrderError("a refund must be more than nothing")
        if amount > self.refund_due:
            raise OrderError(f"order {self.id} has {self.refund_due} {self.currency} to "
                             f"refund, not {amount}")
        if self.refunded + amount == self.paid:
            self._move(S.REFUNDED, now, f"refunded {amount}")
        self.refunded += amount
        if reference:
            self.refund_refs.append(reference)

    def request_fulfilment(self) -> None:
        if self.status is not S.PAID:
            raise OrderError(f"order {self.id} is {self.status.value}; only a paid order "
                             "goes to fulfilment")
        self._raise(FulfilmentRequested, "paid")

    def _move(self, wanted: OrderStatus, now: datetime, reason: str) -> None:
        if wanted not in TRANSITIONS[self.status]:
            raise IllegalOrderTransition(self.id, self.status, wanted)
        self.status = wanted
        self.history.append(StatusChange(wanted, now, reason))
        self.version += 1
        self._raise(STATUS_EVENTS[wanted], reason)

    def _raise(self, event_type: type[OrderEvent], reason: str) -> None:
        self.events.append(event_type(
            order_id=self.id, version=self.version, channel=self.channel,
            customer_id=self.customer_id, external_id=self.external_id,
            status=self.status.value, currency=self.currency, total=self.total,
            lines=[OrderLineData(sku=line.sku, quantity=line.quantity,
                                 unit_price=line.unit_price) for line in self.lines],
            reason=reason))


STATUS_EVENTS: dict[OrderStatus, type[OrderEvent]] = {
    S.PAID: OrderPaid, S.PARTIALLY_FULFILLED: OrderFulfilled, S.FULFILLED: OrderFulfilled,
    S.SHIPPED: OrderShipped, S.DELIVERED: OrderDelivered, S.CANCELLED: OrderCancelled,
    S.RETURNED: OrderReturned, S.REFUNDED: OrderRefunded,
}


# ---------------------------------------------------------------------------------------------
# Sagas: the steps of a checkout, a cancellation or a return, and what undoes them


class Step(StrEnum):
    RESERVE = "reserve"  # hold the stock (or adopt the cart's holds)
    AUTHORISE = "authorise"  # the provider puts the money aside
    COMMIT = "commit_stock"  # held units become the order's
    CAPTURE = "capture"  # the money is taken
    FULFIL = "request_fulfilment"  # the order is paid and handed to fulfilment
    CANCEL = "cancel_order"  # the order is cancelled (first step of a cancellation)
    RESTOCK = "restock"  # returned goods are counted back in
    REFUND = "refund"  # money taken is given back
    # Compensations: what undoes the steps above when a later one fails for good.
    VOID = "void_payment"
    RELEASE = "release_stock"
    ABANDON = "abandon_order"  # a checkout that failed: its order is cancelled


class SagaKind(StrEnum):
    CHECKOUT = "checkout"
    CANCELLATION = "cancellation"
    RETURN = "return"


class SagaStatus(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"


St = Step
PLANS: dict[SagaKind, tuple[Step, ...]] = {
    SagaKind.CHECKOUT: (St.RESERVE, St.AUTHORISE, St.COMMIT, St.CAPTURE, St.FULFIL),
    SagaKind.CANCELLATION: (St.CANCEL, St.RELEASE, St.REFUND),
    SagaKind.RETURN: (St.RESTOCK, St.REFUND),
}
# When a step fails for good, these run instead of the rest, in order. Each is safe whatever
# the earlier steps got to do: releasing gives back whatever is still held and voiding does
# nothing without an authorisation. Stock goes back first: a provider that is down must not
# keep a buyer's units hostage while its void waits to be retried. Steps of cancellations and
# returns only ever retry: they undo nothing, they finish.
COMPENSATIONS: dict[Step, tuple[Step, ...]] = {
    St.RESERVE: (St.RELEASE, St.ABANDON),
    St.AUTHORISE: (St.RELEASE, St.ABANDON, St.VOID),
    St.COMMIT: (St.RELEASE, St.ABANDON, St.VOID),
    St.CAPTURE: (St.RELEASE, St.ABANDON, St.VOID),
}


class FailureKind(StrEnum):
    """Why a saga gave up; kept in its data as this string, so stored sagas read the same."""

    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_UNAVAILABLE = "payment_unavailable"
    CIRCUIT_OPEN = "circuit_open"  # the provider's breaker was open: failed fast
    INSUFFICIENT_STOCK = "insufficient_stock"
    HOLD_EXPIRED = "hold_expired"
    CONFLICT = "conflict"  # a conflict that kept coming back until the attempts ran out
    ORDER_MOVED_ON = "order_moved_on"  # the order moved on before the saga could act on it
    # Inventory refused to reserve for this buyer (a drop's SKU without a valid pass): asking
    # again changes nothing, so the saga gives up at once; the refusal is kept in its data.
    RESERVATION_REFUSED = "reservation_refused"


class SagaError(Exception):
    """A saga was driven against its rules (a bug, not a business outcome)."""


@dataclass
class Saga:
    """Where a multi-step process stands: the steps still to run and how often the current one
    was tried. Persisted after every step, so a process that dies resumes where it stopped."""

    id: str
    kind: SagaKind
    order_id: str
    plan: list[Step]
    next_attempt_at: datetime
    status: SagaStatus = SagaStatus.RUNNING
    attempts: int = 0
    failure: str | None = None
    data: dict[str, object] = field(default_factory=dict)

    @classmethod
    def start(cls, id: str, kind: SagaKind, order_id: str, now: datetime,
              data: dict[str, object] | None = None) -> Saga:
        return cls(id, kind, order_id, list(PLANS[kind]), now, data=dict(data or {}))

    @property
    def step(self) -> Step | None:
        return self.plan[0] if self.plan else None

    @property
    def failure_kind(self) -> FailureKind | None:
        kind = self.data.get("failure_kind")
        return None if kind is None else FailureKind(str(kind))

    @failure_kind.setter
    def failure_kind(self, kind: FailureKind) -> None:
        self.data["failure_kind"] = kind.value

    @property
    def finished(self) -> bool:
        return self.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)

    def succeeded(self, now: datetime) -> None:
        """The current step is done: on to the next, or the end."""
        self._require_running()
        self.plan.pop(0)
        self.attempts, self.next_attempt_at = 0, now
        if not self.plan:
            self.status = (SagaStatus.COMPENSATED if self.status is SagaStatus.COMPENSATING
                           else SagaStatus.COMPLETED)

    def failed(self, reason: str, now: datetime) -> None:
        """The current step failed for good: undo what came before it (or, where nothing can
        be undone, it is a bug to give up)."""
        self._require_running()
        step = self.plan[0]
        if self.status is SagaStatus.COMPENSATING or step not in COMPENSATIONS:
            raise SagaError(f"{self.kind.value} step {step.value} cannot give up; it retries")
        self.status, self.failure = SagaStatus.COMPENSATING, reason
        self.plan = list(COMPENSATIONS[step])
        self.attempts, self.next_attempt_at = 0, now

    def stop(self, reason: str, now: datetime) -> None:
        """Nothing is left to do or undo (a cancellation that came after fulfilment)."""
        self._require_running()
        self.status, self.failure, self.plan = SagaStatus.COMPENSATED, reason, []
        self.attempts, self.next_attempt_at = 0, now

    def retry_later(self, now: datetime, pause: timedelta) -> None:
        """A transient failure: try the same step again after `pause` (the runner's backoff
        for `attempts + 1` failures in a row)."""
        self._require_running()
        self.attempts += 1
        self.next_attempt_at = now + pause

    def may_give_up(self, max_attempts: int) -> bool:
        """Whether a failing step has been tried enough to be undone instead."""
        return (self.status is SagaStatus.RUNNING and self.step in COMPENSATIONS
                and self.attempts + 1 >= max_attempts)

    def _require_running(self) -> None:
        if self.finished:
            raise SagaError(f"saga {self.id} is {self.status.value}")


# ---------------------------------------------------------------------------------------------
# Carts and returns


class CartStatus(StrEnum):
    OPEN = "open"  # items may be added, removed and touched
    CHECKED_OUT = "checked_out"  # it became an order (order_id); it changes no more


@dataclass(frozen=True)
class CartItem:
    """One hold of the cart: every added item is a reservation of its own."""

    reservation_id: str
    sku: str
    quantity: int
    expires_at: datetime


@dataclass(frozen=True)
class Cart:
    id: str
    channel: str
    customer_id: str | None
    status: CartStatus
    order_id: str | None
    items: list[CartItem]

    @property
    def is_open(self) -> bool:
        return self.status is CartStatus.OPEN

    @property
    def expires_at(self) -> datetime | None:
        return min((item.expires_at for item in self.items), default=None)


@dataclass(frozen=True)
class ReturnLine:
    """Units of an order coming back to a location: resold, or counted unsellable."""

    sku: str
    quantity: int
    location: str
    resellable: bool
