"""PaymentsService against the sandbox running as its own process, through both providers (plain
httpx, and the official Stripe SDK pointed at the sandbox): the payment life cycle, declines,
an idempotent retry after an ambiguous timeout charging once, and the circuit breaker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.payments.errors import (
    CircuitOpen,
    PaymentDeclined,
    PaymentStateConflict,
    PaymentUnavailable,
)
from instock.payments.model import Payment, PaymentStatus
from instock.payments.providers import Resilient, make_provider
from instock.payments.service import PaymentsService
from instock.platform.db import Database
from instock.platform.errors import IdempotencyKeyReused, ValidationFailed
from instock.platform.ids import new_id
from tests.payment_sandbox import Sandbox, payment_sandbox
from tests.support import make_settings

S = PaymentStatus
COOLDOWN = 0.3


@dataclass
class Rig:
    service: PaymentsService
    provider: Resilient
    sandbox: Sandbox
    db: Database


@pytest.fixture(scope="module")
def running_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with payment_sandbox(tmp_path_factory.mktemp("sandbox")) as running:
        yield running


@pytest.fixture
async def sandbox(running_sandbox: Sandbox) -> Sandbox:
    await running_sandbox.reset()
    return running_sandbox


async def rig(database_url: str, tmp_path: Path, sandbox: Sandbox, provider: str,
              **overrides: Any) -> Rig:
    settings = make_settings(database_url, tmp_path, **{
        "payment_provider": provider, "payments_url": sandbox.url,
        "payments_timeout_seconds": 0.5, "payments_retry_attempts": 3,
        "payments_retry_backoff_seconds": 0.01, "payments_retry_max_backoff_seconds": 0.05,
        "payments_breaker_threshold": 3, "payments_breaker_cooldown_seconds": COOLDOWN,
        **overrides})
    db = Database(database_url)
    resilient = make_provider(settings)
    return Rig(PaymentsService(db, resilient), resilient, sandbox, db)


@pytest.fixture(params=["sandbox", "stripe"])
async def payments(request: pytest.FixtureRequest, database_url: str, tmp_path: Path,
                   sandbox: Sandbox) -> AsyncIterator[Rig]:
    r = await rig(database_url, tmp_path, sandbox, request.param)
    yield r
    await r.provider.close()
    await r.db.dispose()


async def authorise(p: Rig, amount: str = "49.90", key: str | None = None,
                    order_id: str = "order-1") -> Any:
    return await p.service.authorise(order_id=order_id, amount=Decimal(amount), currency="EUR",
                                     idempotency_key=key or new_id())


async def test_authorise_capture_and_refund_in_parts(payments: Rig) -> None:
    payment = await authorise(payments)
    assert payment.status is S.AUTHORISED and payment.provider_ref.startswith("pi_")
    assert payment.provider == payments.provider.name
    held = await payments.sandbox.payment(payment.provider_ref)
    assert (held["status"], held["amount_capturable"], held["currency"]) == (
        "requires_capture", 4990, "eur")
    assert held["metadata"] == {"payment_id": payment.id, "order_id": "order-1"}

    captured = await payments.service.capture(payment.id, idempotency_key=new_id())
    assert (captured.status, captured.amount_captured) == (S.CAPTURED, Decimal("49.90"))
    part = await payments.service.refund(payment.id, Decimal("10"), idempotency_key=new_id())
    assert (part.status, part.amount_refunded) == (S.PARTIALLY_REFUNDED, Decimal("10"))
    rest = await payments.service.refund(payment.id, None, idempotency_key=new_id())
    assert (rest.status, rest.amount_refunded) == (S.REFUNDED, Decimal("49.90"))

    assert await payments.service.get(payment.id) == rest
    assert [p.id for p in await payments.service.for_order("order-1")] == [payment.id]
    charge = (await payments.sandbox.payment(payment.provider_ref))["charge"]
    assert (charge["amount_captured"], charge["amount_refunded"]) == (4990, 4990)


async def test_void_releases_the_hold_and_a_voided_payment_cannot_be_captured(
        payments: Rig) -> None:
    payment = await authorise(payments)
    voided = await payments.service.void(payment.id, idempotency_key=new_id())
    assert voided.status is S.VOIDED
    assert (await payments.sandbox.payment(payment.provider_ref))["status"] == "canceled"
    assert (await payments.service.void(payment.id, idempotency_key=new_id())) == voided
    with pytest.raises(PaymentStateConflict):
        await payments.service.capture(payment.id, idempotency_key=new_id())


async def test_commands_repeated_with_their_key_act_once(payments: Rig) -> None:
    payment = await authorise(payments)
    run = payments.sandbox.run  # keys unique to this test: the sandbox keeps keys, as Stripe
    await payments.service.capture(payment.id, idempotency_key=f"cap-{run}")
    assert (await payments.service.capture(payment.id, idempotency_key=f"cap-{run}")).status \
        is S.CAPTURED
    once = await payments.service.refund(payment.id, Decimal("5"), idempotency_key=f"ref-{run}")
    again = await payments.service.refund(payment.id, Decimal("5"), idempotency_key=f"ref-{run}")
    assert once.amount_refunded == again.amount_refunded == Decimal("5")
    stats = await payments.sandbox.stats()
    assert (stats["captures"], stats["refunds"]) == (1, 1)


async def test_a_decline_is_recorded_and_a_retry_is_declined_without_a_second_try(
        payments: Rig) -> None:
    await payments.sandbox.configure(decline_next=1, decline_code="insufficient_funds")
    with pytest.raises(PaymentDeclined) as info:
        await authorise(payments, key=f"declined-once-{payments.sandbox.run}")
    assert info.value.reason == "insufficient_funds" and info.value.status == 402
    declined = await payments.service.get(str(info.value.payment_id))
    assert (declined.status, declined.decline_reason) == (S.DECLINED, "insufficient_funds")
    assert declined.provider_ref is not None
    with pytest.raises(PaymentDeclined):
        await authorise(payments, key=f"declined-once-{payments.sandbox.run}")
    stats = await payments.sandbox.stats()
    assert (stats["declines"], stats["intents_created"]) == (1, 1)
    # Declines are answers, not failures: the breaker stays closed.
    assert payments.provider.breaker.state == "closed"
    # A declined payment holds nothing; voiding it (a saga's compensation) is a no-op.
    assert (await payments.service.void(declined.id, idempotency_key=new_id())).status \
        is S.DECLINED


async def test_a_decline_by_amount_and_bad_input_name_the_field(payments: Rig) -> None:
    await payments.sandbox.configure(decline_amounts=[666])
    with pytest.raises(PaymentDeclined):
        await authorise(payments, amount="6.66")
    with pytest.raises(ValidationFailed) as info:
        await authorise(payments, amount="1.001")
    assert info.value.extensions["errors"][0]["field"] == "amount"
    with pytest.raises(ValidationFailed):
        await payments.service.authorise(order_id="o", amount=Decimal("1"), currency="euro",
                                         idempotency_key=new_id())


async def test_a_key_reused_for_another_amount_is_refused(payments: Rig) -> None:
    await authorise(payments, "10", key=f"k-{payments.sandbox.run}")
    with pytest.raises(IdempotencyKeyReused):
        await authorise(payments, "11", key=f"k-{payments.sandbox.run}")


async def test_a_timeout_retried_with_the_same_key_charges_once(payments: Rig) -> None:
    # The sandbox does the work, then answers after the client gave up: the client cannot
    # know the payment was made. Resilient retries with the same key and gets the replay.
    await payments.sandbox.configure(timeout_next=1, hang="after", hang_seconds=3)
    payment = await authorise(payments, key=f"ambiguous-{payments.sandbox.run}")
    assert payment.status is S.AUTHORISED
    stats = await payments.sandbox.stats()
    assert (stats["intents_created"], stats["authorisations"]) == (1, 1)
    assert stats["injected_timeouts"] == 1 and stats["idempotent_replays"] == 1


async def test_the_caller_retrying_after_an_unknown_outcome_gets_the_same_payment(
        database_url: str, tmp_path: Path, sandbox: Sandbox) -> None:
    for provider in ("sandbox", "stripe"):
        p = await rig(database_url, tmp_path, sandbox, provider, payments_retry_attempts=1)
        try:
            key, order = f"crash-{provider}-{sandbox.run}", f"order-{provider}"
            await sandbox.configure(timeout_next=1, hang="after", hang_seconds=3)
            with pytest.raises(PaymentUnavailable):
                await authorise(p, key=key, order_id=order)
            pending = (await p.service.for_order(order))[0]
            assert pending.status is S.PENDING  # recorded before the call; outcome unknown
            # The saga resumes (after a crash, or later) with the same key.
            payment = await authorise(p, key=key, order_id=order)
            assert payment.id == pending.id and payment.status is S.AUTHORISED
        finally:
            await p.provider.close()
            await p.db.dispose()
    stats = await sandbox.stats()
    assert stats["intents_created"] == stats["authorisations"] == 2  # one per provider


async def test_a_pending_payment_is_settled_before_it_is_voided(payments: Rig) -> None:
    await payments.sandbox.configure(timeout_all=True, hang="before", hang_seconds=3)
    with pytest.raises(PaymentUnavailable):
        await authorise(payments, order_id="order-void")
    await payments.sandbox.configure(timeout_all=False)
    await asyncio.sleep(COOLDOWN * 1.5)  # three timeouts opened the breaker
    pending = (await payments.service.for_order("order-void"))[0]
    voided = await payments.service.void(pending.id, idempotency_key=new_id())
    assert voided.status is S.VOIDED and voided.provider_ref is not None


# The fail-fast part must fit in one cooldown: five refused calls each write to the database,
# and with the 0.3 s the other tests use a loaded machine let the breaker half-open midway.
BREAKER_COOLDOWN = 1.5


@pytest.mark.parametrize("provider", ["sandbox", "stripe"])
async def test_the_breaker_opens_fails_fast_and_closes_when_the_provider_recovers(
        provider: str, database_url: str, tmp_path: Path, sandbox: Sandbox) -> None:
    payments = await rig(database_url, tmp_path, sandbox, provider,
                         payments_breaker_cooldown_seconds=BREAKER_COOLDOWN)
    try:
        await payments.sandbox.configure(fail_all=True, fail_status=503)
        # Threshold 3, three attempts per call: one call's retries open it.
        with pytest.raises(PaymentUnavailable) as first:
            await authorise(payments, order_id="order-breaker")
        assert not isinstance(first.value, CircuitOpen)
        assert payments.provider.breaker.state == "open"
        before = (await payments.sandbox.stats())["requests"]
        for _ in range(5):
            with pytest.raises(CircuitOpen) as info:
                await authorise(payments, order_id="order-breaker")
            assert info.value.status == 503 and info.value.slug == "payment-circuit-open"
        assert (await payments.sandbox.stats())["requests"] == before  # no call was made

        await payments.sandbox.configure(fail_all=False)
        await asyncio.sleep(BREAKER_COOLDOWN * 1.5)
        payment = await authorise(payments, order_id="order-breaker")  # the trial call
        assert payment.status is S.AUTHORISED
        assert payments.provider.breaker.state == "closed"
    finally:
        await payments.provider.close()
        await payments.db.dispose()


async def test_declines_and_5xx_are_not_retried_alike(payments: Rig) -> None:
    await payments.sandbox.configure(fail_next=2, fail_status=500)
    payment = await authorise(payments)  # two 500s, then the third attempt succeeds
    assert payment.status is S.AUTHORISED
    stats = await payments.sandbox.stats()
    assert (stats["injected_errors"], stats["intents_created"]) == (2, 1)
    await payments.sandbox.configure(decline_next=1)
    before = (await payments.sandbox.stats())["requests"]
    with pytest.raises(PaymentDeclined):
        await authorise(payments)
    assert (await payments.sandbox.stats())["requests"] == before + 1  # one try only


async def test_refunding_more_than_was_captured_is_refused(payments: Rig) -> None:
    payment = await authorise(payments, "20")
    with pytest.raises(PaymentStateConflict):
        await payments.service.refund(payment.id, Decimal("5"), idempotency_key=new_id())
    await payments.service.capture(payment.id, idempotency_key=new_id())
    with pytest.raises(ValidationFailed):
        await payments.service.refund(payment.id, Decimal("25"), idempotency_key=new_id())
    await payments.service.refund(payment.id, Decimal("15"), idempotency_key=new_id())
    with pytest.raises(PaymentStateConflict):  # the provider refuses: only 5 are left
        await payments.service.refund(payment.id, Decimal("10"), idempotency_key=new_id())


async def test_a_callers_write_commits_with_the_providers_answer_or_not_at_all(
        payments: Rig) -> None:
    """`then` (a checkout's saga storing its step done) runs in the transaction that stores the
    provider's answer: when it fails, the answer is not stored either, and a retry with the key
    stores both."""
    async with payments.db.write() as conn:
        await conn.execute(sa.text("CREATE TABLE test_then (payment_id VARCHAR(40), "
                                   "status VARCHAR(20))"))

    async def record(conn: AsyncConnection, payment: Payment) -> None:
        await conn.execute(sa.text("INSERT INTO test_then VALUES (:p, :s)"),
                           {"p": payment.id, "s": payment.status.value})

    async def broken(conn: AsyncConnection, payment: Payment) -> None:
        await record(conn, payment)
        raise RuntimeError("the caller's write failed")

    key = new_id()
    with pytest.raises(RuntimeError):
        await payments.service.authorise(order_id="order-1", amount=Decimal("5"), currency="EUR",
                                         idempotency_key=key, then=broken)
    (pending,) = await payments.service.for_order("order-1")
    assert pending.status is S.PENDING

    async def rows() -> list[tuple[str, str]]:
        async with payments.db.read() as conn:
            found = await conn.execute(sa.text("SELECT payment_id, status FROM test_then"))
            return [(r[0], r[1]) for r in found]

    assert await rows() == []
    again = await payments.service.authorise(order_id="order-1", amount=Decimal("5"),
                                             currency="EUR", idempotency_key=key, then=record)
    assert (again.id, again.status) == (pending.id, S.AUTHORISED)
    assert await rows() == [(again.id, "authorised")]
    captured = await payments.service.capture(again.id, idempotency_key=new_id(), then=record)
    assert captured.status is S.CAPTURED
    assert await rows() == [(again.id, "authorised"), (again.id, "captured")]


async def test_a_callers_first_write_commits_with_the_pending_payment_or_not_at_all(
        payments: Rig) -> None:
    """`first` (a checkout's saga adopting its holds) runs in the transaction that records the
    payment before the provider is asked: when it fails, nothing is recorded and the provider
    is not asked; a retry with the key records both, and runs it again on a later retry."""
    async with payments.db.write() as conn:
        await conn.execute(sa.text("CREATE TABLE test_first (n INTEGER)"))

    async def record(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("INSERT INTO test_first VALUES (1)"))

    async def broken(conn: AsyncConnection) -> None:
        await record(conn)
        raise RuntimeError("the caller's write failed")

    async def rows() -> int:
        async with payments.db.read() as conn:
            return int(await conn.scalar(sa.text("SELECT count(*) FROM test_first")) or 0)

    key = new_id()
    before = (await payments.sandbox.stats()).get("requests", 0)
    with pytest.raises(RuntimeError):
        await payments.service.authorise(order_id="order-f", amount=Decimal("5"), currency="EUR",
                                         idempotency_key=key, first=broken)
    assert await payments.service.for_order("order-f") == [] and await rows() == 0
    assert (await payments.sandbox.stats()).get("requests", 0) == before  # never asked

    payment = await payments.service.authorise(order_id="order-f", amount=Decimal("5"),
                                               currency="EUR", idempotency_key=key, first=record)
    assert payment.status is S.AUTHORISED and await rows() == 1
    again = await payments.service.authorise(order_id="order-f", amount=Decimal("5"),
                                             currency="EUR", idempotency_key=key, first=record)
    assert again.id == payment.id and await rows() == 2
