"""Channel allocation rules, pure: available-to-sell = max(0, min(cap, available - buffer)), and
a reservation on the channel never takes more than that."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.inventory import model
from instock.inventory.model import ChannelRules, Line, StockLevel, delta

TODAY = date(2026, 11, 21)


def stocked(sku: str, *quantities: int) -> list[StockLevel]:
    levels = []
    for i, quantity in enumerate(quantities):
        level = StockLevel(sku, f"wh-{i}")
        if quantity:
            level.apply(model.Movement(sku, level.location, delta(on_hand=quantity), "receive"))
        levels.append(level)
    return levels


caps = st.none() | st.integers(min_value=0, max_value=1_000)


@given(available=st.integers(min_value=-50, max_value=1_000),
       buffer=st.integers(min_value=0, max_value=1_000), cap=caps)
def test_ats_is_never_negative_above_the_cap_or_above_what_is_available(
        available: int, buffer: int, cap: int | None) -> None:
    ats = model.channel_ats(available, buffer, cap)
    assert ats >= 0
    assert ats <= max(0, available)
    assert cap is None or ats <= cap
    assert ats <= max(0, available - buffer)
    # ...and it is exactly the rule, not merely within its bounds
    assert ats == max(0, min(cap if cap is not None else available - buffer, available - buffer))


def test_ats_examples() -> None:
    assert model.channel_ats(10) == 10
    assert model.channel_ats(10, buffer=3) == 7
    assert model.channel_ats(10, buffer=3, cap=5) == 5
    assert model.channel_ats(2, buffer=3, cap=5) == 0
    assert model.channel_ats(10, cap=0) == 0


def test_a_bundle_counts_kits_from_its_components_channel_ats() -> None:
    levels = {"A": stocked("A", 10), "B": stocked("B", 6)}
    recipes = {"KIT": {"A": 2, "B": 1}}
    rules = ChannelRules(buffer=2, cap=5)
    # A: min(5, 8) = 5 -> 2 kits; B: min(5, 4) = 4 -> 4 kits
    assert model.channel_available_to_sell("KIT", recipes, levels, TODAY, 0, rules) == 2
    assert model.channel_available_to_sell("A", recipes, levels, TODAY, 0, rules) == 5


def test_a_channel_is_refused_beyond_its_ats_naming_the_line_and_its_ats() -> None:
    levels = {"A": stocked("A", 4, 6)}
    rules = ChannelRules(buffer=3, cap=None)
    model.check_channel_rules([Line("A", 7)], {}, levels, TODAY, 0, rules)  # 10 - 3 = 7
    with pytest.raises(model.StockShortfall) as refused:
        model.check_channel_rules([Line("A", 8)], {}, levels, TODAY, 0, rules)
    assert [(s.sku, s.requested, s.available) for s in refused.value.shortages] == [("A", 8, 7)]


@given(stock=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=3),
       buffer=st.integers(min_value=0, max_value=30), cap=caps,
       wants=st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=8))
def test_reservations_one_after_the_other_never_take_more_than_the_channel_ats(
        stock: list[int], buffer: int, cap: int | None, wants: list[int]) -> None:
    """Holds decided in turn (as the reserve path does under the SKU lock): each one that is
    accepted fits the channel's ATS of that moment, each one refused did not, and the channel's
    sales never eat into the buffer. (The cap bounds what the channel is shown and sold at any
    moment; it is not a lifetime quota.)"""
    levels = {"A": stocked("A", *stock)}
    rules = ChannelRules(buffer, cap)
    for want in wants:
        ats = model.channel_available_to_sell("A", {}, levels, TODAY, 0, rules)
        try:
            model.check_channel_rules([Line("A", want)], {}, levels, TODAY, 0, rules)
            allocations = model.allocate([Line("A", want)], {}, levels, TODAY)
        except model.StockShortfall:
            assert want > ats
            continue
        assert want <= ats and (cap is None or want <= cap)
        for a in allocations:
            level = next(lv for lv in levels["A"] if lv.location == a.location)
            level.apply(model.Movement("A", a.location, delta(reserved=a.quantity), "reserve"))
    left = model.sku_sellable(levels["A"], TODAY)
    assert left >= min(buffer, sum(stock))
