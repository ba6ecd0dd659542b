"""The saga's bookkeeping, pure: the plan, its compensations, retries and the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.orders.model import (
    COMPENSATIONS,
    PLANS,
    Saga,
    SagaError,
    SagaKind,
    SagaStatus,
    Step,
)

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def checkout() -> Saga:
    return Saga.start("s-1", SagaKind.CHECKOUT, "o-1", NOW, {"lines": []})


def test_a_checkout_runs_its_steps_in_order_and_completes() -> None:
    saga, seen = checkout(), []
    while not saga.finished:
        seen.append(saga.step)
        saga.succeeded(NOW)
    assert seen == [Step.RESERVE, Step.AUTHORISE, Step.COMMIT, Step.CAPTURE, Step.FULFIL]
    assert saga.status is SagaStatus.COMPLETED and saga.step is None


def test_a_decline_releases_the_stock_before_anything_else() -> None:
    saga = checkout()
    saga.succeeded(NOW)  # reserved
    saga.failed("declined", NOW)  # at authorise
    assert saga.status is SagaStatus.COMPENSATING and saga.failure == "declined"
    assert saga.plan == [Step.RELEASE, Step.ABANDON, Step.VOID]
    for _ in range(3):
        saga.succeeded(NOW)
    assert saga.status is SagaStatus.COMPENSATED


@pytest.mark.parametrize("kind", [SagaKind.CANCELLATION, SagaKind.RETURN])
def test_cancellations_and_returns_never_give_up(kind: SagaKind) -> None:
    saga = Saga.start("s", kind, "o", NOW)
    assert not saga.may_give_up(1)
    with pytest.raises(SagaError, match="cannot give up"):
        saga.failed("x", NOW)


def test_compensations_cannot_give_up_either() -> None:
    saga = checkout()
    saga.failed("out of stock", NOW)
    assert not saga.may_give_up(1)
    with pytest.raises(SagaError):
        saga.failed("again", NOW)


@given(st.integers(min_value=1, max_value=40))
def test_retries_back_off_exponentially_up_to_a_minute(attempts: int) -> None:
    saga = checkout()
    waits = []
    for _ in range(attempts):
        saga.retry_later(NOW)
        waits.append(saga.next_attempt_at - NOW)
    assert waits == sorted(waits)
    assert all(timedelta(0) < w <= timedelta(seconds=60) for w in waits)
    assert saga.attempts == attempts and saga.step is Step.RESERVE


def test_giving_up_comes_after_the_allowed_attempts() -> None:
    saga = checkout()
    assert not saga.may_give_up(3)
    saga.retry_later(NOW)
    saga.retry_later(NOW)
    assert saga.may_give_up(3)


def test_a_finished_saga_does_nothing_more() -> None:
    saga = Saga.start("s", SagaKind.CANCELLATION, "o", NOW)
    saga.stop("too late", NOW)
    assert saga.status is SagaStatus.COMPENSATED and saga.failure == "too late"
    for act in (saga.succeeded, saga.retry_later):
        with pytest.raises(SagaError):
            act(NOW)


def test_every_forward_step_that_can_fail_releases_stock_first() -> None:
    for plan in PLANS.values():
        for step in plan:
            if step in COMPENSATIONS:
                assert COMPENSATIONS[step][0] is Step.RELEASE
