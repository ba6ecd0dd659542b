"""The neural sequential component (GRU4Rec on PyTorch): it learns sequences, the tuner keeps it
only when it raises validation HR+MRR, and without PyTorch it is simply not offered.

Tests that train need torch (`make neural`); the one about its absence runs everywhere.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from instock.recommendations import neural
from instock.recommendations.data import Context, EventLog
from instock.recommendations.evaluate import evaluate
from instock.recommendations.model import Trending
from instock.recommendations.protocol import Split, evaluate_model, make_split, target_positions
from instock.recommendations.search import MIN_GAIN, NO_TORCH, NOT_IN_SERVING, choose

N_ITEMS = 60


def routes_split(seed: int = 0, n_sessions: int = 1200) -> Split:
    """Sessions that walk one of a few fixed routes through a small catalogue. An item lies on
    several routes with a different successor on each, so the next item depends on more than
    the last one; popularity knows nothing of it."""
    rng = np.random.default_rng(seed)
    routes = [rng.permutation(N_ITEMS)[:15] for _ in range(8)]
    seq, item, when = [], [], []
    t = 0.0
    for s in range(n_sessions):
        route = routes[int(rng.integers(len(routes)))]
        start = int(rng.integers(len(route) - 4))
        for j in range(start, min(len(route), start + int(rng.integers(4, 10)))):
            seq.append(s)
            item.append(int(route[j]) if rng.random() > 0.05 else int(rng.integers(N_ITEMS)))
            t += 1.0
            when.append(t)
    is_train = np.arange(len(seq)) < int(0.8 * len(seq))
    return make_split(seq, item, when, np.zeros(len(seq), np.int64), is_train)


def test_windows_cut_sequences_into_overlapping_runs() -> None:
    log = EventLog.build([0] * 5 + [1] + [2] * 2, [1, 2, 3, 4, 5, 6, 7, 8], range(8))
    runs = neural.windows(log, window=2)
    # items + 1, padded with 0; the one-event sequence teaches nothing
    assert runs.tolist() == [[2, 3, 4], [4, 5, 6], [8, 9, 0]]


def test_gru4rec_alone_beats_popularity_on_a_sequential_log() -> None:
    pytest.importorskip("torch")
    split = routes_split()
    positions = target_positions(split)
    ours = neural.GRU4Rec(epochs=8, factors=32, batch_size=32)
    ours.fit(split.train)
    popular = Trending()
    popular.fit(split.train)
    mine = evaluate_model(ours, split, positions, k=5)
    theirs = evaluate_model(popular, split, positions, k=5)
    assert mine["hr"] > 2 * theirs["hr"] and mine["mrr"] > 2 * theirs["mrr"]
    assert mine["hr"] > 0.6
    # the opinion agrees with the dense scores, and ranks its best items first
    ctx = split.context_at(int(positions[0]))
    dense = ours.score(ctx)
    top = ours.opinion(ctx).top(5)
    assert dense.max() == 1.0 and set(top) == set(np.argsort(-dense)[:5])
    assert np.allclose(ours.score(ctx, top), dense[top])


def test_the_sampled_loss_learns_too() -> None:
    """Catalogues larger than `negatives` train on sampled items (logQ-corrected)."""
    pytest.importorskip("torch")
    split = routes_split()
    positions = target_positions(split)
    ours = neural.GRU4Rec(epochs=8, factors=32, batch_size=32, negatives=16)
    ours.fit(split.train)
    assert evaluate_model(ours, split, positions, k=5)["hr"] > 0.5


def test_training_is_deterministic_under_a_seed() -> None:
    pytest.importorskip("torch")
    log = routes_split(n_sessions=300).train
    ctx = Context.of([3, 7, 11])
    scores = []
    for seed in (0, 0, 1):
        model = neural.GRU4Rec(epochs=2, factors=16, seed=seed)
        model.fit(log)
        scores.append(model.score(ctx))
    assert np.array_equal(scores[0], scores[1])
    assert not np.array_equal(scores[0], scores[2])


def test_a_time_limit_stops_epochs_and_the_refit_trains_as_many() -> None:
    pytest.importorskip("torch")
    log = routes_split(n_sessions=300).train
    model = neural.GRU4Rec(epochs=10_000, factors=16, max_seconds=1.0)
    model.fit(log)
    assert 1 <= model.epochs_done < 10_000 and model.fit_seconds < 5.0


def test_small_logs_get_more_epochs_for_enough_updates() -> None:
    pytest.importorskip("torch")
    log = routes_split(n_sessions=300).train
    runs = len(neural.windows(log, 20))
    model = neural.GRU4Rec(factors=8, batch_size=16)
    model.fit(log)
    assert model.epochs_done * -(-runs // 16) >= neural.MIN_UPDATES
    assert neural.DEFAULT_EPOCHS < model.epochs_done < neural.MAX_EPOCHS
    # ... up to a limit: a log of a few sequences would take thousands
    tiny = EventLog.build([0, 0, 0, 1, 1], [0, 1, 2, 1, 2], range(5))
    model.fit(tiny)
    assert model.epochs_done == neural.MAX_EPOCHS


def test_the_tuner_keeps_it_only_when_validation_gains() -> None:
    pytest.importorskip("torch")
    split = routes_split(seed=1)
    # 30 s: the neural component trains on 9 s of it (NEURAL_SHARE), variants use the rest
    chosen = choose(split, target_positions(split), k=5, budget_seconds=30.0,
                    offer_neural=True)
    report = chosen.neural
    assert report["offered"] and report["tried"], report
    gain = report["validation_objective_with"] - report["validation_objective_without"]
    # the gain on validation is what decides (objectives are rounded to 4 places)
    assert report["kept"] == (gain >= MIN_GAIN - 1e-4)
    # on this log it earns its place: its order carries what rules over one item miss
    assert report["kept"], report
    assert chosen.weights[neural.NAME] == report["weight"] > 0
    trial = next(t for t in chosen.trials if t["component"] == neural.NAME)
    assert trial["kept"] and trial["objective"] == report["validation_objective_with"]
    # a refit trains as many epochs as the budget allowed, without a time limit
    made = chosen.components(split.time_span, 10.0)[neural.NAME]
    assert isinstance(made, neural.GRU4Rec) and made.max_seconds is None
    assert made.epochs == report["hyper_parameters"]["epochs"] >= 1


def test_a_serving_refit_does_not_offer_it() -> None:
    split = routes_split(n_sessions=300)
    chosen = choose(split, target_positions(split), k=5, budget_seconds=0.0)
    assert chosen.neural == {"offered": False, "reason": NOT_IN_SERVING}
    assert neural.NAME not in chosen.weights
    assert neural.NAME not in chosen.components(split.time_span, 10.0)


def test_without_torch_it_is_not_offered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed: import fails
    assert not neural.available()
    split = routes_split(n_sessions=300)
    chosen = choose(split, target_positions(split), k=5, budget_seconds=60.0,
                    offer_neural=True)
    assert chosen.neural == {"offered": False, "reason": NO_TORCH}
    assert neural.NAME not in chosen.weights
    # and evaluate reports no row of its own, and says why in `chosen`
    rows = ["1,10,1,pv,1", "1,11,1,pv,2", "1,12,2,pv,3", "2,10,1,pv,4", "2,11,1,pv,5",
            "2,12,2,cart,6", "3,10,1,pv,7", "3,11,1,pv,8", "3,12,2,pv,9", "1,10,1,pv,10",
            "1,11,1,pv,11", "2,10,1,pv,12", "2,11,1,buy,13"]
    path = tmp_path / "ub.csv"
    path.write_text("\n".join(rows) + "\n")
    report = evaluate(path, "taobao", k=5, budget_seconds=10.0)
    assert neural.NAME not in report["models"]
    assert report["chosen"]["neural"] == {"offered": False, "reason": NO_TORCH}
