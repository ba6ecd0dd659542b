"""The saga's bookkeeping, pure: the plan, its compensations, retries and the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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
PAUSE = timedelta(seconds=1)


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


def test_a_retry_counts_the_attempt_and_waits_the_pause_it_is_given() -> None:
    saga = checkout()
    saga.retry_later(NOW, timedelta(seconds=3))
    assert saga.attempts == 1 and saga.step is Step.RESERVE
    assert saga.next_attempt_at == NOW + timedelta(seconds=3)


def test_giving_up_comes_after_the_allowed_attempts() -> None:
    saga = checkout()
    assert not saga.may_give_up(3)
    saga.retry_later(NOW, PAUSE)
    saga.retry_later(NOW, PAUSE)
    assert saga.may_give_up(3)


def test_a_finished_saga_does_nothing_more() -> None:
    saga = Saga.start("s", SagaKind.CANCELLATION, "o", NOW)
    saga.stop("too late", NOW)
    assert saga.status is SagaStatus.COMPENSATED and saga.failure == "too late"
    with pytest.raises(SagaError):
        saga.succeeded(NOW)
    with pytest.raises(SagaError):
        saga.retry_later(NOW, PAUSE)


def test_every_forward_step_that_can_fail_releases_stock_first() -> None:
    for plan in PLANS.values():
        for step in plan:
            if step in COMPENSATIONS:
                assert COMPENSATIONS[step][0] is Step.RELEASE
