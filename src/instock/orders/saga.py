"""Runs the steps of checkout, cancellation and return sagas, persisted after every step (a
step a rerun finds done is stored with the next one: STORED_WITH_NEXT).

Each step is idempotent, so a saga resumed after a crash simply runs its current step again:
stock calls carry the saga's idempotency key or check the reservation's status first, payment
calls carry an idempotency key per step, order changes check the order's state. Whoever runs a
saga holds a lease on it; a process that dies loses the lease when it runs out and a worker
(`instock worker sagas`, or any API process running sagas) takes the saga over.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.inventory.errors import InsufficientStockConflict, InvalidTransition
from instock.inventory.model import Adjustment as StockAdjustment
from instock.inventory.model import AdjustmentKind, Line, ReservationStatus
from instock.inventory.port import Inventory
from instock.inventory.reservation_batch import ReserveRequest
from instock.orders import store
from instock.orders.events import CheckoutPaymentFailed
from instock.orders.model import FailureKind, Order, OrderStatus, Saga, SagaStatus, Step
from instock.payments.errors import CircuitOpen, PaymentDeclined, PaymentUnavailable
from instock.payments.model import CAPTURED_FAMILY, Payment, PaymentStatus
from instock.payments.service import AlsoWrite, PaymentsService
from instock.platform.bus import outbox
from instock.platform.db import Database, utcnow
from instock.platform.entry_context import EntryContext
from instock.platform.errors import Conflict, Forbidden, NotFound
from instock.platform.ids import new_id
from instock.platform.retry import backoff

log = structlog.get_logger(__name__)
_STEPS = Counter("instock_saga_steps_total", "Saga steps run, by step and outcome",
                 ["step", "outcome"])


class _StaleCopy(Exception):
    """The order a step knew was not the one stored (or the change refused it): read it."""


class StepFailed(Exception):
    """A step failed for good (declined, out of stock, hold expired): undo, don't retry."""

    def __init__(self, kind: FailureKind, reason: str, *, stop: bool = False) -> None:
        super().__init__(reason)
        self.kind = kind
        self.stop = stop  # nothing to undo either: the saga just ends


# Steps whose effect a rerun finds done (a commit finds its reservations committed, and goes
# on; a reservation made under the saga's key is found again): when one succeeds, its progress
# is stored with the next step's own first write (the capture's, with the provider's answer;
# the authorisation's, with its payment recorded before the provider is asked) instead of in a
# transaction of its own. A crash in between runs it again, which changes nothing.
STORED_WITH_NEXT = frozenset({Step.RESERVE, Step.COMMIT})


def pause_after(failures: int) -> timedelta:
    """How long a step that failed `failures` times in a row waits before its next try."""
    return timedelta(seconds=backoff(failures, base=0.4, cap=60.0))


@dataclass(frozen=True)
class SagaSettings:
    lease_seconds: float
    max_attempts: int  # tries of a failing forward step before it is undone
    # Fault injection for crash tests: SIGKILL this process right after storing this step.
    kill_after: str | None = None


def process_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"


