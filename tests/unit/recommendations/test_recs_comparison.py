"""Bootstrap intervals, the paired difference to the best baseline, and the configuration
report of `recs evaluate` (recommendations/comparison.py, metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from instock.recommendations.comparison import (
    chosen_configuration,
    hyper_parameters,
    intervals,
    versus_best_baseline,
)
from instock.recommendations.metrics import bootstrap_intervals, per_target
from instock.recommendations.model import SequentialRules, Trending


def test_per_target_rows_are_hits_and_reciprocal_ranks_within_k() -> None:
    rows = per_target([1, 4, 20, 21], k=20)
    assert rows[0].tolist() == [1, 1, 1, 0]
    assert rows[1].tolist() == pytest.approx([1, 0.25, 0.05, 0])


def test_an_interval_holds_the_mean_narrows_with_more_targets_and_repeats() -> None:
    rng = np.random.default_rng(1)
    few = (rng.random(100) < 0.3).astype(float)
    many = (rng.random(10_000) < 0.3).astype(float)
    [(low_few, high_few)] = bootstrap_intervals(few[np.newaxis, :])
    [(low, high)] = bootstrap_intervals(many[np.newaxis, :])
    assert low_few <= few.mean() <= high_few and low <= many.mean() <= high
    assert high - low < (high_few - low_few) / 5  # about 1/sqrt(100) as wide
    # for a proportion near 0.3 on 10,000 targets: about ±1.96·sqrt(0.21/10,000) = ±0.009
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 10_000), rel=0.15)
    assert (bootstrap_intervals(many[np.newaxis, :]) == [[low, high]]).all()  # seeded
    assert bootstrap_intervals(np.zeros((2, 0))).tolist() == [[0, 0], [0, 0]]


def test_intervals_name_each_metric() -> None:
    report = intervals([1, 2, 3, 50] * 100, k=20)
    assert set(report) == {"hr_ci", "mrr_ci"}
    assert report["hr_ci"][0] <= 0.75 <= report["hr_ci"][1]


def test_identical_models_differ_by_nothing_and_do_not_win() -> None:
    ranks = [1, 3, 30, 7] * 50
    versus = versus_best_baseline({"instock": ranks, "als": ranks}, "instock", k=20)
    for metric in ("hr", "mrr"):
        assert versus[metric] == {"baseline": "als", "difference": 0.0, "ci": [0.0, 0.0],
                                  "wins": False}


def test_a_small_lead_on_the_same_targets_is_a_win_that_separate_intervals_miss() -> None:
    # Both models find the same 40% of targets; ours also finds 2% more. Apart, the two
    # intervals overlap; paired, every resample shows the lead.
    rng = np.random.default_rng(7)
    theirs = np.where(rng.random(3000) < 0.4, 1, 100)
    ours = theirs.copy()
    ours[np.flatnonzero(theirs == 100)[:60]] = 1
    mine_ci, their_ci = intervals(list(ours), 20), intervals(list(theirs), 20)
    assert mine_ci["hr_ci"][0] < their_ci["hr_ci"][1]  # separate intervals overlap
    versus = versus_best_baseline({"instock": list(ours), "popularity": [50] * 3000,
                                   "als": list(theirs)}, "instock", k=20)
    assert versus["hr"]["baseline"] == "als"  # the best baseline, not the first
    assert versus["hr"]["difference"] == pytest.approx(0.02)
    assert 0 < versus["hr"]["ci"][0] <= 0.02 <= versus["hr"]["ci"][1]
    assert versus["hr"]["wins"]


def test_a_lead_that_is_noise_is_not_a_win() -> None:
    rng = np.random.default_rng(3)
    theirs = list(np.where(rng.random(400) < 0.5, 1, 100))
    ours = list(np.where(rng.random(400) < 0.5, 1, 100))  # as good, on other targets
    versus = versus_best_baseline({"instock": ours, "als": theirs}, "instock", k=20)
    low, high = versus["hr"]["ci"]
    assert low < 0 < high and not versus["hr"]["wins"]


def test_the_chosen_configuration_lists_what_is_used_with_its_parameters() -> None:
    components = {"sequential": SequentialRules(steps=7, context_size=2),
                  "popularity": Trending(), "unused": Trending(half_life=5.0)}
    chosen = chosen_configuration(components, {"sequential": 0.5, "popularity": 1.0,
                                               "unused": 0.0}, als_alpha=40.0)
    assert chosen["components"] == ["popularity", "sequential"]
    assert chosen["weights"] == {"popularity": 1.0, "sequential": 0.5}
    assert chosen["hyper_parameters"]["sequential"] == {"steps": 7, "context_size": 2,
                                                        "decay": 1.0, "pruning": 20}
    assert chosen["hyper_parameters"]["popularity"]["half_life"] == "inf"  # JSON has no inf
    assert chosen["als_alpha"] == 40.0
    assert hyper_parameters(Trending(half_life=2.5))["half_life"] == 2.5
