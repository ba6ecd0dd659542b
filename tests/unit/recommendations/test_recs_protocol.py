"""The evaluation protocol and the weight tuner on hand-made logs."""

import numpy as np
import pytest

from instock.recommendations.data import CART, PURCHASE, VIEW, Context
from instock.recommendations.model import CoOccurrence, Hybrid, Trending
from instock.recommendations.protocol import (
    Split,
    evaluate_model,
    make_split,
    price_bands,
    target_positions,
    time_split,
)
from instock.recommendations.tuning import Candidates, blended_ranks, collect, tune_weights


def small_split() -> Split:
    # seq "a" and "b" are training sessions; "c" and "d" are held out.
    rows = [
        ("a", "x", 1, VIEW, 1),
        ("a", "y", 2, VIEW, 1),
        ("b", "x", 3, VIEW, 1),
        ("b", "y", 4, CART, 1),
        ("c", "x", 10, VIEW, 0),
        ("c", "new", 11, VIEW, 0),  # item unseen in training: never a target
        ("c", "y", 12, PURCHASE, 0),
        ("d", "y", 13, VIEW, 0),  # first event of its sequence: never a target
    ]
    seq, item, when, kind, train = map(list, zip(*rows, strict=True))
    return make_split(seq, item, when, kind, np.asarray(train, bool))


def test_split_codes_training_items_first_and_picks_targets() -> None:
    split = small_split()
    assert split.n_train_items == 2
    assert split.log.n_items == 3
    assert int(split.is_train.sum()) == 4
    assert split.train.n_items == 2
    nxt = target_positions(split)
    # seq c: "new" (unseen) is skipped, "y" is a target; seq d has no earlier event
    assert len(nxt) == 1
    assert split.log.item[nxt[0]] < split.n_train_items
    assert list(target_positions(split, purchase_only=True)) == list(nxt)


def test_training_context_counts_for_unsplit_logs() -> None:
    # one user: two training events, then one held-out event predicted from all three before it
    split = make_split(["u"] * 3, ["p", "q", "p"], [1, 2, 3], [VIEW] * 3, [True, True, False])
    pos = target_positions(split)
    assert list(pos) == [2]
    ctx = split.context_at(2)
    assert len(ctx) == 2 and list(ctx.items) == list(split.log.item[:2])


def test_time_split_uses_the_quantile_inclusively() -> None:
    t = np.arange(1, 11, dtype=float)
    mask = time_split(t, 0.8)
    assert mask.sum() == 8  # quantile 8.2 -> events 1..8
    assert time_split(np.zeros(0)).shape == (0,)


def test_price_bands() -> None:
    bands = price_bands([1.0, 2.0, 3.0, 4.0, float("nan"), 100.0], n_bands=2)
    assert list(bands) == [0, 0, 1, 1, -1, 1]


def test_evaluate_model_on_the_split() -> None:
    split = small_split()
    model = CoOccurrence()
    model.fit(split.train)
    out = evaluate_model(model, split, target_positions(split), k=1)
    assert out["hr"] == 1.0 and out["mrr"] == 1.0  # x -> y is the only rule
    assert out["coverage"] == pytest.approx(1 / 2)


def test_blended_ranks_by_hand() -> None:
    # two targets; component 0 ranks target 0 first, component 1 ranks target 1 first
    c = Candidates(
        names=["a", "b"],
        scores=np.array([[1.0, 0.5, 0.2, 1.0], [0.0, 1.0, 1.0, 0.1]]),
        segment=np.array([0, 0, 1, 1]),
        target_col=np.array([0, 2]),
        n_items=10,
    )
    np.testing.assert_allclose(blended_ranks(c, np.array([1.0, 0.0])), [1, 2])
    # target 0 now scores 0: behind column 1, tied with the 8 items outside the candidates
    np.testing.assert_allclose(blended_ranks(c, np.array([0.0, 1.0])), [1 + 1 + 0.5 * 8, 1])
    np.testing.assert_allclose(blended_ranks(c, np.array([1.0, 1.0])), [2, 1])  # 1.5 > 1.0
    zero = Candidates(["a"], np.array([[0.0, 1.0]]), np.array([0, 0]), np.array([0]), 10)
    np.testing.assert_allclose(blended_ranks(zero, np.array([1.0])), [1 + 1 + 0.5 * 8])


def test_tuner_finds_the_informative_component() -> None:
    rng = np.random.default_rng(0)
    n_targets, per = 300, 30
    good = rng.random((n_targets, per)) * 0.5
    good[:, 0] = 1.0  # column 0 is always the target and the "good" component knows it
    noise = rng.random((n_targets, per))
    c = Candidates(
        names=["noise", "good"],
        scores=np.vstack([noise.ravel(), good.ravel()]),
        segment=np.repeat(np.arange(n_targets), per),
        target_col=np.arange(n_targets) * per,
        n_items=100,
    )
    w = tune_weights(c, k=1)
    assert w["good"] == 1.0
    assert w["noise"] < 0.5


def test_collect_keeps_the_target_and_component_order() -> None:
    split = small_split()
    hybrid = Hybrid({"pop": Trending(), "co": CoOccurrence()})
    hybrid.fit(split.train)
    pos = target_positions(split)
    c = collect(hybrid, split, pos)
    assert c.names == ["pop", "co"]
    assert c.n_targets == 1
    assert c.scores[1, c.target_col[0]] == 1.0  # co-occurrence: y is x's only companion
    assert Context.of([1]).kinds[0] == VIEW and CART != VIEW
