import math

import numpy as np
import pytest

from instock.recommendations.metrics import RankingMetrics, rank_of, tiebreak_order, top_k


def test_summary_matches_hand_computed_values() -> None:
    acc = RankingMetrics(k=20, n_catalogue=10)
    for rank, top in ((1, [0, 1]), (2, [1, 2]), (25, [3]), (4, [0])):
        acc.add(rank, np.asarray(top))
    out = acc.summary()
    assert out["hr"] == pytest.approx(3 / 4)
    assert out["mrr"] == pytest.approx((1 + 1 / 2 + 0 + 1 / 4) / 4)
    assert out["ndcg"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5)) / 4)
    assert out["coverage"] == pytest.approx(4 / 10)  # items 0..3 shown


def test_rank_counts_higher_scores_and_breaks_ties_by_fixed_order() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1])
    tiebreak = np.array([0.2, 0.0, 0.7, 0.0])
    assert rank_of(scores, 1, tiebreak) == 1
    assert rank_of(scores, 2, tiebreak) == 2  # wins the tie with item 0
    assert rank_of(scores, 0, tiebreak) == 3
    assert rank_of(scores, 3, tiebreak) == 4


def test_top_k_agrees_with_rank_of() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, 200).astype(float)  # many ties
    tiebreak = tiebreak_order(200)
    top = top_k(scores, 20, tiebreak)
    assert len(top) == 20
    assert [rank_of(scores, int(i), tiebreak) for i in top] == list(range(1, 21))


def test_empty_metrics_are_zero() -> None:
    out = RankingMetrics(k=20, n_catalogue=0).summary()
    assert out == {"hr": 0.0, "mrr": 0.0, "ndcg": 0.0, "coverage": 0.0}
