"""The implicit-ALS baseline: our cached fold-in equals implicit's own, and it ranks sensibly."""

import numpy as np
import scipy.sparse as sp

from instock.recommendations.baselines import baseline_models
from instock.recommendations.data import Context, EventLog
from instock.recommendations.latent import LatentFactors


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
    model = LatentFactors(factors=4, alpha=10.0, iterations=10)
    model.fit(block_log())
    scores = model.score(Context.of([5, 6]))
    assert set(np.argsort(-scores)[:4].tolist()) == {4, 5, 6, 7}
    assert np.allclose(model.score(Context.of([])), 0.0)


def test_fold_in_matches_implicit_recalculate_user() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    log = block_log()
    ours = LatentFactors(factors=4, alpha=10.0, regularization=0.1, iterations=5)
    ours.fit(log)
    theirs = AlternatingLeastSquares(factors=4, alpha=10.0, regularization=0.1)
    theirs.item_factors = ours._factors.copy()
    row = sp.csr_matrix((np.array([2.0, 1.0], np.float32), ([0, 0], [1, 2])), shape=(1, 8))
    expected = np.asarray(theirs.recalculate_user(0, row)).ravel()
    np.testing.assert_allclose(ours._fold_in(np.array([1, 1, 2])), expected, rtol=1e-4)


def test_baselines_are_the_four_named_in_the_issue() -> None:
    assert list(baseline_models()) == ["popularity", "cooccurrence", "sequential_rules", "als"]


def test_als_opinion_agrees_with_its_dense_scores() -> None:
    """As a hybrid component: `top` is the best of the dense scores, `at` reads them, items
    newer than the model score 0, and an empty context has no opinion."""
    model = LatentFactors(factors=4, alpha=10.0, iterations=10)
    model.fit(block_log())
    opinion = model.opinion(Context.of([5, 6]))
    dense = opinion.dense(8)
    assert set(opinion.top(3).tolist()) == set(np.argsort(-dense)[:3].tolist())
    np.testing.assert_allclose(opinion.at(np.array([7, 0, 9])), [dense[7], dense[0], 0.0],
                               rtol=1e-5)
    assert len(model.opinion(Context.of([])).top(5)) == 0
    assert len(model.opinion(Context.of([42])).top(5)) == 0  # unknown items only


def test_als_is_a_hybrid_component_served_with_the_others() -> None:
    from instock.recommendations.engine import STARTING_WEIGHTS, serving_components
    from instock.recommendations.model import default_components

    assert isinstance(default_components(1.0)["als"], LatentFactors)
    assert isinstance(serving_components(1.0)["als"], LatentFactors)
    assert set(STARTING_WEIGHTS) == set(default_components(1.0))


def test_a_pooled_als_finds_its_best_among_the_longest_factors_and_scores_any_item() -> None:
    """The served component looks for its own candidates among the `pool` items with the
    longest factors (the most-seen: cheap on a big catalogue), still scores any item asked
    for exactly, and is the baseline itself when the catalogue fits in the pool."""
    rng = np.random.default_rng(7)
    factors = rng.normal(size=(50, 4)).astype(np.float32)
    factors[[3, 11, 27]] *= 10  # the three longest
    pooled, exact = LatentFactors(factors=4, pool=3), LatentFactors(factors=4)
    for model in (pooled, exact):
        model.load_factors(factors)
    context = Context.of([3, 11])
    opinion, dense = pooled.opinion(context), exact.opinion(context).dense(50)
    assert set(opinion.top(10).tolist()) <= {3, 11, 27}
    assert set(opinion.top(10).tolist()) == {i for i in (3, 11, 27) if dense[i] > 0}
    np.testing.assert_allclose(opinion.at(np.array([0, 27, 49])), dense[[0, 27, 49]],
                               rtol=1e-5)
    roomy = LatentFactors(factors=4, pool=50)
    roomy.load_factors(factors)
    assert set(roomy.opinion(context).top(5).tolist()) == set(
        exact.opinion(context).top(5).tolist())


def test_the_served_als_is_pooled_and_the_baseline_is_not() -> None:
    from instock.recommendations.latent import SERVING_POOL
    from instock.recommendations.model import default_components

    served = default_components(1.0)["als"]
    assert isinstance(served, LatentFactors) and served.pool == SERVING_POOL
    baseline = baseline_models()["als"]
    assert isinstance(baseline, LatentFactors) and baseline.pool is None
