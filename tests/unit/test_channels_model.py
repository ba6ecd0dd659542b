"""The channels model, pure: when a listing is pushed (coalesced, never older after newer),
pacing, drift, and what a marketplace's feed event asks for."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.channels import model
from instock.channels.model import (
    Decision,
    Drift,
    FeedDelivery,
    FeedError,
    FeedLine,
    ListingState,
    OrderWork,
)


def state(changes: int = 1, pushed_changes: int = 0, version: int | None = None,
          quantity: int | None = None) -> ListingState:
    return ListingState("A", changes, pushed_changes, version, quantity)


def test_push_decisions() -> None:
    assert model.push_decision(state(), 5, 1) is Decision.PUSH
    assert model.push_decision(state(version=3, quantity=5), 5, 4) is Decision.SAME
    assert model.push_decision(state(version=3, quantity=5), 4, 4) is Decision.PUSH
    assert model.push_decision(state(version=3, quantity=5), 9, 2) is Decision.STALE


def test_coalesce_keeps_the_newest_read_per_sku_whatever_the_arrival_order() -> None:
    burst = [("A", 1, 9), ("B", 4, 1), ("A", 3, 7), ("A", 2, 8), ("B", 5, 0)]
    assert model.coalesce(burst) == {"A": (3, 7), "B": (5, 0)}


@given(quantities=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=40),
       wakes=st.lists(st.booleans(), min_size=40, max_size=40),
       lags=st.lists(st.integers(min_value=0, max_value=3), min_size=40, max_size=40))
def test_a_pusher_sends_versions_in_order_and_ends_on_the_latest(
        quantities: list[int], wakes: list[bool], lags: list[int]) -> None:
    """Stock changes one version at a time; a pusher wakes now and then and reads the state
    (sometimes from a lagging replica: an older version). What it sends is never older than what
    it sent before, a burst between wakes is one push, and once it catches up the marketplace
    holds the latest quantity."""
    history: list[int] = []  # quantity by version - 1
    pushed: list[tuple[int, int]] = []  # (version, quantity) sent
    listing = state(0, 0)

    def wake(lag: int) -> None:
        nonlocal listing
        if not listing.dirty:
            return
        version = max(1, len(history) - lag)
        quantity = history[version - 1]
        covered = listing.changes
        decision = model.push_decision(listing, quantity, version)
        if decision is Decision.STALE:
            listing = ListingState("A", listing.changes, covered, listing.pushed_version,
                                   listing.pushed_quantity)
            return
        if decision is Decision.PUSH:
            pushed.append((version, quantity))
        listing = ListingState("A", listing.changes, covered, version, quantity)

    for i, quantity in enumerate(quantities):
        history.append(quantity)
        listing = ListingState("A", i + 1, listing.pushed_changes, listing.pushed_version,
                               listing.pushed_quantity)
        if wakes[i]:
            wake(lags[i])
    versions = [v for v, _ in pushed]
    assert versions == sorted(versions)
    assert len(pushed) <= len(quantities)
    # caught up: a wake without lag once the burst is over
    listing = ListingState("A", listing.changes + 1, listing.pushed_changes,
                           listing.pushed_version, listing.pushed_quantity)
    wake(0)
    assert listing.pushed_quantity == history[-1]


def test_a_burst_between_two_wakes_is_one_push() -> None:
    listing = state(changes=50, pushed_changes=0, version=None, quantity=None)
    assert model.push_decision(listing, 3, 50) is Decision.PUSH  # one push, of version 50


def test_pacing_spaces_pushes_and_banks_no_credit() -> None:
    assert model.next_slot(None, 100.0, 10) == 100.0
    assert model.next_slot(100.0, 100.01, 10) == 100.1
    assert model.next_slot(100.0, 500.0, 10) == 500.0


def test_drift_names_each_difference_and_ignores_unlisted_skus_we_do_not_sell() -> None:
    ours = {"A": 5, "B": 0, "C": 2, "D": 0}
    theirs = {"A": 5, "B": 3, "E": 1}
    assert model.drift(ours, theirs) == [Drift("B", 0, 3), Drift("C", 2, None),
                                         Drift("E", 0, 1)]


# -- the order feed: which feed event becomes which work ------------------------------------

LINE = FeedLine("SKU-1", 2, Decimal("19.90"))


def test_an_order_created_becomes_created_work_with_its_lines_and_currency() -> None:
    delivery = model.feed_event("evt-1", "order.created", "ord-1", [LINE], "USD", None)
    assert delivery == FeedDelivery("evt-1", OrderWork.CREATED, "ord-1", (LINE,), currency="USD")


def test_an_order_cancelled_becomes_cancelled_work_with_its_reason() -> None:
    delivery = model.feed_event("evt-2", "order.cancelled", "ord-1", [], "EUR", "fraud")
    assert delivery == FeedDelivery("evt-2", OrderWork.CANCELLED, "ord-1", reason="fraud")


@pytest.mark.parametrize("reason", [None, ""])
def test_a_cancellation_without_a_reason_is_the_buyers(reason: str | None) -> None:
    delivery = model.feed_event("evt-2", "order.cancelled", "ord-1", [LINE], "EUR", reason)
    assert delivery is not None and delivery.reason == "cancelled by the buyer"
    assert delivery.lines == ()  # a cancellation carries no lines even when sent some


@pytest.mark.parametrize("kind", ["order.shipped", "order.updated", "ORDER.CREATED", ""])
def test_a_kind_instock_does_not_act_on_is_ignored(kind: str) -> None:
    assert model.feed_event("evt-3", kind, "ord-1", [LINE], "EUR", None) is None


def test_an_order_created_without_lines_is_refused() -> None:
    with pytest.raises(FeedError) as refused:
        model.feed_event("evt-4", "order.created", "ord-1", [], "EUR", None)
    assert (refused.value.field, refused.value.reason) == (
        "data.order.lines", "an order needs at least one line")
