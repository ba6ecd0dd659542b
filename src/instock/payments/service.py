"""Payment use cases (authorise, capture, void, refund) for the checkout saga, taking the
provider's webhooks, and the consumer that applies them to the payments.

No database transaction is open while the provider is called: each command reads or records
the payment in a short transaction, calls the provider (through `providers.Resilient`), then
merges the answer in another short transaction with `model.observe`, the same forward-only
merge the webhooks go through, so an answer and a webhook about one payment may land in either
order.

An authorisation is recorded `pending` under its idempotency key before the provider is asked.
A retry with the same key (after a crash, or an ambiguous timeout) finds that payment and asks
the provider again with the same key and the same parameters: the provider answers with the
payment it already made instead of charging twice.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.payments import model, store, wire
from instock.payments.errors import PaymentDeclined, PaymentStateConflict
from instock.payments.events import PaymentProviderEvent
from instock.payments.model import Observation, Payment, PaymentStatus
from instock.payments.providers import PaymentProvider
from instock.platform import inbound
from instock.platform.bus import Envelope
from instock.platform.bus.consumer import ConsumerSpec
from instock.platform.db import Database, utcnow
from instock.platform.errors import IdempotencyKeyReused, NotFound, ValidationFailed
from instock.platform.ids import new_id
from instock.platform.receipts import Receipt

S = PaymentStatus
log = structlog.get_logger(__name__)
CURRENCY = re.compile(r"^[A-Z]{3}$")


# A caller's own write, made with the payment's state in the one transaction that stores a
# provider's answer: a checkout's saga stores that its step is done there, so the two cannot
# part and the step costs no transaction of its own. Called with the payment as stored (it
# decides from its status); not called when the provider was not asked (nothing new to store).
AlsoWrite = Callable[[AsyncConnection, Payment], Awaitable[None]]
# A caller's own write, made in the transaction that records an authorisation `pending`, before
# the provider is asked (also when a rerun finds it recorded): the checkout's saga stores the
# order's holds and its progress there, a transaction less per checkout.
FirstWrite = Callable[[AsyncConnection], Awaitable[None]]


class PaymentsService:
    def __init__(self, db: Database, provider: PaymentProvider, *,
                 webhook_tolerance_seconds: float = 300) -> None:
        self.db = db
        self.provider = provider
        # How old a webhook's signature may be before it counts as a replay.
        self.webhook_tolerance = webhook_tolerance_seconds

    async def authorise(self, *, order_id: str, amount: Decimal, currency: str,
                        idempotency_key: str, then: AlsoWrite | None = None,
                        first: FirstWrite | None = None) -> Payment:
        """Hold `amount` for the order; returns the payment, `authorised`. Raises
        PaymentDeclined (402), PaymentUnavailable (503; the outcome may be unknown: retry with
        the same key), CircuitOpen (503, no call made). `then`: the caller's own write, made in
        the transaction that stores the provider's answer (see `AlsoWrite`); `first`: one made
        in the transaction that records the payment before the provider is asked."""
        currency = currency.upper()
        minor = _minor(amount, currency)
        _check_key(idempotency_key)
        payment = await self._record(model.pending(new_id(), order_id, self.provider.name, amount,
                                                   currency, idempotency_key, utcnow()), first)
        if (payment.order_id, payment.amount, payment.currency) != (order_id, amount, currency):
            raise IdempotencyKeyReused(
                f"idempotency key {idempotency_key!r} was used for {payment.amount} "
                f"{payment.currency} on order {payment.order_id}")
        if payment.status is S.PENDING:
            payment = await self._ask_provider(payment, minor, then)
        if payment.status in (S.DECLINED, S.FAILED):
            raise PaymentDeclined(payment.decline_reason or payment.status.value, payment.id)
        return payment

    async def capture(self, payment_id: str, *, idempotency_key: str,
                      then: AlsoWrite | None = None, known: Payment | None = None) -> Payment:
        """Take the held money; `captured`. Capturing a captured payment returns it.
        `then`: as for `authorise`. `known`: the payment as the caller just had it from this
        service (the authorisation it returned): not read again, and the answer is written
        conditionally on the payment still being so (else merged into it as stored)."""
        payment = known if known is not None and known.id == payment_id else None
        if payment is None:
            payment = await self.get(payment_id)
        if payment.status in model.CAPTURED_FAMILY:
            return payment
        _require(payment, model.CAPTURABLE, "captured")
        assert payment.provider_ref is not None  # an authorisation always names it
        return await self._apply(payment.id, await self.provider.capture(
            payment.provider_ref, idempotency_key=idempotency_key), then,
            known=payment if payment is known else None)

    async def void(self, payment_id: str, *, idempotency_key: str) -> Payment:
        """Release the held money; `voided`. Voiding a voided, declined or failed payment
        returns it (nothing is held); a pending one is first settled with the provider."""
        payment = await self.get(payment_id)
        if payment.status is S.PENDING:  # its authorisation's outcome is unknown: learn it
            payment = await self._ask_provider(payment, _minor(payment.amount, payment.currency))
        if payment.status in (S.VOIDED, S.DECLINED, S.FAILED):
            return payment
        _require(payment, model.VOIDABLE, "voided (refund a captured payment instead)")
        assert payment.provider_ref is not None
        return await self._apply(payment.id, await self.provider.void(
            payment.provider_ref, idempotency_key=idempotency_key))

    async def refund(self, payment_id: str, amount: Decimal | None, *,
                     idempotency_key: str) -> Payment:
        """Give back `amount` of the captured money (None: all that is left);
        `partially_refunded` or `refunded`. A retry with the same key refunds once."""
        payment = await self.get(payment_id)
        if payment.status is S.REFUNDED:
            return payment
        _require(payment, model.REFUNDABLE, "refunded")
        assert payment.provider_ref is not None
        minor = None
        if amount is not None:
            minor = _minor(amount, payment.currency)
            if amount > payment.amount_captured:
                raise ValidationFailed("amount", f"more than the {payment.amount_captured} "
                                                 f"{payment.currency} captured")
        # Not checked against what is left here: a retry of a refund that went through finds
        # less left, and the provider recognises the key; it refuses a real over-refund.
        return await self._apply(payment.id, await self.provider.refund(
            payment.provider_ref, minor, idempotency_key=idempotency_key))

    async def receive_webhook(self, provider: str, body: bytes, signature: str | None,
                              correlation_id: str | None = None) -> Receipt:
        """Take one of the provider's webhook deliveries: verify its signature (its only
        credential) and age, read it, and record it once; the `payment-events` consumer
        applies it. An event that says nothing about a payment is acknowledged and dropped.
        Raises NotFound (no such provider here), WebhookSignatureInvalid, ValidationFailed."""
        if provider != self.provider.name:
            raise NotFound(f"no payment provider {provider!r} is configured here")
        event = self.provider.read_webhook(body, signature, self.webhook_tolerance)
        try:
            read = wire.read_event(event)
        except (KeyError, TypeError, ValueError) as exc:  # signed by the provider, yet malformed
            raise ValidationFailed("body", f"not a payment event the provider sends: {exc!r}") \
                from None
        if read is None:
            return Receipt(ignored=True)
        news = read.news
        fresh = await inbound.receive(
            self.db, f"payments:{provider}", read.id, PaymentProviderEvent(
                provider=provider, event_id=read.id, event_type=read.type,
                created=datetime.fromtimestamp(read.created, UTC), payment_id=read.payment_id,
                provider_ref=read.provider_ref, status=news.status,
                amount_captured=news.amount_captured, amount_refunded=news.amount_refunded,
                decline_reason=news.decline_reason),
            correlation_id)
        return Receipt(duplicate=not fresh)

    async def get(self, payment_id: str) -> Payment:
        async with self.db.read() as conn:
            payment = await store.get(conn, payment_id)
        if payment is None:
            raise NotFound(f"payment {payment_id} does not exist")
        return payment

    async def for_order(self, order_id: str) -> list[Payment]:
        async with self.db.read() as conn:
            return await store.of_order(conn, order_id)

    async def _record(self, payment: Payment, first: FirstWrite | None = None) -> Payment:
        """The payment of this key: the new one, or the one a first attempt recorded."""
        async with self.db.write() as conn:
            if first is not None:
                await first(conn)
            if await store.add(conn, payment):
                return payment
            existing = await store.by_key(conn, payment.idempotency_key)
        assert existing is not None
        return existing

    async def _ask_provider(self, payment: Payment, minor: int,
                            then: AlsoWrite | None = None) -> Payment:
        try:
            news = await self.provider.authorise(
                payment_id=payment.id, order_id=payment.order_id, amount_minor=minor,
                currency=payment.currency, idempotency_key=payment.idempotency_key)
        except PaymentDeclined as declined:
            news = Observation(S.DECLINED, declined.provider_ref, decline_reason=declined.reason)
        return await self._apply(payment.id, news, then, known=payment)

    async def _apply(self, payment_id: str, news: Observation,
                     then: AlsoWrite | None = None, known: Payment | None = None) -> Payment:
        """Merge the provider's answer into the payment (forward only) in one transaction,
        with `then`. `known`: the payment as this process last stored or read it: the merge
        is made from it and written only if the row is still exactly that (one statement);
        otherwise (a webhook merged first, or nothing new to write) from the row, locked."""
        async with self.db.write() as conn:
            after = None
            if known is not None:
                guess = model.observe(known, news, utcnow())
                if guess is not known and await store.update_from(conn, known, guess):
                    after = guess
            if after is None:
                payment = await store.get(conn, payment_id, lock=True)
                assert payment is not None  # payments are never deleted
                after = await _merge(conn, payment, news)
            if then is not None:
                await then(conn, after)
            return after


async def _merge(conn: AsyncConnection, payment: Payment, news: Observation) -> Payment:
    after = model.observe(payment, news, utcnow())
    if after is not payment:
        await store.update(conn, after)
    return after


def _minor(amount: Decimal, currency: str) -> int:
    if not CURRENCY.match(currency):
        raise ValidationFailed("currency", "an ISO 4217 code, three letters")
    try:
        return model.to_minor(amount, currency)
    except model.AmountError as exc:
        raise ValidationFailed("amount", str(exc)) from None


def _check_key(key: str) -> None:
    if not key or len(key) > 255:
        raise ValidationFailed("idempotency_key", "1 to 255 characters")


def _require(payment: Payment, allowed: frozenset[PaymentStatus], wanted: str) -> None:
    if payment.status not in allowed:
        raise PaymentStateConflict(f"payment {payment.id} is {payment.status.value}; it cannot "
                                   f"be {wanted}", payment_id=payment.id,
                                   payment_status=payment.status.value)


async def on_provider_event(conn: AsyncConnection, envelope: Envelope) -> None:
    """Merge a provider's webhook news into its payment, in the consumer's transaction (with
    its inbox row: each event once). Order-safe: `model.observe` only moves forward."""
    data = envelope["data"]
    payment = None
    if data.get("payment_id"):
        payment = await store.get(conn, data["payment_id"], lock=True)
    if payment is None:
        payment = await store.by_provider_ref(conn, data["provider"], data["provider_ref"],
                                              lock=True)
    if payment is None:  # made outside instock (the provider's dashboard): not ours to track
        log.info("payment_event_unmatched", provider=data["provider"],
                 provider_ref=data["provider_ref"], event_type=data["event_type"])
        return
    news = Observation(PaymentStatus(data["status"]), data["provider_ref"],
                       _decimal(data.get("amount_captured")), _decimal(data.get("amount_refunded")),
                       data.get("decline_reason"))
    await _merge(conn, payment, news)


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


PAYMENT_EVENTS = ConsumerSpec("payment-events", frozenset({PaymentProviderEvent.type}),
                              on_provider_event)
