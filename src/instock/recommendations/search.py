"""Choosing the hybrid for one log, within a time budget, on its validation split (pure).

The base configuration (the default components; ALS with the alpha `tune_als` chose) scores
every sampled validation target once (`tuning.collect`), and its blend weights are tuned. Then,
while the budget lasts, one component at a time is replaced by a variant with other
hyper-parameters (`VARIANTS`, the most promising first): the variant is fitted, re-scores that
component's row at the candidates already collected (`tuning.rescored`), the weights are
re-tuned from the current ones, and the variant is kept if validation HR@k + MRR@k gains at
least MIN_GAIN. Which components are used at all is the weights' business: a weight of 0 drops
a component.

Before the variants, when `offer_neural` (the offline evaluation; a serving refit does not) and
PyTorch is installed, the neural sequential component (`neural.GRU4Rec`) is trained on a share
of the budget, added as one more row at the collected candidates, and kept on the same terms:
only if validation HR@k + MRR@k gains at least MIN_GAIN. `Chosen.neural` says what happened.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instock.recommendations import neural
from instock.recommendations.comparison import constructor_arguments, hyper_parameters
from instock.recommendations.data import IntArray
from instock.recommendations.latent import DEFAULT_ALS_ALPHA
from instock.recommendations.model import Component, Hybrid, default_components
from instock.recommendations.protocol import Progress, Split
from instock.recommendations.tuning import (
    Candidates,
    added,
    blended_ranks,
    collect,
    objective,
    rescored,
    tune_weights,
)

DEFAULT_BUDGET_SECONDS = 120.0
# Rounds of the weight search for a variant: it starts from tuned weights, so few are needed.
VARIANT_ROUNDS = 2
# A variant is kept only if validation HR@k + MRR@k gains at least this much: on a few thousand
# targets smaller gains are noise, and chasing them trades the test's MRR for validation HR.
MIN_GAIN = 0.001
# The neural component's share of the budget (its epochs stop within it), and the least time
# worth training it in: less gives a model that cannot earn its place.
NEURAL_SHARE = 0.3
NEURAL_MIN_SECONDS = 5.0
NOT_IN_SERVING = "not offered by a serving refit (offline evaluation only)"
NO_TORCH = "PyTorch is not installed (`make neural`)"

# (component, changed hyper-parameters): the ones the session-rec benchmark found to matter
# most first (sequential rules' steps, session-kNN's neighbours), then ALS's size, co-occurrence
# limited to a window and the neighbourhood's recency weighting.
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sequential", {"steps": 5}),
    ("sequential", {"steps": 20}),
    ("sknn", {"k": 50}),
    ("sknn", {"k": 300}),
    ("als", {"factors": 128}),
    ("als", {"factors": 32}),
    ("cooccurrence", {"window": 5}),
    ("sequential_ctx", {"steps": 20}),
    ("sknn", {"proximity": 1.0}),
    ("sknn", {"decay": 0.8}),
    ("sequential", {"pruning": 0}),
    ("als", {"regularization": 1.0}),
)


@dataclass
class Chosen:
    """The configuration chosen on validation: the hyper-parameters changed from the defaults
    per component, the blend weights, and what the search tried."""

    changes: dict[str, dict[str, Any]]
    weights: dict[str, float]
    validation_objective: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    budget_spent: bool = False
    # offered, tried, kept, weight, hyper_parameters, the validation objective with and
    # without it and of it alone, training seconds; or why it was not offered or not tried
    neural: dict[str, Any] = field(
        default_factory=lambda: {"offered": False, "reason": NOT_IN_SERVING})

    def components(self, time_span: float, als_alpha: float) -> dict[str, Component]:
        made = configured(time_span, self.changes, als_alpha)
        if self.neural.get("kept"):
            made[neural.NAME] = neural.GRU4Rec(**self.neural["hyper_parameters"])
        return made


def variant(component: Component, change: Mapping[str, Any]) -> Component:
    """A new, unfitted component of the same kind with some hyper-parameters changed."""
    made: Component = type(component)(**{**constructor_arguments(component), **change})
    return made


def configured(time_span: float, changes: Mapping[str, Mapping[str, Any]],
               als_alpha: float = DEFAULT_ALS_ALPHA) -> dict[str, Component]:
    """Unfitted default components with some hyper-parameters changed, for a log of this time
    span (decays are relative to it) and with ALS's alpha."""
    return {name: variant(c, changes[name]) if name in changes else c
            for name, c in default_components(time_span, als_alpha).items()}


def _value(weights: Mapping[str, float], names: list[str]) -> np.ndarray:
    return np.array([weights.get(name, 0.0) for name in names])


