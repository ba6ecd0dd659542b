"""The payment model: news merges order-safely (any delivery order, duplicates included, ends in
the same state), statuses only move forward, money converts to minor units exactly."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.payments.model import (
    RANK,
    AmountError,
    Observation,
    Payment,
    PaymentStatus,
    from_minor,
    observe,
    pending,
    to_minor,
)

S = PaymentStatus
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fresh() -> Payment:
    return pending("pay-1", "order-1", "sandbox", Decimal("100"), "EUR", "key-1", T0)


def fold(events: list[Observation]) -> Payment:
    payment = fresh()
    for i, news in enumerate(events):
        payment = observe(payment, news, T0 + timedelta(seconds=i + 1))
    return payment


def settled(payment: Payment) -> Payment:
    return replace(payment, updated_at=T0)  # when it changed is not part of what it is


amounts = st.integers(min_value=0, max_value=10_000).map(lambda c: Decimal(c) / 100)
observations = st.builds(
    Observation, status=st.sampled_from(list(S)),
    provider_ref=st.sampled_from([None, "pi_1"]),
    amount_captured=st.none() | amounts, amount_refunded=st.none() | amounts,
    decline_reason=st.sampled_from([None, "insufficient_funds", "generic_decline"]))


@st.composite
def lifecycle(draw: st.DrawFn) -> tuple[list[Observation], PaymentStatus]:
    """The news one real payment produces (answers and webhooks), and where it ends."""
    auth = Observation(S.AUTHORISED, "pi_1")
    path = draw(st.sampled_from(["declined", "failed", "voided", "captured"]))
    if path == "declined":
        return [Observation(S.DECLINED, "pi_1", decline_reason="card_declined")], S.DECLINED
    if path == "failed":
        return [Observation(S.FAILED, "pi_1")], S.FAILED
    if path == "voided":
        return [auth, Observation(S.VOIDED, "pi_1")], S.VOIDED
    captured = Decimal(draw(st.integers(min_value=1, max_value=10_000))) / 100
    news = [auth, Observation(S.CAPTURED, "pi_1", amount_captured=captured)]
    refunded = Decimal(0)
    for part in draw(st.lists(st.integers(min_value=1, max_value=5_000), max_size=4)):
        if refunded >= captured:
            break
        refunded = min(captured, refunded + Decimal(part) / 100)
        status = S.REFUNDED if refunded == captured else S.PARTIALLY_REFUNDED
        news.append(Observation(status, "pi_1", amount_captured=captured,
                                amount_refunded=refunded))
    final = (S.CAPTURED if refunded == 0 else
             S.REFUNDED if refunded == captured else S.PARTIALLY_REFUNDED)
    return news, final


@given(st.lists(observations, max_size=8), st.randoms())
def test_any_order_of_the_same_news_ends_in_the_same_state(
        events: list[Observation], rnd: object) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert settled(fold(shuffled)) == settled(fold(events))


@given(lifecycle(), st.data())
def test_a_real_payment_ends_where_its_life_ends_whatever_the_delivery(
        life: tuple[list[Observation], PaymentStatus], data: st.DataObject) -> None:
    events, final = life
    # Webhooks come twice, late, out of order: any permutation of the news with repeats.
    delivered = data.draw(st.permutations(events + data.draw(
        st.lists(st.sampled_from(events), max_size=4))))
    payment = fold(delivered)
    assert payment.status is final
    assert payment.provider_ref == "pi_1"
    assert settled(payment) == settled(fold(events))


@given(st.lists(observations, min_size=1, max_size=8))
def test_the_status_never_moves_back(events: list[Observation]) -> None:
    payment = fresh()
    for news in events:
        after = observe(payment, news, T0)
        assert RANK[after.status] >= RANK[payment.status] or {
            after.status, payment.status} <= {S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED}
        assert after.amount_captured >= payment.amount_captured
        assert after.amount_refunded >= payment.amount_refunded
        payment = after


def test_a_late_authorisation_after_the_capture_changes_nothing() -> None:
    captured = fold([Observation(S.AUTHORISED, "pi_1"),
                     Observation(S.CAPTURED, "pi_1", amount_captured=Decimal("100"))])
    assert observe(captured, Observation(S.AUTHORISED, "pi_1"), T0 + timedelta(days=1)) \
        is captured


def test_a_refund_after_the_capture_applies() -> None:
    captured = fold([Observation(S.CAPTURED, "pi_1", amount_captured=Decimal("100"))])
    part = observe(captured, Observation(S.PARTIALLY_REFUNDED, amount_refunded=Decimal("30")), T0)
    assert (part.status, part.amount_refunded) == (S.PARTIALLY_REFUNDED, Decimal("30"))
    whole = observe(part, Observation(S.REFUNDED, amount_refunded=Decimal("100")), T0)
    assert whole.status is S.REFUNDED


def test_a_decline_keeps_its_reason() -> None:
    declined = fold([Observation(S.DECLINED, "pi_1", decline_reason="insufficient_funds")])
    assert (declined.status, declined.decline_reason) == (S.DECLINED, "insufficient_funds")


@pytest.mark.parametrize(("amount", "currency", "minor"), [
    ("12.34", "EUR", 1234), ("12", "eur", 1200), ("1500", "JPY", 1500), ("1.234", "KWD", 1234)])
def test_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor(Decimal(amount), currency) == minor
    assert from_minor(minor, currency) == Decimal(amount)


@pytest.mark.parametrize(("amount", "currency"), [("12.345", "EUR"), ("1.5", "JPY"),
                                                  ("0", "EUR"), ("-1", "EUR")])
def test_amounts_a_provider_cannot_take(amount: str, currency: str) -> None:
    with pytest.raises(AmountError):
        to_minor(Decimal(amount), currency)
