"""Offline evaluation: load a log, tune the hybrid on validation data, compare with baselines.

Protocols are those of ../shared/data/README.md (see `protocol.py`). Nothing is tuned on the
evaluation targets: the hybrid's weights come from a split of the training data only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from instock.recommendations import comparison, neural
from instock.recommendations.baselines import baseline_models, tune_als
from instock.recommendations.data import IntArray
from instock.recommendations.latent import DEFAULT_ALS_ALPHA
from instock.recommendations.logs import Dataset, load
from instock.recommendations.model import Component, Hybrid, Recommender
from instock.recommendations.protocol import (
    Progress,
    Split,
    rank_targets,
    target_positions,
)
from instock.recommendations.search import DEFAULT_BUDGET_SECONDS, Chosen, choose

# Below this many validation purchases the purchase tuning is noise; tune on next events instead.
MIN_TUNING_TARGETS = 30
# Validation targets used for tuning: enough for stable weights, bounded for run time.
MAX_TUNING_TARGETS = 5000
MAX_ALS_TUNING_TARGETS = 1000


def _sample(positions: IntArray, limit: int) -> IntArray:
    """At most `limit` targets, a fixed random subset (tuning cost grows with targets)."""
    if len(positions) <= limit:
        return positions
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(positions, limit, replace=False))


def validation_targets(tune: Split, target: str) -> tuple[IntArray, str]:
    """Validation targets of the requested kind, or next events when purchases are too few."""
    positions = target_positions(tune, purchase_only=target == "purchase")
    if target == "purchase" and len(positions) < MIN_TUNING_TARGETS:
        return target_positions(tune), "next"
    return positions, target


def tune_hybrid(
    tune: Split,
    positions: IntArray,
    k: int,
    progress: Progress | None = None,
    fitted: Mapping[str, Component] | None = None,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    started: float | None = None,
    offer_neural: bool = False,
) -> Chosen:
    """The hybrid's components, hyper-parameters and weights, chosen on the validation split of
    the training data within the budget (see `search.choose`; the neural component only when
    offered: the offline evaluation does, a serving refit does not)."""
    return choose(tune, _sample(positions, MAX_TUNING_TARGETS), k, budget_seconds, progress,
                  fitted, started, offer_neural)


def _tune(data: Dataset, target: str, k: int, budget_seconds: float,
          progress: Progress | None) -> tuple[Chosen, dict[str, Any]]:
    """Everything learnt from the validation split: ALS's alpha, then the hybrid (with that
    ALS as one of its components), all within the budget."""
    began = time.perf_counter()
    valid, tuned_on = validation_targets(data.tune, target)
    als_valid = _sample(valid, MAX_ALS_TUNING_TARGETS)
    als, als_scores = tune_als(data.tune, als_valid, k, progress=progress)
    chosen = tune_hybrid(data.tune, valid, k, progress, {"als": als} if als else None,
                         budget_seconds, began, offer_neural=True)
    return chosen, {
        "weights": chosen.weights,
        "validation_targets": len(valid),
        "tuned_on": tuned_on if len(valid) else "nothing (no validation targets)",
        "als_alpha": als.alpha if als else DEFAULT_ALS_ALPHA,
        "als_validation_hr_plus_mrr": als_scores,
        "seconds": round(time.perf_counter() - began, 2),
    }


def _run(
    models: dict[str, Recommender],
    split: Split,
    positions: IntArray,
    k: int,
    progress: Progress | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
    """Each model's metrics with their intervals, and the rank it gave each target."""
    results: dict[str, dict[str, Any]] = {}
    ranks: dict[str, list[int]] = {}
    train = split.train
    for name, model in models.items():
        began = time.perf_counter()
        model.fit(train)
        fit_seconds = round(time.perf_counter() - began, 2)
        began = time.perf_counter()
        ranked = rank_targets(model, split, positions, k, name, progress)
        ranks[name] = ranked.ranks
        results[name] = {**ranked.summary(), **comparison.intervals(ranked.ranks, k),
                         "seconds": round(time.perf_counter() - began, 2),
                         "fit_seconds": fit_seconds}
    return results, ranks


def evaluate(
    path: str | Path,
    fmt: str,
    k: int = 20,
    target: str = "next",
    progress: Progress | None = None,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
) -> dict[str, Any]:
    """Run the protocol for instock's hybrid and every baseline; returns the report as a dict.

    `budget_seconds` bounds the choice of the hybrid on validation data (`search.choose`)."""
    if target not in ("next", "purchase"):
        raise ValueError(f"unknown target {target!r}; expected next or purchase")
    data = load(path, fmt)
    split = data.final
    positions = target_positions(split, purchase_only=target == "purchase")
    # Scoring is many small matrix products: BLAS threads only add overhead there.
    with threadpool_limits(1, "blas"):
        chosen, tuning = _tune(data, target, k, budget_seconds, progress)
        weights = tuning.pop("weights")
        configured = chosen.components(split.time_span, tuning["als_alpha"])
        used = {n: c for n, c in configured.items() if weights[n] > 0}
        models = {"instock": Hybrid(used, weights), **baseline_models(tuning["als_alpha"]),
                  **neural.as_tried(chosen.neural)}
        results, ranks = _run(models, split, positions, k, progress)
    return {
        "dataset": data.name,
        "k": k,
        "target": target,
        "targets": len(positions),
        "models": results,
        # Is the hybrid's lead real? Its paired difference to the best baseline, per metric.
        "versus_best_baseline": comparison.versus_best_baseline(ranks, "instock", k),
        "chosen": comparison.chosen_configuration(
            used, weights, als_alpha=tuning["als_alpha"], tuned_on=tuning["tuned_on"],
            searched=chosen.trials, validation_objective=chosen.validation_objective,
            budget_seconds=budget_seconds, budget_spent=chosen.budget_spent,
            seconds=tuning["seconds"], neural=chosen.neural),
        "weights": weights,
        "tuning": tuning,
        "catalogue": split.n_train_items,
        "events": {"train": int(split.is_train.sum()), "held_out": int((~split.is_train).sum())},
        "skipped_rows": data.skipped,
        "skipped_examples": data.skipped_examples,
    }
