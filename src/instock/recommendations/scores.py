"""One component's scores for one context, computed only where they are needed (pure).

A live catalogue has 100,000 items, and a list needs twenty. Each component therefore answers
with an `Opinion`: its best items (`top`), and its score of any given items (`at`); the hybrid
blends them over the union of the components' best items only. What a component has no opinion
about scores 0. `dense` gives the whole catalogue's scores, for tuning and tests.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from instock.recommendations.data import FloatArray, IntArray

EMPTY_INTS: IntArray = np.zeros(0, np.int64)
EMPTY_FLOATS: FloatArray = np.zeros(0)


class Opinion(Protocol):
    def top(self, n: int) -> IntArray:
        """Up to n items with the highest positive scores, in no particular order."""
        ...

    def at(self, items: IntArray) -> FloatArray:
        """The scores of `items` (0 for any item the component knows nothing of)."""
        ...

    def dense(self, n_items: int) -> FloatArray:
        """The scores of items 0..n_items-1."""
        ...


def best(items: IntArray, scores: FloatArray, n: int) -> IntArray:
    """Up to n of `items` with the highest positive `scores` (no order)."""
    positive = scores > 0
    if not positive.all():
        items, scores = items[positive], scores[positive]
    if len(items) > n:
        items = items[np.argpartition(-scores, n - 1)[:n]]
    return items


class Sparse:
    """Scores of a few items (the rest 0): the opinion of every neighbourhood model."""

    def __init__(self, items: IntArray, scores: FloatArray) -> None:
        self.items, self.scores = items, scores  # items unique and sorted

    @classmethod
    def summed(cls, items: IntArray, weights: FloatArray) -> Sparse:
        """Scores summed per item over (item, weight) pairs with repeats."""
        if not len(items):
            return cls(EMPTY_INTS, EMPTY_FLOATS)
        uniq, inverse = np.unique(items, return_inverse=True)
        return cls(uniq.astype(np.int64),
                   np.bincount(inverse.ravel(), weights=weights, minlength=len(uniq))
                   .astype(np.float64, copy=False))

    def top(self, n: int) -> IntArray:
        return best(self.items, self.scores, n)

    def at(self, items: IntArray) -> FloatArray:
        if not len(self.items):
            return np.zeros(len(items))
        where = np.minimum(np.searchsorted(self.items, items), len(self.items) - 1)
        return np.where(self.items[where] == items, self.scores[where], 0.0)

    def dense(self, n_items: int) -> FloatArray:
        out = np.zeros(n_items)
        keep = self.items < n_items
        out[self.items[keep]] = self.scores[keep]
        return out


class Dense:
    """Scores of every item, already computed."""

    def __init__(self, scores: FloatArray) -> None:
        self.scores = scores

    def top(self, n: int) -> IntArray:
        return best(np.arange(len(self.scores)), self.scores, n)

    def at(self, items: IntArray) -> FloatArray:
        inside = items < len(self.scores)
        return np.where(inside, self.scores[np.where(inside, items, 0)], 0.0) \
            if len(self.scores) else np.zeros(len(items))

    def dense(self, n_items: int) -> FloatArray:
        out = np.zeros(n_items)
        m = min(n_items, len(self.scores))
        out[:m] = self.scores[:m]
        return out


def ragged(indptr: IntArray, rows: IntArray) -> tuple[IntArray, IntArray]:
    """For CSR rows `rows`: (which of `rows` each stored entry belongs to, its position in the
    matrix's indices/data). One gather for many rows, without SciPy's per-slice overhead."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    if not total:
        return EMPTY_INTS, EMPTY_INTS
    owner = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, starts[owner] + offsets
