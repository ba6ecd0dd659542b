"""The baselines reported beside instock: plain configurations of its own models and of the
`implicit` ALS factorisation (`latent.py`), see `baseline_models`; and ALS's tuning.
"""

from __future__ import annotations

from instock.recommendations.data import IntArray
from instock.recommendations.latent import ALS_ALPHAS, DEFAULT_ALS_ALPHA, LatentFactors
from instock.recommendations.model import CoOccurrence, Recommender, SequentialRules, Trending
from instock.recommendations.protocol import Progress, Split, evaluate_model


def tune_als(
    split: Split,
    positions: IntArray,
    k: int,
    alphas: tuple[float, ...] = ALS_ALPHAS,
    progress: Progress | None = None,
) -> tuple[LatentFactors | None, dict[str, float]]:
    """Pick ALS's confidence weight alpha on validation targets, as the hybrid's weights are.

    The baseline gets the same chance to adapt to a shop as instock's hybrid; alpha matters most
    (implicit's default of 1 is far too low for click logs, the paper's 40 can be too high).
    Returns the best model, fitted on the split's training part (the hybrid's ALS component
    tunes its weight with it rather than fitting it again), or None without targets.
    """
    if not len(positions):
        return None, {}
    train = split.train
    scores: dict[str, float] = {}
    fitted: dict[float, LatentFactors] = {}
    for alpha in alphas:
        model = fitted[alpha] = LatentFactors(alpha=alpha)
        model.fit(train)
        m = evaluate_model(model, split, positions, k, f"tuning: ALS alpha={alpha:g}", progress)
        scores[f"{alpha:g}"] = round(m["hr"] + m["mrr"], 4)
    return fitted[max(alphas, key=lambda a: scores[f"{a:g}"])], scores


def baseline_models(als_alpha: float = DEFAULT_ALS_ALPHA) -> dict[str, Recommender]:
    """The baselines reported beside instock, configured as in the session-rec benchmark."""
    return {
        "popularity": Trending(),
        "cooccurrence": CoOccurrence(window=None, context_size=1),
        "sequential_rules": SequentialRules(steps=10, context_size=1),
        "als": LatentFactors(alpha=als_alpha),
    }