class SagaRunner:
    def __init__(self, db: Database, inventory: Inventory, payments: PaymentsService,
                 settings: SagaSettings, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.inventory = inventory
        self.payments = payments
        self.settings = settings
        self.clock = clock
        self.owner = process_owner()
        # Sagas whose step just stored their progress with its own last write.
        self._stored: set[str] = set()
        # Events a step that failed leaves for the transaction that stores the failure.
        self._news: dict[str, list[CheckoutPaymentFailed]] = {}
        # A checkout's order as this process last committed it, by saga id, while the drive
        # that placed it runs (`drive_known`): its steps change that copy instead of reading
        # the order again, their writes conditional on its version as ever, so a change made
        # by anyone else meanwhile fails the write and the step reads the order then. None:
        # not known now (in use by a step, or written by one that has not committed yet).
        self._orders: dict[str, Order | None] = {}
        # The authorisation the `authorise` step just stored, for the capture that follows it
        # in the same drive: its status need not be read again, and its answer is written
        # conditionally on the payment being as it was (else merged into the row, locked).
        self._payments: dict[str, Payment] = {}
        self._adopted: dict[str, Order] = {}
        self._steps: dict[Step, Callable[[Saga], Awaitable[None]]] = {
            Step.RESERVE: self._reserve, Step.AUTHORISE: self._authorise,
            Step.COMMIT: self._commit, Step.CAPTURE: self._capture, Step.FULFIL: self._fulfil,
            Step.CANCEL: self._cancel, Step.RESTOCK: self._restock, Step.REFUND: self._refund,
            Step.VOID: self._void, Step.RELEASE: self._release, Step.ABANDON: self._abandon,
        }

    # -- leasing and driving ----------------------------------------------------------------------

    def _lease(self) -> datetime:
        return self.clock() + timedelta(seconds=self.settings.lease_seconds)

    async def insert(self, conn: AsyncConnection, saga: Saga, *, leased: bool = True) -> None:
        """Store a new saga in the caller's transaction, leased to this process to drive it
        now (or free for any worker to take)."""
        await store.insert_saga(conn, saga, self.clock(), self.owner if leased else None,
                                self._lease() if leased else None)

    async def drive(self, saga_id: str, leased: Saga | None = None) -> Saga:
        """Run the saga's due steps now, as long as they succeed or fail for good; a step that
        must wait (a provider that is down) is left for later. Returns where it stands.
        `leased` is a saga this process just inserted with its lease: no need to claim it."""
        # Each step commits before the next one calls out (a provider) or a crash can come:
        # a request's held write (held.py) must not wait for its response here.
        try:
            async with self.db.durable():
                return await self._drive(saga_id, leased)
        finally:
            self._payments.pop(saga_id, None)

    async def drive_known(self, saga: Saga, order: Order) -> tuple[Saga, Order | None]:
        """`drive` for a checkout saga this process just inserted with its lease and the order
        it just placed (committed, its events published): the steps start from that order
        instead of reading it, and the order as they left it (committed) is returned beside
        the saga, None when a step could not know it."""
        self._orders[saga.id] = _stored_copy(order)
        try:
            done = await self.drive(saga.id, leased=saga)
        finally:
            known = self._orders.pop(saga.id, None)
        return done, known

    async def _drive(self, saga_id: str, leased: Saga | None) -> Saga:
        saga = leased
        if saga is None:
            async with self.db.write() as conn:
                saga = await store.claim_saga(conn, saga_id, self.owner, self.clock(),
                                              self._lease())
        if saga is None:  # finished, or someone else is on it
            async with self.db.read() as conn:
                found = await store.get_saga(conn, saga_id)
            if found is None:
                raise NotFound(f"saga {saga_id} does not exist")
            return found
        while not saga.finished and saga.next_attempt_at <= self.clock():
            step = saga.step
            assert step is not None
            stored = await self._attempt(saga, step)
            news = self._news.pop(saga.id, [])
            moved_on = saga.status is SagaStatus.RUNNING and saga.step is not step
            if not stored and not (moved_on and step in STORED_WITH_NEXT):
                async with self.db.write() as conn:
                    await self._save(conn, saga)
                    await outbox.add(conn, news, _correlation(saga))
            if self.settings.kill_after == step.value:
                os.kill(os.getpid(), signal.SIGKILL)
        return saga

    async def _attempt(self, saga: Saga, step: Step) -> bool:
        """Run the step and move the saga on by its outcome; True when the step's own last
        write stored that already (`change_order(..., finishing=saga)`)."""
        now = self.clock()
        try:
            await self._steps[step](saga)
        except StepFailed as exc:
            _STEPS.labels(step.value, "failed").inc()
            saga.failure_kind = exc.kind
            if exc.stop:
                saga.stop(str(exc), now)
            else:
                saga.failed(str(exc), now)
        except CircuitOpen as exc:
            # Fail fast: the buyer learns now and the stock goes back now.
            _STEPS.labels(step.value, "circuit_open").inc()
            self._give_up_or_wait(saga, FailureKind.CIRCUIT_OPEN, str(exc), now, at_once=True)
        except PaymentUnavailable as exc:
            # The provider call was retried already. A buyer waiting at checkout gets an answer
            # and the stock back now; later steps (money is authorised) keep trying a while.
            _STEPS.labels(step.value, "unavailable").inc()
            self._give_up_or_wait(saga, FailureKind.PAYMENT_UNAVAILABLE, str(exc), now,
                                  at_once=step is Step.AUTHORISE)
        except Conflict as exc:
            _STEPS.labels(step.value, "retry").inc()
            self._give_up_or_wait(saga, FailureKind.CONFLICT, str(exc), now)
        except Exception as exc:  # an outage or a bug: keep the saga, try again later
            _STEPS.labels(step.value, "error").inc()
            log.exception("saga_step_error", saga=saga.id, step=step.value)
            saga.data["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
            saga.retry_later(now, pause_after(saga.attempts + 1))
        else:
            _STEPS.labels(step.value, "ok").inc()
            if saga.id in self._stored:
                self._stored.discard(saga.id)
                return True
            saga.succeeded(now)
        return False

    def _give_up_or_wait(self, saga: Saga, kind: FailureKind, reason: str, now: datetime,
                         at_once: bool = False) -> None:
        if saga.may_give_up(1 if at_once else self.settings.max_attempts):
            saga.failure_kind = kind
            saga.failed(reason, now)
        else:
            saga.data["last_error"] = reason[:300]
            saga.retry_later(now, pause_after(saga.attempts + 1))

    async def run_due(self, limit: int = 50) -> int:
        """Take over and drive every saga that is due and not leased (the worker's round)."""
        async with self.db.read() as conn:
            due = await store.due_saga_ids(conn, self.clock(), limit)
        for saga_id in due:
            await self.drive(saga_id)
        return len(due)

    # -- orders: the one place a saga changes an order --------------------------------------------

    async def change_order(self, order_id: str, change: Callable[[Order, datetime], None],
                           correlation_id: str | None, finishing: Saga | None = None) -> Order:
        """Read, change through the model, write back with its events, all or nothing.
        `finishing`: a saga whose current step this change completes: its progress is stored
        in the same transaction (a transaction less per step, and the two cannot part)."""
        advanced = None
        async with self.db.write() as conn:
            order = await self._change_in(conn, order_id, change, correlation_id, finishing)
            if finishing is not None:
                advanced = await self._store_done(conn, finishing)
        if finishing is not None:
            self._remember(finishing, order)  # committed
            if advanced is not None:  # committed: the step is done
                self._done(finishing, advanced)
        return order

    async def _change_in(self, conn: AsyncConnection, order_id: str,
                         change: Callable[[Order, datetime], None],
                         correlation_id: str | None, by: Saga | None = None) -> Order:
        """`change_order`'s read, change and write, in the caller's transaction. `by`: the
        saga whose step this is; the order it knows (`drive_known`) is changed without a
        read, and read after all if that fails (changed meanwhile: the write's version check;
        or the change refused it): the change then decides on the order as it is."""
        known = self._orders.get(by.id) if by is not None else None
        if by is not None and by.id in self._orders:
            self._orders[by.id] = None  # in use: the caller remembers it once committed
        if known is not None:
            try:
                return await self._change_from(conn, known, change, correlation_id, guess=True)
            except _StaleCopy:
                pass
        order = await store.get_order(conn, order_id)
        if order is None:
            raise NotFound(f"order {order_id} does not exist")
        return await self._change_from(conn, order, change, correlation_id)

    def _remember(self, saga: Saga, order: Order) -> None:
        """The order as `saga`'s step committed it, kept if its drive knows the order."""
        if saga.id in self._orders:
            self._orders[saga.id] = _stored_copy(order)

    async def _change_from(self, conn: AsyncConnection, order: Order,
                           change: Callable[[Order, datetime], None],
                           correlation_id: str | None, *, guess: bool = False) -> Order:
        """Change the order and write it back with its events. `guess`: the order is a copy
        that may be out of date; if the change refuses it, or its write finds another version
        stored (nothing written then), _StaleCopy says to read the order and change that."""
        before, held = order.version, list(order.reservation_ids)
        try:
            change(order, self.clock())
            await store.update_order(conn, order, before, self.clock())
        except Exception as exc:
            if guess:
                raise _StaleCopy from exc
            raise
        if order.reservation_ids != held:
            await store.link_reservations(conn, order.id, order.reservation_ids)
        await outbox.add(conn, order.events, correlation_id)
        order.events.clear()
        return order

    async def _store_done(self, conn: AsyncConnection, saga: Saga, **data: Any) -> Saga:
        """Store, in the caller's transaction, the saga with its current step done (and
        `data` added): a copy, which `_done` makes the saga's own once that has committed."""
        advanced = replace(saga, plan=list(saga.plan), data={**saga.data, **data})
        advanced.succeeded(self.clock())
        await self._save(conn, advanced)
        return advanced

    def _done(self, saga: Saga, advanced: Saga) -> None:
        vars(saga).update(vars(advanced))
        self._stored.add(saga.id)

    async def _save(self, conn: AsyncConnection, saga: Saga) -> None:
        """Store the saga's progress, keeping its lease while it has a step due now."""
        keep = not saga.finished and saga.next_attempt_at <= self.clock()
        await store.save_saga(conn, saga, self.owner, self.clock(),
                              self._lease() if keep else None)

    async def _order(self, saga: Saga) -> Order:
        async with self.db.read() as conn:
            found = await store.get_order(conn, saga.order_id)
        assert found is not None
        return found

    def _ctx(self, saga: Saga, reason: str, key: str | None = None) -> EntryContext:
        return EntryContext(f"saga:{saga.kind.value}", reason, _correlation(saga),
                            idempotency_key=key, reference=saga.order_id)

    # -- checkout ---------------------------------------------------------------------------------

    async def _terms(self, saga: Saga) -> Terms:
        """What the order asks for, as its checkout stored it with the saga (a read of the order
        for sagas stored before they did)."""
        terms = saga.data.get("terms")
        if isinstance(terms, dict):
            return Terms(str(terms["channel"]), _optional(terms.get("customer_id")),
                         Decimal(str(terms["total"])), str(terms["currency"]),
                         [Line(str(line["sku"]), int(line["quantity"]))
                          for line in _dicts(saga.data.get("lines"))])
        order = await self._order(saga)
        return Terms(order.channel, order.customer_id, order.total, order.currency,
                     [Line(line.sku, line.quantity) for line in order.lines])

    async def _reserve(self, saga: Saga) -> None:
        held = list(_strings(saga.data.get("reservation_ids")))
        hold = int(str(saga.data["hold_seconds"]))
        ctx = self._ctx(saga, "checkout", key=f"saga:{saga.id}")
        if held:  # a cart's holds: they must outlive the payment
            for reservation_id in held:
                try:
                    await self.inventory.extend(reservation_id, hold, ctx)
                except InvalidTransition as exc:
                    raise StepFailed(FailureKind.HOLD_EXPIRED, str(exc)) from exc
        else:
            terms = await self._terms(saga)
            try:
                reservation = await self.inventory.reserve(ReserveRequest(
                    terms.lines, terms.channel, terms.customer_id, hold,
                    _optional(saga.data.get("drop_pass"))), ctx)
            except InsufficientStockConflict as exc:
                raise StepFailed(FailureKind.INSUFFICIENT_STOCK, str(exc)) from exc
            except Forbidden as exc:  # e.g. drop-pass-required: the buyer may not, not yet
                saga.data["refusal"] = exc.problem()
                raise StepFailed(FailureKind.RESERVATION_REFUSED, str(exc)) from exc
            saga.data["reservation_ids"] = [reservation.id]
        # Stored with the authorisation's first write (STORED_WITH_NEXT): `_adopt_holds`.

    async def _adopt_holds(self, conn: AsyncConnection, saga: Saga) -> None:
        """In the transaction that records the payment, before the provider is asked: the
        order takes the holds the reservation step made, and the saga's progress (the holds
        in its data, the step it is at) is stored with them. A rerun does it again."""
        held = list(_strings(saga.data.get("reservation_ids")))

        def adopt(o: Order, now: datetime) -> None:
            o.reservation_ids = held

        adopted = await self._change_in(conn, saga.order_id, adopt, _correlation(saga), saga)
        await self._save(conn, saga)
        self._adopted[saga.id] = adopted  # remembered once the payments service committed

    def _done_with_payment(self, saga: Saga, reached: Collection[PaymentStatus]
                           ) -> tuple[AlsoWrite, Callable[[], None]]:
        """The saga's current step stored done (the payment's id in its data) in the
        transaction that stores the provider's answer, when the payment has `reached` one of
        these: the write to hand the payments service, and what to call once it returned."""
        advanced: list[Saga] = []

        async def store_done(conn: AsyncConnection, payment: Payment) -> None:
            if payment.status in reached:
                advanced.append(await self._store_done(conn, saga, payment_id=payment.id))

        def done() -> None:
            if advanced:  # stored with the provider's answer
                self._done(saga, advanced[0])

        return store_done, done

    async def _authorise(self, saga: Saga) -> None:
        terms = await self._terms(saga)
        store_done, done = self._done_with_payment(saga, {PaymentStatus.AUTHORISED})
        try:
            payment = await self.payments.authorise(
                order_id=saga.order_id, amount=terms.total, currency=terms.currency,
                idempotency_key=f"saga:{saga.id}:authorise", then=store_done,
                first=lambda conn: self._adopt_holds(conn, saga))
        except PaymentDeclined as exc:
            self._adopted.pop(saga.id, None)  # the order is read again where it is needed
            # Whose attempt failed, said with the saga's failure (`_drive`), so once per
            # checkout: a rerun after a crash before that is refused again (the payment stays
            # declined) and says it then. Also when a webhook stored the decline first.
            self._news[saga.id] = [CheckoutPaymentFailed(
                order_id=saga.order_id, customer_id=terms.customer_id, channel=terms.channel,
                payment_id=exc.payment_id, reason=exc.reason, amount=terms.total,
                currency=terms.currency)]
            raise StepFailed(FailureKind.PAYMENT_DECLINED, str(exc)) from exc
        except BaseException:
            self._adopted.pop(saga.id, None)
            raise
        adopted = self._adopted.pop(saga.id, None)
        if adopted is not None:  # the holds' adoption committed with the payment's record
            self._remember(saga, adopted)
        self._payments[saga.id] = payment
        saga.data["payment_id"] = payment.id
        done()

    async def _commit(self, saga: Saga) -> None:
        ctx = self._ctx(saga, "checkout")
        for reservation_id in _strings(saga.data.get("reservation_ids")):
            try:
                await self.inventory.commit(reservation_id, ctx)
            except InvalidTransition as exc:
                # Looked at only now, not before every commit (three reads a checkout).
                reservation = await self.inventory.get_reservation(reservation_id)
                if reservation.status is ReservationStatus.COMMITTED:
                    continue  # done before a crash
                raise StepFailed(FailureKind.HOLD_EXPIRED, str(exc)) from exc

    async def _capture(self, saga: Saga) -> None:
        store_done, done = self._done_with_payment(saga, CAPTURED_FAMILY)
        try:
            await self.payments.capture(str(saga.data["payment_id"]),
                                        idempotency_key=f"saga:{saga.id}:capture",
                                        then=store_done, known=self._payments.pop(saga.id, None))
        except PaymentDeclined as exc:
            raise StepFailed(FailureKind.PAYMENT_DECLINED, str(exc)) from exc
        done()

    async def _fulfil(self, saga: Saga) -> None:
        payment_id = str(saga.data["payment_id"])

        def pay(o: Order, now: datetime) -> None:
            if o.status is OrderStatus.PENDING_PAYMENT:
                o.pay(payment_id, o.total, now)
                o.request_fulfilment()

        await self.change_order(saga.order_id, pay, _correlation(saga), finishing=saga)

    # -- compensations ----------------------------------------------------------------------------

    async def _release(self, saga: Saga) -> None:
        """Give back whatever the order still holds: active holds are released, committed
        units return to sale; expired or released ones are already back."""
        order = await self._order(saga)
        ids = list(_strings(saga.data.get("reservation_ids"))) or order.reservation_ids
        ctx = self._ctx(saga, saga.failure or str(saga.data.get("reason", "")))
        for reservation_id in ids:
            reservation = await self.inventory.get_reservation(reservation_id)
            if reservation.status is ReservationStatus.ACTIVE:
                # Expired meanwhile: the sweeper gives it back.
                with contextlib.suppress(InvalidTransition):
                    await self.inventory.release(reservation_id, ctx)
            elif reservation.status is ReservationStatus.COMMITTED:
                await self.inventory.cancel(reservation_id, ctx)

    async def _abandon(self, saga: Saga) -> None:
        reason = f"{saga.failure_kind or 'failed'}: {saga.failure or ''}"[:300]

        def cancel(o: Order, now: datetime) -> None:
            if o.status is OrderStatus.PENDING_PAYMENT:
                o.cancel(reason, now)

        await self.change_order(saga.order_id, cancel, _correlation(saga), finishing=saga)

    async def _void(self, saga: Saga) -> None:
        """Let go of every authorisation of the order, also one whose outcome we never heard
        (the payments context settles it with the provider first); refund a captured one."""
        key = f"saga:{saga.id}:void"
        for payment in await self.payments.for_order(saga.order_id):
            if payment.status in (PaymentStatus.AUTHORISED, PaymentStatus.PENDING):
                await self.payments.void(payment.id, idempotency_key=key)
            elif payment.refundable > 0:
                await self.payments.refund(payment.id, None, idempotency_key=key)

    # -- cancellation and return ------------------------------------------------------------------

    async def _cancel(self, saga: Saga) -> None:
        reason = str(saga.data.get("reason") or "cancelled")

        def cancel(o: Order, now: datetime) -> None:
            if o.status is OrderStatus.PAID:
                o.cancel(reason, now)
            elif o.status is not OrderStatus.CANCELLED:  # fulfilled meanwhile: too late
                raise StepFailed(FailureKind.ORDER_MOVED_ON,
                                 f"order {o.id} is {o.status.value}; too late to cancel",
                                 stop=True)

        await self.change_order(saga.order_id, cancel, _correlation(saga), finishing=saga)

    async def _restock(self, saga: Saga) -> None:
        lines = saga.data.get("lines")
        assert isinstance(lines, list)
        for i, line in enumerate(lines):
            kind = AdjustmentKind.RETURN if line["resellable"] else AdjustmentKind.RETURN_UNSELLABLE
            ctx = EntryContext(f"saga:{saga.kind.value}", str(saga.data.get("reason", "")),
                               _correlation(saga), reference=f"{saga.id}:{i}")
            await self.inventory.adjust(StockAdjustment(line["sku"], line["location"], kind,
                                                        int(line["quantity"])), ctx)
        reason = str(saga.data.get("reason") or "returned")

        def returned(o: Order, now: datetime) -> None:
            if o.status is not OrderStatus.RETURNED:
                o.return_goods(reason, now)

        await self.change_order(saga.order_id, returned, _correlation(saga), finishing=saga)

    async def _refund(self, saga: Saga) -> None:
        order = await self._order(saga)
        if saga.id in order.refund_refs:
            return
        amount = Decimal(str(saga.data["amount"])) if "amount" in saga.data else order.refund_due
        if amount <= 0:
            return
        if order.external_id is None and order.payment_id is not None:
            await self.payments.refund(order.payment_id, amount,
                                       idempotency_key=f"saga:{saga.id}:refund")
        # A marketplace order was paid to the marketplace, which refunds its buyer itself.

        await self.change_order(saga.order_id,
                                lambda o, now: o.refund(amount, now, reference=saga.id),
                                _correlation(saga), finishing=saga)


@dataclass(frozen=True)
class Terms:
    channel: str
    customer_id: str | None
    total: Decimal
    currency: str
    lines: list[Line]


def _stored_copy(order: Order) -> Order:
    """The order as a read of its row would give it: its own lists, amounts as the database
    gives them back (normalised), no events (those were written with it)."""
    return replace(order, lines=list(order.lines), reservation_ids=list(order.reservation_ids),
                   paid=order.paid.normalize(), refunded=order.refunded.normalize(),
                   fulfilled=dict(order.fulfilled), history=list(order.history),
                   refund_refs=list(order.refund_refs), events=[])


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _correlation(saga: Saga) -> str | None:
    value = saga.data.get("correlation_id")
    return None if value is None else str(value)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
