"""Ranking metrics for next-item evaluation (pure).

Ties are broken by a fixed pseudo-random order of the items, the same for every model: this is
session-rec's random tie-breaking made reproducible, and it stops a model that scores most items
0 from profiting from (or being punished by) item-id order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from instock.recommendations.events import FloatArray, IntArray


def tiebreak_order(n_items: int, seed: int = 0) -> FloatArray:
    """A fixed random priority per item, in [0, 1), used only among equal scores."""
    return np.random.default_rng(seed).random(n_items)


def rank_of(scores: FloatArray, target: int, tiebreak: FloatArray) -> int:
    """1-based rank of `target` among all scored items."""
    s = scores[target]
    ahead = scores > s
    tied = (scores == s) & (tiebreak > tiebreak[target])
    return 1 + int(np.count_nonzero(ahead | tied))


def top_k(scores: FloatArray, k: int, tiebreak: FloatArray) -> IntArray:
    """Indices of the k best items, best first, ties in tiebreak order."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)
    need = k - len(above)
    if need < len(tied):  # often most of the catalogue ties at 0: pick by tiebreak, no full sort
        tied = tied[np.argpartition(-tiebreak[tied], need - 1)[:need]]
    pool = np.r_[above, tied]
    order = np.lexsort((-tiebreak[pool], -scores[pool]))
    return pool[order].astype(np.int64)


@dataclass
class RankingMetrics:
    """Accumulates the rank of each target and the items shown in each top-k list."""

    k: int
    n_catalogue: int
    ranks: list[int] = field(default_factory=list)
    shown: set[int] = field(default_factory=set)

    def add(self, rank: int, top: IntArray) -> None:
        self.ranks.append(rank)
        self.shown.update(top.tolist())

    def summary(self) -> dict[str, float]:
        r = np.asarray(self.ranks, float)
        hit = r <= self.k
        n = max(len(r), 1)
        return {
            "hr": float(hit.sum() / n),
            "mrr": float(np.sum(1.0 / r[hit]) / n),
            "ndcg": float(np.sum(1.0 / np.log2(r[hit] + 1.0)) / n),
            "coverage": float(len(self.shown) / self.n_catalogue) if self.n_catalogue else 0.0,
        }
