"""Ranking metrics for next-item evaluation (pure).

Ties are broken by a fixed pseudo-random order of the items, the same for every model: this is
session-rec's random tie-breaking made reproducible, and it stops a model that scores most items
0 from profiting from (or being punished by) item-id order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from instock.recommendations.data import FloatArray, IntArray


class Ranker:
    """Ranks scores with ties broken by a fixed random priority per item (same for all models)."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        self.tiebreak: FloatArray = np.random.default_rng(seed).random(n_items)
        self._order = np.argsort(-self.tiebreak)  # items by tie priority, best first

    def rank(self, scores: FloatArray, target: int) -> int:
        """1-based rank of `target` among all scored items."""
        s = scores[target]
        tied = (scores == s) & (self.tiebreak > self.tiebreak[target])
        return 1 + int(np.count_nonzero((scores > s) | tied))

    def top(self, scores: FloatArray, k: int) -> IntArray:
        """Indices of the k best items, best first; consistent with `rank`."""
        k = min(k, len(scores))
        if k <= 0:
            return np.zeros(0, np.int64)
        kth = self._kth_largest(scores, k)
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)
        need = k - len(above)
        if need < len(tied):  # often most of the catalogue ties (at 0): take by tie priority
            tied = self._order[scores[self._order] == kth][:need]
        pool = np.r_[above, tied]
        return pool[np.lexsort((-self.tiebreak[pool], -scores[pool]))].astype(np.int64)

    @staticmethod
    def _kth_largest(scores: FloatArray, k: int) -> float:
        # Most models score few items above 0; partitioning a mass of equal zeros is slow. And
        # numpy's introselect is pathological when asked for index n-k of an array with few
        # distinct values (a popularity count: 7 ms for 45,000 items, not 0.4): select the
        # (k-1)th of the negated array instead, as everywhere else here.
        positive = scores[scores > 0]
        if len(positive) >= k:
            return -float(np.partition(-positive, k - 1)[k - 1])
        if not np.any(scores < 0):
            return 0.0
        return -float(np.partition(-scores, k - 1)[k - 1])


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


def per_target(ranks: list[int] | IntArray, k: int) -> FloatArray:
    """Each target's hit (1 or 0) and reciprocal rank within k (0 outside it): rows 0 and 1.
    HR@k and MRR@k are the means of those rows."""
    r = np.asarray(ranks, float)
    hit = r <= k
    return np.vstack([hit.astype(float), np.where(hit, 1.0 / np.maximum(r, 1.0), 0.0)])


def bootstrap_intervals(values: FloatArray, resamples: int = 1000, level: float = 0.95,
                        seed: int = 0) -> FloatArray:
    """Percentile bootstrap interval of the mean of each row of `values` (a row per quantity,
    a column per target): the targets are resampled with replacement, the same resamples for
    every row, so a row of paired differences gets the interval of the difference. Returns
    one `[low, high]` a row; a row of no targets gets `[0, 0]`."""
    v = np.atleast_2d(np.asarray(values, float))
    rows, n = v.shape
    if n == 0:
        return np.zeros((rows, 2))
    rng = np.random.default_rng(seed)
    means = np.empty((rows, resamples))
    chunk = max(1, 4_000_000 // (rows * n))  # resamples at once, bounding the memory used
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        picked = rng.integers(0, n, size=(size, n))
        means[:, start:start + size] = v[:, picked].mean(axis=2)
    tails = [(1 - level) / 2, (1 + level) / 2]
    return np.quantile(means, tails, axis=1).T
