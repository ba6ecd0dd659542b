"""Rate limits, the parts that need no server: when a refused client may come back (the
sliding-window counter's arithmetic), which keys a request is counted under, and the policy table
with its overrides."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.config import Settings
from instock.platform.ratelimit import Policy, Who, counted
from instock.rate_limits import POLICIES, policies, skus_of, trusted_proxies


def fits_at(t: float, amount: int, window: int, previous: int, left: float, current: int,
            cost: int) -> bool:
    """The sliding-window counter, simulated: whether a request of `cost` fits `t` seconds
    from now. The previous window's count fades over the `left` seconds still to come of the
    current window; then the current window's count fades over the next window."""
    if t < left:
        weighted = previous * (left - t) / window + current
    elif t - left < window:
        weighted = current * (window - (t - left)) / window
    else:
        weighted = 0.0
    return weighted < amount - cost + 1


@given(amount=st.integers(1, 50), window=st.sampled_from([1, 10, 60, 3600]),
       previous=st.integers(0, 80), current=st.integers(0, 80),
       share=st.floats(0.001, 1.0), cost=st.integers(1, 5))
def test_retry_after_is_the_first_whole_second_at_which_the_request_fits(
        amount: int, window: int, previous: int, current: int, share: float,
        cost: int) -> None:
    if cost > amount:
        return  # never fits; such a policy is not declared
    left = share * window
    if current:  # as the store reports it: a key's time to live, one window beyond its end
        left = (window + left) - window
    policy = Policy("p", f"{amount} per {window} second", frozenset({Who.ANYONE}))
    # What the store reports: the previous window weighs in over `left` seconds (0 when it
    # holds nothing); the current window's key lives one window beyond its own end.
    found = counted(policy, False, previous, left if previous else 0.0, current,
                    window + left if current else 0.0, cost=cost)
    now_fits = fits_at(0, amount, window, previous, left, current, cost)
    if not now_fits:
        assert fits_at(found.reset_seconds, amount, window, previous, left, current, cost)
        assert not fits_at(found.reset_seconds - 1, amount, window, previous, left, current,
                           cost)
    weighted = previous * left / window + current
    assert found.remaining == max(0, amount - math.floor(weighted))


def test_remaining_is_the_quota_less_the_weighted_count() -> None:
    policy = Policy("p", "10/minute", frozenset({Who.ANYONE}))
    # 6 in the previous minute, 30 s of it still inside the sliding window: weighs 3.
    assert counted(policy, True, 6, 30.0, 2, 90.0).remaining == 10 - 5
    assert counted(policy, True, 0, 0.0, 0, 0.0).remaining == 10


def test_a_reserving_request_is_counted_per_sku_it_asks_for() -> None:
    assert sorted(skus_of({"lines": [{"sku": "a", "quantity": 1},
                                     {"sku": "b", "quantity": 2}]})) == ["a", "b"]
    assert list(skus_of({"sku": "tee-m", "quantity": 1})) == ["tee-m"]  # a cart item
    assert list(skus_of({"cart_id": "c1"})) == []  # a cart's checkout: counted when added
    assert list(skus_of(None)) == []  # not JSON: the route answers 422
    assert list(skus_of({"lines": "nonsense"})) == []
    assert list(skus_of({"lines": [{"sku": 7}, "x", {"sku": "ok"}]})) == ["ok"]


def test_overrides_change_a_declared_limit_and_refuse_an_unknown_name() -> None:
    changed = {p.name: p for p in policies({"customer": "7/second"})}
    assert changed["customer"].quota == 7 and changed["customer"].window == 1
    assert changed["anonymous"] == next(p for p in POLICIES if p.name == "anonymous")
    with pytest.raises(ValueError, match="custmer"):
        policies({"custmer": "7/second"})


def test_every_declared_policy_says_why_and_has_a_unique_name() -> None:
    assert len({p.name for p in POLICIES}) == len(POLICIES)
    assert all(p.why for p in POLICIES)


def test_a_policy_applies_to_its_clients_on_its_routes() -> None:
    reservations = next(p for p in POLICIES if p.name == "reservations")
    assert reservations.applies("POST", "/v1/reservations", Who.CUSTOMER)
    assert reservations.applies("POST", "/v1/carts/c-1/items", Who.CUSTOMER)
    assert not reservations.applies("POST", "/v1/carts/c-1/items/x", Who.CUSTOMER)
    assert not reservations.applies("GET", "/v1/reservations", Who.CUSTOMER)
    assert not reservations.applies("POST", "/v1/reservations", Who.STAFF)
    anonymous = next(p for p in POLICIES if p.name == "anonymous")
    assert anonymous.applies("GET", "/anything", Who.ANONYMOUS)
    assert not anonymous.applies("GET", "/anything", Who.CUSTOMER)


def test_trusted_proxies_must_be_addresses_or_ranges() -> None:
    assert trusted_proxies(Settings(trusted_proxies="10.0.0.0/8, 127.0.0.1")) == [
        "10.0.0.0/8", "127.0.0.1"]
    assert trusted_proxies(Settings()) == []
    with pytest.raises(ValueError, match=r"lb\.internal"):
        trusted_proxies(Settings(trusted_proxies="lb.internal"))