def choose(
    tune: Split,
    positions: IntArray,
    k: int,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    progress: Progress | None = None,
    fitted: Mapping[str, Component] | None = None,
    started: float | None = None,
    offer_neural: bool = False,
) -> Chosen:
    """The hybrid for this log, chosen on `positions` of the validation split `tune`.

    `fitted` components (already fitted on `tune.train`) replace default ones of the same name.
    The budget counts from `started` (perf_counter; default now): the base configuration is
    always tuned, the neural component (`offer_neural`) and variants only while time is left.
    """
    began = time.perf_counter() if started is None else started
    components: dict[str, Component] = {**default_components(tune.time_span), **(fitted or {})}
    changes: dict[str, dict[str, Any]] = {}
    if not len(positions):
        return Chosen(changes, dict.fromkeys(components, 1.0), 0.0,
                      neural=_untried(offer_neural, "no validation targets"))
    train = tune.train
    for name, model in components.items():
        if name not in (fitted or {}):
            model.fit(train)
    cands = collect(Hybrid(components), tune, positions, progress=progress)
    weights = tune_weights(cands, k)
    best = objective(blended_ranks(cands, _value(weights, cands.names)), k)
    trials: list[dict[str, Any]] = [{"component": None, "change": {}, "objective": round(best, 4),
                                     "kept": True}]
    report = _untried(offer_neural, "")
    if report["offered"]:
        left = budget_seconds - (time.perf_counter() - began)
        share = min(NEURAL_SHARE * budget_seconds, left)
        cands, weights, best, report = _try_neural(tune, positions, k, cands, weights, best,
                                                   share, progress)
        if report.get("tried"):
            trials.append({"component": neural.NAME, "change": report["hyper_parameters"],
                           "objective": report["validation_objective_with"],
                           "kept": report["kept"]})
    spent = False
    todo = [(name, change) for name, change in VARIANTS if name in components]
    for done, (name, change) in enumerate(todo, start=1):
        if time.perf_counter() - began >= budget_seconds:
            spent = True
            break
        trial = variant(components[name], change)
        trial.fit(train)
        trial_cands = rescored(cands, name, trial, tune, positions)
        trial_weights = tune_weights(trial_cands, k, rounds=VARIANT_ROUNDS, start=weights)
        value = objective(blended_ranks(trial_cands, _value(trial_weights, cands.names)), k)
        kept = value >= best + MIN_GAIN
        trials.append({"component": name, "change": dict(change), "objective": round(value, 4),
                       "kept": kept})
        if kept:
            components[name], cands, weights, best = trial, trial_cands, trial_weights, value
            changes[name] = {**changes.get(name, {}), **change}
        if progress is not None:
            progress("search: component variants", done, len(todo))
    return Chosen(changes, weights, round(best, 4), trials,
                  round(time.perf_counter() - began, 2), spent, report)


def _untried(offer: bool, reason: str) -> dict[str, Any]:
    """The neural report before (or instead of) a try: whether it is offered at all, and why
    not."""
    if not offer:
        return {"offered": False, "reason": NOT_IN_SERVING}
    if not neural.available():
        return {"offered": False, "reason": NO_TORCH}
    return {"offered": True, "tried": False, "kept": False, "reason": reason}


def _try_neural(tune: Split, positions: IntArray, k: int, cands: Candidates,
                weights: dict[str, float], best: float, seconds: float,
                progress: Progress | None
                ) -> tuple[Candidates, dict[str, float], float, dict[str, Any]]:
    """The neural component trained for at most `seconds`, added to the candidates' scores,
    the weights tuned again from the current ones; kept only if validation gains MIN_GAIN.

    Returns the candidates, weights and validation objective to go on with (unchanged unless
    kept) and the report."""
    if seconds < NEURAL_MIN_SECONDS:
        return cands, weights, best, _untried(True, f"budget left ({max(seconds, 0.0):.1f} s) "
                                              f"below {NEURAL_MIN_SECONDS:g} s")
    model = neural.GRU4Rec(max_seconds=seconds)
    if progress is not None:
        model.progress = lambda done, total: progress(f"search: {neural.NAME} epochs", done,
                                                      total)
    model.fit(tune.train)
    trial = added(cands, neural.NAME, model, tune, positions)
    trial_weights = tune_weights(trial, k, start=weights)
    value = objective(blended_ranks(trial, _value(trial_weights, trial.names)), k)
    alone = objective(blended_ranks(trial, _value({neural.NAME: 1.0}, trial.names)), k)
    kept = value >= best + MIN_GAIN and trial_weights[neural.NAME] > 0
    # what a refit trains: the epochs done within the share, then no time limit
    final = variant(model, {"epochs": max(model.epochs_done, 1), "max_seconds": None})
    report = {"offered": True, "tried": True, "kept": kept,
              "weight": trial_weights[neural.NAME] if kept else 0.0,
              "hyper_parameters": hyper_parameters(final),
              "validation_objective_with": round(value, 4),
              "validation_objective_without": round(best, 4),
              "validation_objective_alone": round(alone, 4),
              "train_seconds": model.fit_seconds, "share_seconds": round(seconds, 2)}
    if kept:
        return trial, trial_weights, value, report
    return cands, weights, best, report
