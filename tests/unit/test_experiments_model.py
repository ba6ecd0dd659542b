"""Experiment rules without a database: stable assignment by sha256, shares respected,
validation that names the field, the status machine, and the z-test against known numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency

from instock.experiments import model
from instock.experiments.model import (
    Experiment,
    ExperimentError,
    Kind,
    Status,
    TransitionError,
    Unit,
    Variant,
    assign,
    bucket,
    compare,
)

MODELS = frozenset({"hybrid", "trending", "popularity", "cooccurrence"})
HALVES = (Variant("control", 0.5), Variant("treatment", 0.5))
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


# -- assignment --------------------------------------------------------------------------------


def test_a_known_subject_gets_the_variant_its_sha256_says() -> None:
    # sha256("exp-1:customer-1") starts c4719d2eff7a32bf: 0xc4719d2eff7a32bf / 2**64 = 0.767...
    assert bucket("exp-1", "customer-1") == 0xC4719D2EFF7A32BF / 2**64
    assert bucket("exp-1", "customer-2") == 0x470C8066C8AB1FB6 / 2**64  # 0.2775...
    assert assign("exp-1", "customer-1", HALVES).name == "treatment"
    assert assign("exp-1", "customer-2", HALVES).name == "control"
    assert {assign("exp-1", "customer-1", HALVES).name for _ in range(100)} == {"treatment"}


def test_assignment_is_the_same_in_a_fresh_process_with_another_hash_seed() -> None:
    subjects = [f"customer-{i}" for i in range(50)]
    here = [assign("exp-1", s, HALVES).name for s in subjects]
    code = ("from instock.experiments.model import Variant, assign\n"
            "v = (Variant('control', 0.5), Variant('treatment', 0.5))\n"
            "print(','.join(assign('exp-1', f'customer-{i}', v).name for i in range(50)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # Python's own hash() would differ
    there = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           capture_output=True, text=True).stdout.strip().split(",")
    assert there == here


def test_shares_are_respected_on_20k_subjects() -> None:
    variants = (Variant("control", 0.5), Variant("a", 0.3), Variant("b", 0.2))
    counts = Counter(assign("exp-shares", f"s{i}", variants).name for i in range(20_000))
    for v in variants:
        # Binomial sd at n=20k is at most ~71 subjects (0.36%): 1.5% is > 4 sd.
        assert abs(counts[v.name] / 20_000 - v.share) < 0.015, counts


def test_experiments_hash_independently() -> None:
    subjects = [f"s{i}" for i in range(2000)]
    first = [assign("exp-a", s, HALVES).name for s in subjects]
    second = [assign("exp-b", s, HALVES).name for s in subjects]
    same = sum(a == b for a, b in zip(first, second, strict=True))
    assert 0.4 < same / len(subjects) < 0.6  # the control of one is not the control of the next


@st.composite
def shares(draw: st.DrawFn) -> tuple[Variant, ...]:
    weights = draw(st.lists(st.integers(1, 100), min_size=2, max_size=10))
    total = sum(weights)
    return tuple(Variant(f"v{i}", w / total) for i, w in enumerate(weights))


@given(variants=shares(), experiment=st.text(max_size=40), subject=st.text(max_size=80))
def test_every_subject_gets_one_of_the_variants_and_always_the_same(
        variants: tuple[Variant, ...], experiment: str, subject: str) -> None:
    point = bucket(experiment, subject)
    assert 0 <= point < 1
    chosen = assign(experiment, subject, variants)
    assert chosen in variants and assign(experiment, subject, variants) is chosen


@settings(max_examples=50)
@given(variants=shares())
def test_the_chosen_variant_is_the_one_whose_share_interval_holds_the_bucket(
        variants: tuple[Variant, ...]) -> None:
    for i in range(50):
        point, chosen = bucket("x", str(i)), assign("x", str(i), variants)
        index = variants.index(chosen)
        below = sum(v.share for v in variants[:index])
        assert below <= point + 1e-12 and (point < below + chosen.share or chosen is variants[-1])


# -- validation --------------------------------------------------------------------------------


def field_of(variants: list[Variant]) -> str:
    with pytest.raises(ExperimentError) as raised:
        model.variants(variants, MODELS)
    return raised.value.field


def test_validation_names_the_field() -> None:
    ok = Variant("a", 0.5)
    assert field_of([ok]) == "variants"  # fewer than 2
    assert field_of([Variant(f"v{i}", 1 / 11) for i in range(11)]) == "variants"
    assert field_of([ok, Variant("b", 0.4)]) == "variants"  # sums to 0.9
    assert field_of([ok, Variant("a", 0.5)]) == "variants[1].name"
    assert field_of([ok, Variant("", 0.5)]) == "variants[1].name"
    assert field_of([Variant("a", 0.0), Variant("b", 1.0)]) == "variants[0].share"
    assert field_of([ok, Variant("b", float("nan"))]) == "variants[1].share"
    assert field_of([ok, Variant("b", 0.5, {"model": "nope"})]) == "variants[1].config.model"
    assert field_of([ok, Variant("b", 0.5, {"model": 3})]) == "variants[1].config.model"
    assert field_of([ok, Variant("b", 0.5, {"modle": "hybrid"})]) == "variants[1].config.modle"
    assert field_of([ok, Variant("b", 0.5, {"weights": {"nope": 1}})]) == (
        "variants[1].config.weights.nope")
    assert field_of([ok, Variant("b", 0.5, {"weights": {"trending": -1}})]) == (
        "variants[1].config.weights.trending")
    assert field_of([ok, Variant("b", 0.5, {"weights": {"trending": True}})]) == (
        "variants[1].config.weights.trending")
    assert field_of([ok, Variant("b", 0.5, {"weights": [1]})]) == "variants[1].config.weights"
    with pytest.raises(ExperimentError) as raised:
        model.name("  ")
    assert raised.value.field == "name"


def test_shares_summing_to_one_within_1e_9_and_good_configs_pass() -> None:
    thirds = [Variant(f"v{i}", 1 / 3) for i in range(3)]
    assert model.variants(thirds, MODELS) == tuple(thirds)
    configured = [Variant("a", 0.5, {"model": "hybrid"}),
                  Variant("b", 0.5, {"model": "hybrid", "weights": {"trending": 0.7,
                                                                    "popularity": 0}})]
    assert model.variants(configured, MODELS) == tuple(configured)
    assert field_of([Variant("a", 0.5), Variant("b", 0.5 + 2e-9)]) == "variants"


def test_the_control_is_the_variant_named_control_else_the_first() -> None:
    assert model.control_of([Variant("a", 0.5), Variant("b", 0.5)]).name == "a"
    assert model.control_of([Variant("a", 0.5), Variant("control", 0.5)]).name == "control"


def test_status_moves_draft_running_stopped_only() -> None:
    draft = Experiment("e", "n", Status.DRAFT, Unit.CUSTOMER, HALVES, NOW)
    with pytest.raises(TransitionError):
        draft.stop(NOW)
    running = draft.start(NOW)
    assert (running.status, running.started_at) == (Status.RUNNING, NOW)
    with pytest.raises(TransitionError):
        running.start(NOW)
    stopped = running.stop(NOW + timedelta(hours=1))
    assert (stopped.status, stopped.stopped_at) == (Status.STOPPED, NOW + timedelta(hours=1))
    for move in (stopped.start, stopped.stop):
        with pytest.raises(TransitionError):
            move(NOW)
    assert stopped.counts(NOW + timedelta(minutes=1)) and not stopped.counts(NOW - timedelta(1))
    assert not stopped.counts(NOW + timedelta(hours=2)) and not draft.counts(NOW)


# -- statistics --------------------------------------------------------------------------------


def test_the_z_test_matches_the_hand_computed_result() -> None:
    # control 200/1000, variant 250/1000: pooled p = 0.225,
    # se = sqrt(0.225 * 0.775 * (1/1000 + 1/1000)) = 0.0186748, z = 0.05 / se = 2.6774,
    # two-sided p = 2 * (1 - Phi(2.6774)) = 0.00742.
    c = compare(200, 1000, 250, 1000)
    assert c.rate_control == 0.2 and c.rate_variant == 0.25
    assert c.difference == pytest.approx(0.05)
    assert c.uplift == pytest.approx(0.25)
    assert c.z == pytest.approx(2.6774, abs=1e-4)
    assert c.p_value == pytest.approx(0.00742, abs=1e-5)
    assert c.significant
    # unpooled se = sqrt(.2*.8/1000 + .25*.75/1000) = 0.0186414; 95% CI = 0.05 +- 1.95996 se
    assert c.ci_low == pytest.approx(0.05 - 1.959964 * 0.0186414, abs=1e-6)
    assert c.ci_high == pytest.approx(0.05 + 1.959964 * 0.0186414, abs=1e-6)


def test_z_squared_is_the_chi_square_statistic_without_continuity_correction() -> None:
    for (cc, nc, cv, nv) in [(200, 1000, 250, 1000), (31, 480, 12, 530), (5, 40, 9, 41)]:
        chi2, p, _, _ = chi2_contingency([[cc, nc - cc], [cv, nv - cv]], correction=False)
        c = compare(cc, nc, cv, nv)
        assert c.z is not None and c.z**2 == pytest.approx(chi2)
        assert c.p_value == pytest.approx(p)


def test_degenerate_data_give_no_test_and_no_significance() -> None:
    assert compare(0, 0, 5, 10).z is None and not compare(0, 0, 5, 10).significant
    nothing = compare(0, 100, 0, 100)  # no variation: nothing to test
    assert (nothing.z, nothing.p_value, nothing.uplift, nothing.significant) == (
        None, None, None, False)
    assert compare(0, 100, 3, 100).uplift is None  # relative to a zero control rate
    assert not compare(20, 100, 22, 100).significant


def test_results_compare_each_variant_with_the_control() -> None:
    experiment = Experiment("e", "n", Status.RUNNING, Unit.SESSION,
                            (Variant("a", 0.5), Variant("control", 0.5)), NOW, NOW)
    results = model.results(experiment, {"a": 1000, "control": 1000},
                            {("a", Kind.CLICK): 250, ("control", Kind.CLICK): 200})
    assert [(r.name, r.is_control, r.exposed) for r in results] == [
        ("a", False, 1000), ("control", True, 1000)]
    clicks = results[0].kinds[0]
    assert clicks.kind is Kind.CLICK and clicks.converted == 250
    assert clicks.comparison.uplift == pytest.approx(0.25)
    purchases = results[0].kinds[2]
    assert (purchases.converted, purchases.comparison.rate_variant) == (0, 0.0)
    assert results[1].kinds[0].comparison.z is None  # the control is not tested against itself
