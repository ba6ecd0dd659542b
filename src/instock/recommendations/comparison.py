"""How sure a comparison is: bootstrap intervals of each model's HR@k and MRR@k, the paired
difference between instock's hybrid and the best baseline, and the configuration the hybrid
chose for the log (pure: NumPy only).

"Wins" means the 95% interval of the paired difference lies above 0: the targets are
resampled together for both models, so what the interval measures is the difference on the
same targets, not two independent noises.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from instock.recommendations.metrics import bootstrap_intervals, per_target
from instock.recommendations.model import Component

METRICS = ("hr", "mrr")  # the rows of metrics.per_target, in order
RESAMPLES = 1000


def intervals(ranks: list[int], k: int, resamples: int = RESAMPLES) -> dict[str, list[float]]:
    """`hr_ci` and `mrr_ci`: the 95% bootstrap intervals of one model's HR@k and MRR@k."""
    bounds = bootstrap_intervals(per_target(ranks, k), resamples)
    return {f"{metric}_ci": _rounded(bounds[row]) for row, metric in enumerate(METRICS)}


def versus_best_baseline(ranks: Mapping[str, list[int]], ours: str, k: int,
                         resamples: int = RESAMPLES) -> dict[str, Any]:
    """For HR@k and MRR@k: the best baseline by that metric, our mean minus its mean on the
    same targets, the 95% interval of that difference, and whether it lies above 0."""
    mine = per_target(ranks[ours], k)
    theirs = {name: per_target(r, k) for name, r in ranks.items() if name != ours}
    if not theirs:
        return {}
    report: dict[str, Any] = {}
    for row, metric in enumerate(METRICS):
        best = max(sorted(theirs), key=lambda name: float(theirs[name][row].mean()))
        difference = mine[row] - theirs[best][row]
        [bounds] = bootstrap_intervals(difference[np.newaxis, :], resamples)
        report[metric] = {"baseline": best, "difference": round(float(difference.mean()), 4),
                          "ci": _rounded(bounds), "wins": bool(bounds[0] > 0)}
    return report


def chosen_configuration(components: Mapping[str, Component], weights: Mapping[str, float],
                         **searched: Any) -> dict[str, Any]:
    """What the hybrid uses on this log: its components with their blend weights and
    hyper-parameters (each constructor argument's value), and what else was searched."""
    used = {name: c for name, c in components.items() if weights.get(name, 0) > 0}
    return {"components": sorted(used),
            "weights": {name: weights[name] for name in sorted(used)},
            "hyper_parameters": {name: hyper_parameters(c) for name, c in sorted(used.items())},
            **searched}


def hyper_parameters(component: Any) -> dict[str, Any]:
    """The component's constructor arguments as it keeps them (JSON-ready)."""
    return {name: _plain(value) for name, value in constructor_arguments(component).items()}


def constructor_arguments(component: object) -> dict[str, Any]:
    """The component's constructor arguments as it keeps them (a variant changes some)."""
    names = [p for p in inspect.signature(type(component).__init__).parameters if p != "self"]
    return {name: getattr(component, name) for name in names if hasattr(component, name)}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no infinity: "inf"
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return getattr(value, "__name__", None) or repr(value)


def _rounded(bounds: Any) -> list[float]:
    return [round(float(bounds[0]), 4), round(float(bounds[1]), 4)]
