"""Item x item statistics shared by co-occurrence and sequential rules (pure): pair counts
with online increments and each row's strongest columns, the pairs a log holds, and the last
items of each open sequence that online updates pair with."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

from instock.recommendations.data import EventLog, FloatArray, IntArray
from instock.recommendations.scores import Rows, Strongest


class RecentItems:
    """Last few items of each open sequence, so that online updates can form item pairs.

    Bounded in sequences as well (oldest evicted) because a live shop has unbounded sessions.
    """

    def __init__(self, per_seq: int, max_seqs: int = 100_000) -> None:
        self.per_seq = per_seq
        self.max_seqs = max_seqs
        self._items: OrderedDict[int, list[int]] = OrderedDict()

    def seed(self, log: EventLog) -> None:
        self._items.clear()
        if not len(log):
            return
        last = np.r_[log.seq[1:] != log.seq[:-1], True]
        ends = np.flatnonzero(last)[-self.max_seqs :]
        starts = log.starts()
        for end in ends:
            lo = max(int(starts[end]), int(end) + 1 - self.per_seq)
            self._items[int(log.seq[end])] = log.item[lo : end + 1].tolist()

    def push(self, seq: int, item: int) -> list[int]:
        """Record item for seq and return the items that preceded it (oldest first)."""
        prev = self._items.pop(seq, [])
        self._items[seq] = ([*prev, item])[-self.per_seq :]
        if len(self._items) > self.max_seqs:
            self._items.popitem(last=False)
        return prev


class PairCounts:
    """Sparse item x item weights: a CSR built at fit plus a dict of online increments.

    The dict keeps single-event updates O(1); it is folded into the CSR once it grows large.
    Each row's `STRONGEST` columns are kept beside the CSR (taken whenever it changes, off the
    request path): the candidates a served list's `Rows.top` draws from.
    """

    # twice the candidates a blend takes from a component (`model.CANDIDATES`)
    STRONGEST = 100

    def __init__(self, n: int = 0, compact_at: int = 50_000) -> None:
        self.delta: dict[int, dict[int, float]] = {}
        self.compact_at = compact_at
        self._pending = 0
        self.base = sp.csr_matrix((n, n))

    @property
    def base(self) -> sp.csr_matrix:
        return self._base

    @base.setter
    def base(self, matrix: sp.csr_matrix) -> None:
        self._base = matrix.tocsr()
        self._base.sort_indices()  # `Rows` looks columns up by binary search
        self._columns = self._base.indices.astype(np.int64)
        self._strongest = _strongest_columns(self._base, self.STRONGEST)

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    def fit(self, rows: IntArray, cols: IntArray, vals: FloatArray, n: int) -> None:
        base = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
        base.sum_duplicates()
        self.base = base
        self.delta, self._pending = {}, 0

    def add(self, row: int, col: int, val: float) -> None:
        self.grow(max(row, col) + 1)
        d = self.delta.setdefault(row, {})
        d[col] = d.get(col, 0.0) + val
        self._pending += 1
        if self._pending >= self.compact_at:
            self.compact()

    def grow(self, n: int) -> None:
        if n > self.n:
            self.base.resize((n, n))  # new rows are empty: `Rows` treats them as no strongest

    def compact(self) -> None:
        entries = [(r, c, v) for r, row in self.delta.items() for c, v in row.items()]
        if entries:
            r, c, v = map(np.asarray, zip(*entries, strict=True))
            self.base = self.base + sp.csr_matrix((v, (r, c)), shape=self.base.shape)
        self.delta, self._pending = {}, 0

    def combine(self, rows: IntArray, weights: FloatArray) -> Rows:
        """Sum of weights[j] * row rows[j], scored where asked (see `Rows`)."""
        return Rows(self.base, self._columns, self._strongest, self.delta, rows, weights)


def _strongest_columns(m: sp.csr_matrix, keep: int) -> Strongest:
    """Each row's `keep` largest entries' columns (ties: lower column first), as a CSR's
    indptr and indices."""
    lengths = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), lengths)
    order = np.lexsort((m.indices, -m.data, rows))  # by row, then strongest, then column
    rank = np.arange(len(order)) - m.indptr[rows[order]]
    kept = order[rank < keep]
    indptr = np.r_[0, np.cumsum(np.minimum(lengths, keep))].astype(np.int64)
    return indptr, m.indices[kept].astype(np.int64), keep


def pairs_within(log: EventLog, max_gap: int | None) -> Iterable[tuple[int, IntArray, IntArray]]:
    """(gap, earlier items, later items) for event pairs of one sequence up to max_gap apart."""
    if not len(log):
        return
    longest = int(np.max(np.bincount(np.unique(log.seq, return_inverse=True)[1])))
    top = longest - 1 if max_gap is None else min(max_gap, longest - 1)
    for gap in range(1, top + 1):
        same = log.seq[gap:] == log.seq[:-gap]
        if same.any():
            yield gap, log.item[:-gap][same], log.item[gap:][same]


def all_pairs(log: EventLog) -> sp.csr_matrix:
    """Pairs of distinct positions of each sequence, per item pair, as S'S for S = counts.

    A sparse product instead of a loop over gaps: cost follows the distinct items per sequence,
    not the length of the longest one (a bot's session can be very long).
    """
    rows = np.unique(log.seq, return_inverse=True)[1]
    n_rows = int(rows.max()) + 1 if len(rows) else 0
    counts = sp.csr_matrix((np.ones(len(log)), (rows, log.item)), shape=(n_rows, log.n_items))
    counts.sum_duplicates()
    # an item pairs with its own other occurrences only: c*c - c on the diagonal
    own = sp.diags(np.asarray(counts.sum(axis=0)).ravel())
    pairs = (counts.T @ counts - own).tocsr()
    pairs.eliminate_zeros()
    return pairs


def strongest_per_row(m: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Each row's `keep` largest entries (ties: lower column first), the rest dropped."""
    m = m.tocsr()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((m.indices, -m.data, rows))  # by row, then strongest, then column
    rank = np.arange(len(order)) - m.indptr[rows[order]]
    kept = order[rank < keep]
    return sp.csr_matrix((m.data[kept], (rows[kept], m.indices[kept])), shape=m.shape)
