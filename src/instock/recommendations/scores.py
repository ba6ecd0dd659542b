"""One component's scores for one context, computed only where they are needed (pure).

A live catalogue has 100,000 items, and a list needs twenty. Each component therefore answers
with an `Opinion`: its best items (`top`), and its score of any given items (`at`); the hybrid
blends them over the union of the components' best items only. What a component has no opinion
about scores 0. `dense` gives the whole catalogue's scores, for tuning and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from instock.recommendations.data import BoolArray, FloatArray, IntArray

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


# Above this many scores, `best` first narrows them to those above a threshold taken from a
# strided sample: a selection over all of them (ALS's pool of 10,000 per served list) cost
# ~90 us, the sample's ~15 us.
SAMPLED_ABOVE = 4096
SAMPLE_STEP = 16


def best(items: IntArray, scores: FloatArray, n: int) -> IntArray:
    """Up to n of `items` with the highest positive `scores` (no order)."""
    if len(scores) >= SAMPLED_ABOVE and n * 4 * SAMPLE_STEP <= len(scores):
        sample = scores[::SAMPLE_STEP]
        # about n + 64 scores lie at or above the sample's k-th largest; when at least n do,
        # the best n are among them (exact), else (a rare, unlucky sample) all are searched
        k = n // SAMPLE_STEP + 4
        threshold = np.partition(sample, len(sample) - k)[len(sample) - k]
        above = np.flatnonzero(scores >= threshold)
        if len(above) >= n:
            items, scores = items[above], scores[above]
    positive = scores > 0
    if not positive.all():
        items, scores = items[positive], scores[positive]
    if len(items) > n:
        items = items[np.argpartition(-scores, n - 1)[:n]]
    return items


def run_starts(ordered: IntArray) -> BoolArray:
    """Per position of a sorted array: does a new value start there (a sort and this give
    np.unique's results at a fraction of its cost on the short arrays of a served list)."""
    first = np.empty(len(ordered), bool)
    if len(ordered):
        first[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def looked_up(keys: IntArray, values: FloatArray, asked: IntArray) -> FloatArray:
    """The values of the asked keys in sorted, distinct, non-empty `keys`; 0 where absent."""
    where = np.minimum(np.searchsorted(keys, asked), len(keys) - 1)
    return np.where(keys[where] == asked, values[where], 0.0)


def distinct(values: IntArray) -> IntArray:
    """The sorted distinct values: np.unique's result at a fifth of its cost on the few hundred
    items of a list's candidates (NumPy 2's hashing unique took ~35 us there, a sort ~8)."""
    ordered = np.sort(values)
    return ordered[run_starts(ordered)]


class Sparse:
    """Scores of a few items (the rest 0): the opinion of every neighbourhood model."""

    def __init__(self, items: IntArray, scores: FloatArray) -> None:
        self.items, self.scores = items, scores  # items unique and sorted

    @classmethod
    def summed(cls, items: IntArray, weights: FloatArray) -> Sparse:
        """Scores summed per item over (item, weight) pairs with repeats."""
        if not len(items):
            return cls(EMPTY_INTS, EMPTY_FLOATS)
        # a stable sort keeps each item's weights in their order: the sums are np.unique's
        order = np.argsort(items, kind="stable")
        ordered = items[order]
        first = run_starts(ordered)
        return cls(ordered[first].astype(np.int64, copy=False),
                   np.bincount(np.cumsum(first) - 1, weights=np.asarray(weights)[order])
                   .astype(np.float64, copy=False))

    def top(self, n: int) -> IntArray:
        return best(self.items, self.scores, n)

    def at(self, items: IntArray) -> FloatArray:
        if not len(self.items):
            return np.zeros(len(items))
        return looked_up(self.items, self.scores, items)

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


KEY_SHIFT = 32  # a (row, column) pair as one int64: row << KEY_SHIFT | column
# Rows holding up to this many entries in all are searched as one array (see `Rows`).
JOINED = 1024

# Per row of a matrix, its strongest columns (CSR indptr and indices), and how many are kept.
Strongest = tuple[IntArray, IntArray, int]


class Rows:
    """The weighted sum of a few rows of an item x item matrix and of their online increments
    (`delta`), scored only where asked: the opinion of co-occurrence and sequential rules.

    Building the sum itself (a sort of every column the rows hold: a popular item's
    co-occurrence row holds thousands) was most of those components' time per served list. So
    `at` looks the asked items up in each row instead, and `top` draws its candidates from each
    row's `strongest` columns (kept by `PairCounts`) and the increments: exact for one row, and
    for several an item outside every row's strongest that their sum would still rank among
    the best n is missed (n above the strongest kept: every column is a candidate).
    """

    def __init__(self, base: sp.csr_matrix, columns: IntArray, strongest: Strongest,
                 delta: Mapping[int, Mapping[int, float]], rows: IntArray,
                 weights: FloatArray) -> None:
        """`columns`: the CSR's indices as int64 (a row's slice is then searched in place,
        where int32 indices would be copied to compare with int64 items)."""
        self.base, self.strongest = base, strongest
        # a context's few rows: plain Python is cheaper than NumPy calls on arrays this short
        summed: dict[int, float] = {}
        for row, weight in zip(np.asarray(rows).tolist(), np.asarray(weights).tolist(),
                               strict=True):
            summed[row] = summed.get(row, 0.0) + weight
        indptr, n_rows = base.indptr, base.shape[0]
        # (row, weight, its columns, its values) of each asked row holding entries, by row;
        # slices of the CSR, not copies: a popular item's co-occurrence row is long
        self._spans: list[tuple[int, float, IntArray, FloatArray]] = []
        for row, weight in sorted(summed.items()):
            if row < n_rows:
                first, end = int(indptr[row]), int(indptr[row + 1])
                if end > first:
                    self._spans.append((row, weight, columns[first:end], base.data[first:end]))
        # Several short rows (sequential rules keep 20 a row) are searched as one: their
        # (position among the spans, column) as one sorted int64 key per entry.
        self._keys: IntArray | None = None
        self._values: FloatArray = EMPTY_FLOATS
        if len(self._spans) > 1 and sum(len(span[2]) for span in self._spans) <= JOINED:
            self._keys = np.concatenate([cols + (j << KEY_SHIFT)
                                         for j, (_, _, cols, _) in enumerate(self._spans)])
            self._values = np.concatenate([weight * vals for _, weight, _, vals in self._spans])
        self._delta: list[tuple[float, IntArray, FloatArray]] = []
        for row, weight in summed.items():
            increments = delta.get(row)
            if increments:
                cols = np.fromiter(increments.keys(), np.int64, len(increments))
                vals = np.fromiter(increments.values(), float, len(increments))
                order = np.argsort(cols)
                self._delta.append((weight, cols[order], vals[order]))

    def at(self, items: IntArray) -> FloatArray:
        items = np.asarray(items, np.int64)
        # row by row in row order, then the increments: the sums np.unique's summing gave
        keys = self._keys
        if keys is not None and len(items):
            n_spans = len(self._spans)
            asked = ((np.arange(n_spans, dtype=np.int64) << KEY_SHIFT)[:, None] + items).ravel()
            found = looked_up(keys, self._values, asked)
            out = found.reshape(n_spans, len(items)).sum(axis=0)
        else:
            out = np.zeros(len(items))
            for _, weight, cols, vals in self._spans:
                out += weight * looked_up(cols, vals, items)
        for weight, cols, vals in self._delta:
            out += weight * looked_up(cols, vals, items)
        return out

    def top(self, n: int) -> IntArray:
        indptr, indices, depth = self.strongest
        if n > depth:  # deeper than what is kept: every column is a candidate
            picks = [cols for _, _, cols, _ in self._spans]
        else:
            kept = len(indptr) - 1
            picks = [indices[indptr[row]: indptr[row + 1]]
                     for row, _, _, _ in self._spans if row < kept]
            if len(picks) == 1 and not self._delta:
                return picks[0][:n]  # one row, strongest first: its best n, exactly
        picks += [cols for _, cols, _ in self._delta]
        candidates = distinct(np.concatenate([EMPTY_INTS, *picks]).astype(np.int64))
        return best(candidates, self.at(candidates), n)

    def dense(self, n_items: int) -> FloatArray:
        return self.at(np.arange(n_items))
