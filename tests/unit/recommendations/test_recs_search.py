"""Choosing the hybrid within a budget: variants of one component, kept only if they help."""

import numpy as np

from instock.recommendations.model import SequentialRules, SessionKNN
from instock.recommendations.protocol import Split, make_split, target_positions
from instock.recommendations.search import MIN_GAIN, VARIANTS, choose, configured, variant


def chain_split(seed: int = 0) -> Split:
    """Sessions walking a ring of items two steps at a time: the item two events back
    predicts the next one, so rules over more than one step are worth something."""
    rng = np.random.default_rng(seed)
    seq, item, when = [], [], []
    t = 0.0
    for s in range(400):
        start = int(rng.integers(40))
        for j in range(int(rng.integers(3, 8))):
            seq.append(s)
            item.append((start + 2 * j + int(rng.integers(2))) % 40)
            t += 1.0
            when.append(t)
    is_train = np.arange(len(seq)) < int(0.8 * len(seq))
    return make_split(seq, item, when, np.zeros(len(seq), np.int64), is_train)


def test_a_variant_changes_only_what_it_names() -> None:
    base = SessionKNN(k=100, decay=0.3, proximity=0.7)
    changed = variant(base, {"k": 50})
    assert isinstance(changed, SessionKNN) and changed is not base
    assert (changed.k, changed.decay, changed.proximity) == (50, 0.3, 0.7)
    assert all(name in configured(1.0, {}) for name, _ in VARIANTS)
    rules = configured(1.0, {"sequential": {"steps": 3}})["sequential"]
    assert isinstance(rules, SequentialRules) and rules.steps == 3


def test_no_budget_tunes_the_base_only_and_says_so() -> None:
    split = chain_split()
    chosen = choose(split, target_positions(split), k=5, budget_seconds=0.0)
    assert chosen.budget_spent and chosen.changes == {}
    assert [t["component"] for t in chosen.trials] == [None]
    assert max(chosen.weights.values()) == 1.0


def test_the_search_keeps_only_variants_that_improve_validation() -> None:
    split = chain_split()
    chosen = choose(split, target_positions(split), k=5, budget_seconds=600.0)
    assert not chosen.budget_spent
    assert len(chosen.trials) == 1 + len(VARIANTS)
    best = chosen.trials[0]["objective"]
    for trial in chosen.trials[1:]:
        # (objectives are rounded to 4 places in the report)
        if trial["kept"]:
            assert trial["objective"] >= best + MIN_GAIN - 1e-4
        else:
            assert trial["objective"] <= best + MIN_GAIN + 1e-4
        best = max(best, trial["objective"])
        if trial["kept"]:
            assert chosen.changes[trial["component"]].items() >= trial["change"].items()
    assert chosen.validation_objective == best
