import math
from collections.abc import Callable

import numpy as np
import pytest

from instock.recommendations.metrics import Ranker, RankingMetrics


def test_summary_matches_hand_computed_values() -> None:
    acc = RankingMetrics(k=20, n_catalogue=10)
    for rank, top in ((1, [0, 1]), (2, [1, 2]), (25, [3]), (4, [0])):
        acc.add(rank, np.asarray(top))
    out = acc.summary()
    assert out["hr"] == pytest.approx(3 / 4)
    assert out["mrr"] == pytest.approx((1 + 1 / 2 + 0 + 1 / 4) / 4)
    assert out["ndcg"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5)) / 4)
    assert out["coverage"] == pytest.approx(4 / 10)  # items 0..3 shown


def ranker_with(tiebreak: list[float]) -> Ranker:
    ranker = Ranker(len(tiebreak))
    ranker.tiebreak = np.asarray(tiebreak)
    ranker._order = np.argsort(-ranker.tiebreak)
    return ranker


def test_rank_counts_higher_scores_and_breaks_ties_by_fixed_order() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1])
    ranker = ranker_with([0.2, 0.0, 0.7, 0.0])
    assert ranker.rank(scores, 1) == 1
    assert ranker.rank(scores, 2) == 2  # wins the tie with item 0
    assert ranker.rank(scores, 0) == 3
    assert ranker.rank(scores, 3) == 4
    assert list(ranker.top(scores, 3)) == [1, 2, 0]


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.integers(0, 4, 300).astype(float),  # many ties everywhere
        lambda rng: np.where(rng.random(300) < 0.03, rng.random(300), 0.0),  # sparse, < k > 0
        lambda rng: np.where(rng.random(300) < 0.3, rng.random(300), 0.0),  # sparse, > k > 0
        lambda rng: rng.normal(size=300),  # dense with negatives (factor models)
        lambda rng: -rng.integers(0, 3, 300).astype(float),  # only non-positive, tied
    ],
)
def test_top_agrees_with_rank(make: Callable[[np.random.Generator], np.ndarray]) -> None:
    scores = make(np.random.default_rng(3))
    ranker = Ranker(300, seed=5)
    top = ranker.top(scores, 20)
    assert len(top) == 20
    assert [ranker.rank(scores, int(i)) for i in top] == list(range(1, 21))


def test_empty_metrics_are_zero() -> None:
    out = RankingMetrics(k=20, n_catalogue=0).summary()
    assert out == {"hr": 0.0, "mrr": 0.0, "ndcg": 0.0, "coverage": 0.0}
