"""Tuning the hybrid's blend weights on a validation split (pure).

Scoring every validation target with every component once, on the union of each component's
top candidates (as serving does), turns one evaluation of a weight vector into a few vector
operations; a coordinate search over the weights then costs seconds, not a re-run per trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from instock.recommendations.data import FloatArray, IntArray
from instock.recommendations.model import CANDIDATES, Component, Hybrid, normalise
from instock.recommendations.protocol import Progress, Split

FACTORS = (0.0, 0.25, 0.5, 0.7, 1.4, 2.0, 4.0)


@dataclass
class Candidates:
    """Per-target candidate items with each component's normalised score.

    Column j belongs to target segment[j]; target_col[t] is the column of target t's true item.
    """

    names: list[str]
    scores: FloatArray  # (n_components, n_columns)
    segment: IntArray
    target_col: IntArray
    n_items: int
    items: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))  # per column

    @property
    def n_targets(self) -> int:
        return len(self.target_col)


def collect(
    hybrid: Hybrid,
    split: Split,
    positions: IntArray,
    depth: int = CANDIDATES,
    progress: Progress | None = None,
) -> Candidates:
    """Score each target with every (fitted) component; keep each one's top `depth` items."""
    n_cat = split.n_train_items
    blocks, segs, tcols, items = [], [], [], []
    offset = 0
    for t, pos in enumerate(positions):
        ctx = split.context_at(int(pos))
        target = int(split.log.item[pos])
        opinions = hybrid.opinions(ctx, weighted_only=False)
        tops = hybrid.candidates(opinions, depth)
        cand = np.union1d(tops[tops < n_cat], [target])
        blocks.append(hybrid.component_scores(opinions, cand).astype(np.float32))
        segs.append(np.full(len(cand), t))
        items.append(cand.astype(np.int64))
        tcols.append(offset + int(np.searchsorted(cand, target)))
        offset += len(cand)
        if progress is not None and ((t + 1) % 200 == 0 or t + 1 == len(positions)):
            progress("tuning: scoring validation targets", t + 1, len(positions))
    m = len(hybrid.components)
    return Candidates(
        names=list(hybrid.components),
        scores=np.hstack(blocks) if blocks else np.zeros((m, 0), np.float32),
        segment=np.concatenate(segs) if segs else np.zeros(0, np.int64),
        target_col=np.asarray(tcols, np.int64),
        n_items=n_cat,
        items=np.concatenate(items) if items else np.zeros(0, np.int64),
    )


def blended_ranks(c: Candidates, weights: FloatArray) -> FloatArray:
    """Rank of each target under the blend; ties count half, as random tie-breaking would."""
    return _ranks(c, weights.astype(np.float32) @ c.scores)


def _ranks(c: Candidates, blend: FloatArray) -> FloatArray:
    """`blended_ranks` from the blended score of every column."""
    mine = blend[c.target_col][c.segment]
    n = c.n_targets
    ahead = np.bincount(c.segment, weights=blend > mine, minlength=n)
    tied = np.bincount(c.segment, weights=blend == mine, minlength=n) - 1.0
    ranks = 1.0 + ahead + 0.5 * tied
    # A target scoring 0 also ties with every item outside the candidate lists.
    outside = c.n_items - np.bincount(c.segment, minlength=n)
    return np.where(blend[c.target_col] > 0, ranks, ranks + 0.5 * outside)


def objective(ranks: FloatArray, k: int) -> float:
    """HR@k + MRR@k: the goal is to win on both, so the tuner optimises their sum."""
    if not len(ranks):
        return 0.0
    hit = ranks <= k
    return float(hit.mean() + np.where(hit, 1.0 / ranks, 0.0).mean())


def tune_weights(
    c: Candidates, k: int, rounds: int = 6, start: dict[str, float] | None = None
) -> dict[str, float]:
    """Coordinate search over non-negative weights, multiplicative steps, from equal weights
    (or from `start`, e.g. the weights of a configuration that differs in one component)."""
    # Components silent on every validation target (no attributes, no carts...) get 0:
    # their weight cannot be learnt, and a live shop should not trust them blindly.
    w = (c.scores > 0).any(axis=1).astype(float) if c.scores.size else np.ones(len(c.names))
    if not w.any():
        return dict.fromkeys(c.names, 1.0)
    if start is not None:
        w = w * np.array([start.get(name, 1.0) for name in c.names])
    blend = w.astype(np.float32) @ c.scores
    best = objective(_ranks(c, blend), k)
    for _ in range(rounds):
        improved = False
        for j in range(len(w)):
            base = w[j] if w[j] > 0 else 0.1 * max(float(w.max()), 1e-9)
            for f in FACTORS:
                trial = w.copy()
                trial[j] = base * f
                if not trial.any():
                    continue
                # one weight changes: one row updates the blend (not a product with all rows)
                trial_blend = blend + np.float32(trial[j] - w[j]) * c.scores[j]
                value = objective(_ranks(c, trial_blend), k)
                if value > best + 1e-9:
                    best, w, blend, improved = value, trial, trial_blend, True
        if not improved:
            break
    w = w / w.max()
    return {name: round(float(x), 4) for name, x in zip(c.names, w, strict=True)}


def rescored(c: Candidates, name: str, component: Component, split: Split,
             positions: IntArray) -> Candidates:
    """`c` with one component's row replaced by another (fitted) component's scores at the same
    candidates: a variant of one component costs one opinion per target, not a collect.

    The candidates stay those the original components proposed; a variant of the same model
    proposes mostly the same items, and the final evaluation ranks what the chosen hybrid
    itself proposes.
    """
    scores = c.scores.copy()
    scores[c.names.index(name)] = _row(c, component, split, positions)
    return replace(c, scores=scores)


def added(c: Candidates, name: str, component: Component, split: Split,
          positions: IntArray) -> Candidates:
    """`c` with one more (fitted) component's row, scored at the same candidates (as
    `rescored`: the items it alone would propose are left out of tuning, not of evaluation)."""
    row = _row(c, component, split, positions)
    return replace(c, names=[*c.names, name], scores=np.vstack([c.scores, row[np.newaxis]]))


def _row(c: Candidates, component: Component, split: Split,
         positions: IntArray) -> npt.NDArray[np.float32]:
    """A component's normalised scores at every column of `c`."""
    row = np.zeros(c.scores.shape[1], np.float32)
    bounds = np.r_[0, np.cumsum(np.bincount(c.segment, minlength=c.n_targets))]
    for t, pos in enumerate(positions):
        lo, hi = int(bounds[t]), int(bounds[t + 1])
        opinion = component.opinion(split.context_at(int(pos)))
        row[lo:hi] = normalise(opinion.at(c.items[lo:hi]))
    return row
