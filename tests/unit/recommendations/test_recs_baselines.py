"""The implicit-ALS baseline: our cached fold-in equals implicit's own, and it ranks sensibly."""

import numpy as np
import scipy.sparse as sp

from instock.recommendations.baselines import ImplicitALS, baseline_models
from instock.recommendations.data import Context, EventLog


def block_log() -> EventLog:
    # sessions live in one of two item blocks: {0,1,2,3} or {4,5,6,7}
    rng = np.random.default_rng(1)
    seq, item = [], []
    for s in range(60):
        block = 4 * (s % 2)
        for i in rng.choice(4, size=3, replace=False):
            seq.append(s)
            item.append(block + int(i))
    return EventLog.build(seq, item, np.arange(len(seq)), None, 8)


def test_als_ranks_items_of_the_same_block_first() -> None:
    model = ImplicitALS(factors=4, alpha=10.0, iterations=10)
    model.fit(block_log())
    scores = model.score(Context.of([5, 6]))
    assert set(np.argsort(-scores)[:4].tolist()) == {4, 5, 6, 7}
    assert np.allclose(model.score(Context.of([])), 0.0)


def test_fold_in_matches_implicit_recalculate_user() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    log = block_log()
    ours = ImplicitALS(factors=4, alpha=10.0, regularization=0.1, iterations=5)
    ours.fit(log)
    theirs = AlternatingLeastSquares(factors=4, alpha=10.0, regularization=0.1)
    theirs.item_factors = ours._factors.copy()
    row = sp.csr_matrix((np.array([2.0, 1.0], np.float32), ([0, 0], [1, 2])), shape=(1, 8))
    expected = np.asarray(theirs.recalculate_user(0, row)).ravel()
    np.testing.assert_allclose(ours._fold_in(np.array([1, 1, 2])), expected, rtol=1e-4)


def test_baselines_are_the_four_named_in_the_issue() -> None:
    assert list(baseline_models()) == ["popularity", "cooccurrence", "sequential_rules", "als"]
