"""Admission by measured checkout capacity, without a database: the piecewise arithmetic over a
drop's rate segments (a fixed-rate drop is one segment and counts as before), the capacity
rule, when a measured rate takes effect, and the rules a capacity drop is checked by."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.drops import model
from instock.drops.model import Admission, Mode, Segment
from instock.drops.model import capacity as capacity_model
from instock.drops.model.capacity import Throughput
from tests.unit.test_drops_model import START, drop

rates = st.floats(min_value=0.01, max_value=1_000.0, allow_nan=False)
offsets = st.floats(min_value=0.001, max_value=3_600.0, allow_nan=False)


def capacity(**changes: object) -> model.Drop:
    return drop(admission=Admission.CAPACITY, **changes)


def at(seconds: float) -> model.datetime:
    return START + timedelta(seconds=seconds)


def test_a_fixed_rate_drop_is_one_segment_and_counts_as_before() -> None:
    fixed = drop(admit_per_second=2.5)
    assert model.segments(fixed) == [Segment(START, 2.5)]
    assert model.admitted_through(fixed, at(-1)) == 0
    assert model.admitted_through(fixed, at(10)) == 25
    assert model.admitted_through(fixed, at(10.3)) == math.floor(2.5 * 10.3)
    assert model.rate_at(fixed, at(1000)) == 2.5
    assert model.admitted_at(fixed, 25) == at(10)


def test_admissions_sum_over_the_segments_and_the_wait_follows_the_rates() -> None:
    changed = capacity(admit_per_second=2.0, rates=(Segment(at(20), 10.0), Segment(at(10), 1.0)))
    # 2/s for 10 s, 1/s for 10 s, then 10/s.
    assert [model.admitted_through(changed, at(s)) for s in (5, 10, 15, 20, 21, 25)] == [
        10, 20, 25, 30, 40, 80]
    assert [model.rate_at(changed, at(s)) for s in (-1, 5, 10, 19.9, 20)] == [
        2.0, 2.0, 1.0, 1.0, 10.0]
    assert model.admitted_at(changed, 25) == at(15)
    assert model.admitted_at(changed, 80) == at(25)
    assert model.wait_estimate(changed, 80, at(15)) == pytest.approx(10.0)
    assert model.wait_estimate(changed, 25, at(15)) == 0.0
    # A stored change at or before the start is no change: the drop's own rate holds there.
    assert model.segments(capacity(rates=(Segment(START, 9.0),))) == [Segment(START, 2.0)]


@given(rate=rates, elapsed=offsets)
def test_one_segment_is_the_fixed_arithmetic(rate: float, elapsed: float) -> None:
    one, now = drop(admit_per_second=rate), at(elapsed)
    # The old arithmetic, on the clock's own microseconds.
    assert model.admitted_through(one, now) == math.floor(
        rate * (now - START).total_seconds())


@given(start=rates, changes=st.lists(st.tuples(offsets, rates), max_size=6),
       moments=st.lists(offsets, min_size=2, max_size=6))
def test_admissions_never_go_back_and_split_segments_change_nothing(
        start: float, changes: list[tuple[float, float]], moments: list[float]) -> None:
    segs = tuple(Segment(at(offset), rate) for offset, rate in changes)
    piecewise = capacity(admit_per_second=start, rates=segs)
    counts = [model.admitted_through(piecewise, at(m)) for m in sorted(moments)]
    assert counts == sorted(counts)  # monotone in the clock
    # Splitting a segment in two at the same rate admits the same (up to float rounding
    # of a whole place at an exact boundary, so compare the unfloored sums).
    last = model.segments(piecewise)[-1]
    split = replace(piecewise, rates=(*segs, Segment(last.from_at + timedelta(seconds=7),
                                                     last.rate)))
    for m in moments:
        assert model._admitted(model.segments(split), at(m)) == pytest.approx(
            model._admitted(model.segments(piecewise), at(m)), rel=1e-9, abs=1e-6)


@given(start=rates, changes=st.lists(st.tuples(offsets, rates), max_size=6),
       position=st.integers(min_value=1, max_value=100_000))
def test_admitted_at_is_the_inverse_of_admitted_through(
        start: float, changes: list[tuple[float, float]], position: int) -> None:
    piecewise = capacity(admit_per_second=start,
                         rates=tuple(Segment(at(o), r) for o, r in changes))
    when = model.admitted_at(piecewise, position)
    # Reached at that moment (a microsecond's rounding of the moment aside), not before.
    assert model.admitted_through(piecewise, when + timedelta(microseconds=2)) >= position
    assert model.admitted_through(piecewise, when - timedelta(milliseconds=1)) < position


def test_the_capacity_rule_follows_what_gets_through_within_its_bounds() -> None:
    room = capacity(admit_per_second=10.0, max_admit_per_second=40.0)
    # 60 through in 30 s is 2/s measured: 1.5 x 2 = 3/s.
    assert capacity_model.capacity_rate(room, Throughput(60, 5, 30.0)) == pytest.approx(3.0)
    # Stuck: nothing through, shoppers open in checkout: the floor, a tenth of the start.
    assert capacity_model.capacity_rate(room, Throughput(0, 12, 30.0)) == pytest.approx(1.0)
    # Keeping up fast: up to the ceiling, never past it.
    assert capacity_model.capacity_rate(room, Throughput(900, 0, 30.0)) == 40.0
    # No ceiling named: the absolute one.
    assert capacity_model.capacity_rate(replace(room, max_admit_per_second=None),
                               Throughput(900, 0, 30.0)) == pytest.approx(45.0)
    # Nothing measured (no checkout begun or ended): the rate stays.
    assert capacity_model.capacity_rate(room, Throughput(0, 0, 30.0)) is None


@given(through=st.integers(0, 10_000), open_=st.integers(0, 10_000),
       seconds=st.floats(min_value=0.1, max_value=600), start=rates)
def test_the_capacity_rate_is_always_within_floor_and_ceiling(
        through: int, open_: int, seconds: float, start: float) -> None:
    room = capacity(admit_per_second=start, max_admit_per_second=start * 4)
    rate = capacity_model.capacity_rate(room, Throughput(through, open_, seconds))
    if through == 0 and open_ == 0:
        assert rate is None
    else:
        assert rate is not None
        assert start * capacity_model.FLOOR_SHARE <= rate <= start * 4
        more = capacity_model.capacity_rate(room, Throughput(through + 1, open_, seconds))
        assert more is not None and more >= rate  # more through never lowers it


def test_a_measured_rate_takes_effect_at_a_boundary_far_enough_ahead() -> None:
    room = capacity()
    assert capacity_model.next_change(room, at(5), period=10, lead=2) is None  # a period first
    assert capacity_model.next_change(room, at(10), period=10, lead=2) == at(20)
    assert capacity_model.next_change(room, at(17.9), period=10, lead=2) == at(20)
    # too close: the next one
    assert capacity_model.next_change(room, at(18.5), period=10, lead=2) == at(30)
    assert capacity_model.next_change(drop(), at(50), period=10, lead=2) is None  # fixed rate
    ending = capacity(ends_at=at(25))
    assert capacity_model.next_change(ending, at(18.5), period=10, lead=2) is None
    assert capacity_model.measure_window(room, at(12), period=10) == 12.0
    window = 10 * capacity_model.WINDOW_PERIODS
    assert capacity_model.measure_window(room, at(500), period=10) == window


@pytest.mark.parametrize(("changes", "field"), [
    ({"admission": Admission.CAPACITY, "mode": Mode.FIRST_COME}, "admission"),
    ({"max_admit_per_second": 5.0}, "max_admit_per_second"),  # fixed rate: no ceiling
    ({"admission": Admission.CAPACITY, "max_admit_per_second": 1.0}, "max_admit_per_second"),
    ({"admission": Admission.CAPACITY, "max_admit_per_second": float("inf")},
     "max_admit_per_second"),
])
def test_bad_capacity_drops_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(model.InvalidDrop) as raised:
        model.check_drop(drop(**changes))
    assert raised.value.field == field


def test_a_capacity_drop_passes() -> None:
    model.check_drop(capacity(max_admit_per_second=2.0))
    model.check_drop(capacity())


def test_the_scheduled_event_tells_how_the_room_admits() -> None:
    """Other contexts (and the bus's consumers) learn a capacity drop's admission and its
    ceiling from `drop.scheduled.v1`; a fixed-rate drop says `fixed` and no ceiling."""
    by_capacity = model.scheduled(capacity(max_admit_per_second=40.0))
    assert (by_capacity.admission, by_capacity.max_admit_per_second) == ("capacity", 40.0)
    fixed = model.scheduled(drop())
    assert (fixed.admission, fixed.max_admit_per_second) == ("fixed", None)
