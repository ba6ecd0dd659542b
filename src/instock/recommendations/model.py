"""Recommender models behind one interface: fit from history, update from one event, score.

Pure NumPy/SciPy, no I/O. Every model scores the whole catalogue (items 0..n_items-1) from a
`Context` (the shopper's earlier events); the hybrid blends their per-query normalised scores
with weights tuned on a validation split (see `tuning.py`), never set by hand per data set.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from instock.recommendations.data import (
    CART,
    N_KINDS,
    PURCHASE,
    VIEW,
    WISHLIST,
    Context,
    Event,
    EventLog,
    FloatArray,
    IntArray,
)


class Recommender(Protocol):
    """The one interface every model (and the hybrid) implements."""

    def fit(self, log: EventLog) -> None: ...

    def update(self, event: Event) -> None: ...

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray: ...


# ---------------------------------------------------------------------------------------------
# Shared helpers


def normalise(scores: FloatArray) -> FloatArray:
    """Scale to a maximum of 1 so that components with different units can be blended."""
    top = float(scores.max()) if len(scores) else 0.0
    return scores / top if top > 0 else scores


def recency_weights(n: int, decay: float) -> FloatArray:
    """Weight decay**steps_back for n positions, oldest first (the last event weighs 1)."""
    return decay ** np.arange(n - 1, -1, -1, dtype=np.float64)


def _grow(arr: FloatArray, n: int, fill: float = 0.0) -> FloatArray:
    return arr if len(arr) >= n else np.concatenate([arr, np.full(n - len(arr), fill)])


class _RecentItems:
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
    """

    def __init__(self, n: int = 0, compact_at: int = 50_000) -> None:
        self.base: sp.csr_matrix = sp.csr_matrix((n, n))
        self.delta: dict[int, dict[int, float]] = {}
        self.compact_at = compact_at
        self._pending = 0

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    def fit(self, rows: IntArray, cols: IntArray, vals: FloatArray, n: int) -> None:
        self.base = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
        self.base.sum_duplicates()
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
            self.base.resize((n, n))

    def compact(self) -> None:
        entries = [(r, c, v) for r, row in self.delta.items() for c, v in row.items()]
        if entries:
            r, c, v = map(np.asarray, zip(*entries, strict=True))
            self.base = (self.base + sp.csr_matrix((v, (r, c)), shape=self.base.shape)).tocsr()
        self.delta, self._pending = {}, 0

    def combine(self, rows: IntArray, weights: FloatArray) -> FloatArray:
        """Sum of weights[j] * row rows[j], as a dense vector over all columns."""
        out = np.zeros(self.n)
        if not len(rows):
            return out
        uniq, inv = np.unique(rows, return_inverse=True)
        w = np.bincount(inv, weights=weights)
        out += np.asarray(self.base[uniq].T @ w).ravel()
        for r, wr in zip(uniq.tolist(), w.tolist(), strict=True):
            for c, v in self.delta.get(r, {}).items():
                out[c] += wr * v
        return out


def _context_tail(
    ctx: Context, n_items: int, size: int, decay: float
) -> tuple[IntArray, FloatArray]:
    """The last `size` context items known to the model, with recency weights."""
    known = ctx.items[ctx.items < n_items]
    known = known[-size:] if size > 0 else known
    return known, recency_weights(len(known), decay)


def _pairs_within(log: EventLog, max_gap: int | None) -> Iterable[tuple[int, IntArray, IntArray]]:
    """(gap, earlier items, later items) for event pairs of one sequence up to max_gap apart."""
    if not len(log):
        return
    longest = int(np.max(np.bincount(np.unique(log.seq, return_inverse=True)[1])))
    top = longest - 1 if max_gap is None else min(max_gap, longest - 1)
    for gap in range(1, top + 1):
        same = log.seq[gap:] == log.seq[:-gap]
        if same.any():
            yield gap, log.item[:-gap][same], log.item[gap:][same]


def _all_pairs(log: EventLog) -> sp.csr_matrix:
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


class _Model:
    """Base class: subclasses fill `_score_all`; candidates are a view on it."""

    n_items: int = 0

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray:
        scores = self._score_all(ctx)
        if candidates is None:
            return scores
        cand = np.asarray(candidates, np.int64)
        return np.where(cand < len(scores), scores[np.minimum(cand, len(scores) - 1)], 0.0)

    def _score_all(self, ctx: Context) -> FloatArray:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Models


class Trending(_Model):
    """Popularity with exponential time decay (half_life=inf gives plain popularity).

    Counts are stored relative to a moving anchor time so that one event is O(1): decaying
    every count equally would not change the ranking, only the scale.
    """

    def __init__(
        self, half_life: float = math.inf, kind_weights: tuple[float, ...] = (1.0,) * N_KINDS
    ) -> None:
        self.half_life = half_life
        self.kind_weights = np.asarray(kind_weights, float)
        self.counts: FloatArray = np.zeros(0)
        self.anchor = 0.0

    def _boost(self, t: FloatArray | float) -> FloatArray:
        if math.isinf(self.half_life):
            return np.ones_like(np.asarray(t, float))
        return np.exp2((np.asarray(t, float) - self.anchor) / self.half_life)

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        self.anchor = float(log.time.max()) if len(log) else 0.0
        w = self.kind_weights[log.kind] * self._boost(log.time)
        self.counts = np.bincount(log.item, weights=w, minlength=log.n_items).astype(float)

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)
        self.counts = _grow(self.counts, self.n_items)
        if not math.isinf(self.half_life) and event.time - self.anchor > 50 * self.half_life:
            # Re-anchor before 2**exponent overflows; scaling all counts keeps the ranking.
            self.counts *= float(np.exp2((self.anchor - event.time) / self.half_life))
            self.anchor = event.time
        self.counts[event.item] += self.kind_weights[event.kind] * float(self._boost(event.time))

    def _score_all(self, ctx: Context) -> FloatArray:
        return self.counts.copy()


class CoOccurrence(_Model):
    """Item-to-item association: how often two items occur in the same sequence.

    With window=None every pair of a sequence counts (association rules); otherwise only events
    at most `window` positions apart. Scores sum the rows of the last `context_size` items.
    """

    def __init__(self, window: int | None = None, context_size: int = 1, decay: float = 1.0):
        self.window = window
        self.context_size = context_size
        self.decay = decay
        self.pairs = PairCounts()
        self._recent = _RecentItems(per_seq=window or 50)

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        if self.window is None:
            self.pairs.base = _all_pairs(log)
            self.pairs.delta = {}
        else:
            rows, cols = [], []
            for _, a, b in _pairs_within(log, self.window):
                rows += [a, b]
                cols += [b, a]
            r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
            c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
            self.pairs.fit(r, c, np.ones(len(r)), log.n_items)
        self._recent.seed(log)

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)
        self.pairs.grow(self.n_items)
        for other in self._recent.push(event.seq, event.item):
            self.pairs.add(other, event.item, 1.0)
            self.pairs.add(event.item, other, 1.0)

    def _score_all(self, ctx: Context) -> FloatArray:
        items, w = _context_tail(ctx, self.n_items, self.context_size, self.decay)
        return self.pairs.combine(items, w)[: self.n_items]


class SequentialRules(_Model):
    """Directed rules a -> b when b follows a within `steps` events, weighted 1/gap.

    This is the sequential-rules method of the session-rec benchmark; scores sum the rules of the
    last `context_size` items with recency weights.
    """

    def __init__(self, steps: int = 10, context_size: int = 1, decay: float = 1.0):
        self.steps = steps
        self.context_size = context_size
        self.decay = decay
        self.pairs = PairCounts()
        self._recent = _RecentItems(per_seq=steps)

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        rows, cols, vals = [], [], []
        for gap, a, b in _pairs_within(log, self.steps):
            rows.append(a)
            cols.append(b)
            vals.append(np.full(len(a), 1.0 / gap))
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        v = np.concatenate(vals) if vals else np.zeros(0)
        self.pairs.fit(r, c, v, log.n_items)
        self._recent.seed(log)

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)
        self.pairs.grow(self.n_items)
        prev = self._recent.push(event.seq, event.item)
        for gap, other in enumerate(reversed(prev), start=1):
            self.pairs.add(other, event.item, 1.0 / gap)

    def _score_all(self, ctx: Context) -> FloatArray:
        items, w = _context_tail(ctx, self.n_items, self.context_size, self.decay)
        return self.pairs.combine(items, w)[: self.n_items]


def _last_positions(
    rows: IntArray, cols: IntArray, pos: IntArray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """CSR of 1 + the last position of each item in each row (re-clicks keep the latest)."""
    order = np.lexsort((pos, cols, rows))
    r, c, p = rows[order], cols[order], pos[order]
    last = np.r_[(r[1:] != r[:-1]) | (c[1:] != c[:-1]), True] if len(r) else np.zeros(0, bool)
    return sp.csr_matrix(((p[last] + 1).astype(float), (r[last], c[last])), shape=shape)


class SessionKNN(_Model):
    """Neighbourhood of past sequences (V-SKNN / STAN-like).

    A past sequence's similarity is the recency-weighted overlap with the context; the `k` most
    similar vote for their items with that similarity. Within a neighbour, items close to where
    it meets the context's latest item count more (`proximity` per step away), and items are
    weighted by inverse frequency (`idf`) so that ubiquitous items do not swamp the vote.
    """

    def __init__(
        self,
        k: int = 100,
        decay: float = 0.5,
        context_size: int = 20,
        idf: float = 1.0,
        proximity: float = 0.8,
        auto_flush: bool = True,
    ) -> None:
        self.k = k
        # Folding events in rebuilds the matrices (O(history)): offline it happens before a
        # score; a live server turns it off and refits off the request path instead.
        self.auto_flush = auto_flush
        self.decay = decay
        self.context_size = context_size
        self.idf = idf
        self.proximity = proximity
        self.positions: sp.csr_matrix = sp.csr_matrix((0, 0))
        self.matrix: sp.csr_matrix = sp.csr_matrix((0, 0))
        self.row_of: dict[int, int] = {}
        self._length: list[int] = []
        self._pending: list[tuple[int, int]] = []
        self._item_weight: FloatArray = np.zeros(0)

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        seqs, rows = np.unique(log.seq, return_inverse=True)
        self.row_of = {int(s): i for i, s in enumerate(seqs)}
        pos = np.arange(len(log)) - log.starts()
        self._length = np.bincount(rows, minlength=len(seqs)).tolist()
        self._set(_last_positions(rows, log.item, pos, (len(seqs), log.n_items)))
        self._pending = []

    def _set(self, positions: sp.csr_matrix) -> None:
        self.positions = positions
        self.matrix = positions.copy()
        self.matrix.data[:] = 1.0  # presence, not counts: a re-click is not more evidence
        df = np.bincount(self.matrix.indices, minlength=self.n_items).astype(float)
        n = max(self.matrix.shape[0], 1)
        self._item_weight = np.log1p(n / np.maximum(df, 1.0)) ** self.idf

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)
        self._pending.append((event.seq, event.item))

    def _flush(self) -> None:
        """Fold pending events into the matrices (lazily: only when scoring needs it)."""
        if not self._pending:
            return
        old = self.positions.tocoo()
        rows, cols, pos = [], [], []
        for seq, item in self._pending:
            row = self.row_of.setdefault(seq, len(self.row_of))
            if row == len(self._length):
                self._length.append(0)
            rows.append(row)
            cols.append(item)
            pos.append(self._length[row])
            self._length[row] += 1
        shape = (len(self.row_of), self.n_items)
        self._set(
            _last_positions(
                np.r_[old.row, rows].astype(np.int64),
                np.r_[old.col, cols].astype(np.int64),
                np.r_[old.data - 1, pos].astype(np.int64),
                shape,
            )
        )
        self._pending = []

    def _neighbour_weights(self, nb: IntArray, q: FloatArray) -> tuple[IntArray, FloatArray]:
        """Columns of the neighbours' items and each one's proximity weight."""
        sub = self.positions[nb]
        rows = np.repeat(np.arange(len(nb)), np.diff(sub.indptr))
        cols, pos = sub.indices, sub.data
        if self.proximity >= 1.0 or not len(cols):
            return rows, np.ones(len(cols))
        # where each neighbour meets the context: its item that is most recent in the context
        order = np.lexsort((q[cols], rows))
        last = order[np.r_[rows[order][1:] != rows[order][:-1], True]]
        meet = np.zeros(len(nb))
        meet[rows[last]] = pos[last]
        return rows, self.proximity ** np.abs(pos - meet[rows])

    def _score_all(self, ctx: Context) -> FloatArray:
        if self.auto_flush:
            self._flush()
        items, w = _context_tail(ctx, self.n_items, self.context_size, self.decay)
        q = np.bincount(items, weights=w, minlength=self.n_items).astype(np.float64)
        q = q[: self.matrix.shape[1]]  # items newer than the last fold have no neighbours yet
        sims = self.matrix @ q
        if ctx.seq is not None and ctx.seq in self.row_of:
            sims[self.row_of[ctx.seq]] = 0.0  # a live session must not be its own neighbour
        nb = np.flatnonzero(sims)
        if len(nb) > self.k:
            nb = nb[np.argpartition(-sims[nb], self.k)[: self.k]]
        rows, prox = self._neighbour_weights(nb, q)
        cols = self.positions[nb].indices
        votes = np.bincount(cols, weights=sims[nb][rows] * prox, minlength=self.n_items)
        return votes * _grow(self._item_weight, self.n_items)


class ContentSimilarity(_Model):
    """Items sharing attributes (category, brand, price band...) with the recent context.

    Stated preferences (poll answers) count like a context item, which is what makes a new
    visitor's first list relevant. Within a matching attribute, popular items come first.
    """

    def __init__(self, decay: float = 0.8, context_size: int = 20) -> None:
        self.decay = decay
        self.context_size = context_size
        self.attributes: dict[str, IntArray] = {}
        self._n_values: dict[str, int] = {}
        self.features: sp.csr_matrix | None = None
        self._by_feature: sp.csc_matrix | None = None  # the same, by column: see _feature_votes
        self._lookup: dict[str, IntArray] = {}  # per attribute: codes with -1 as n_values
        self.popularity: FloatArray = np.zeros(0)
        self._boost: FloatArray = np.ones(0)  # 1 + log1p(popularity), kept per event

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        self.set_attributes({k: v[: log.n_items] for k, v in log.attributes.items()},
                            log.features)
        self.popularity = np.bincount(log.item, minlength=log.n_items).astype(float)
        self._boost = 1.0 + np.log1p(self.popularity)

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)
        self.popularity = _grow(self.popularity, self.n_items)
        self.popularity[event.item] += 1.0
        self._boost = _grow(self._boost, self.n_items, fill=1.0)
        self._boost[event.item] = 1.0 + math.log1p(self.popularity[event.item])

    def set_attributes(
        self, attributes: Mapping[str, IntArray], features: sp.csr_matrix | None = None
    ) -> None:
        """Catalogue changes (new items, re-categorisation) arrive here, not as events.

        `features` (items x features, 0/1) are multi-valued attributes such as tags and title
        words; stated preferences name feature columns under the key "features".
        """
        self.attributes = {k: np.asarray(v, np.int64) for k, v in attributes.items()}
        self._n_values = {k: int(v.max()) + 1 if len(v) else 0 for k, v in self.attributes.items()}
        # unknown (-1) looks up a trailing 0 vote: one gather per attribute when scoring
        self._lookup = {k: np.where(v >= 0, v, self._n_values[k])
                        for k, v in self.attributes.items()}
        self.features = features
        self._by_feature = features.tocsc() if features is not None else None
        self.n_items = max(self.n_items, max((len(v) for v in self.attributes.values()), default=0))
        self.popularity = _grow(self.popularity, self.n_items)
        self._boost = 1.0 + np.log1p(self.popularity)

    def _feature_votes(self, items: IntArray, w: FloatArray, stated: Sequence[int]) -> FloatArray:
        """Shared features with the context, each context item's features summing to its weight."""
        f = self.features
        assert f is not None
        known = items < f.shape[0]
        rows = f[items[known]]
        per_row = np.maximum(np.diff(rows.indptr), 1)
        taste = np.asarray(rows.T @ (w[known] / per_row)).ravel()
        answers = [v for v in stated if 0 <= v < f.shape[1]]
        taste[answers] += 1.0
        # only the few features the shopper has shown taste for: their columns, not all of F
        wanted = np.flatnonzero(taste)
        by_feature = self._by_feature
        assert by_feature is not None
        out = np.asarray(by_feature[:, wanted] @ taste[wanted]).ravel()
        return _grow(out, self.n_items)[: self.n_items]

    def _votes(
        self, name: str, items: IntArray, w: FloatArray, stated: Sequence[int]
    ) -> FloatArray:
        """Weight of each value of one attribute among the context items and stated answers."""
        codes, n_values = self.attributes[name], self._n_values[name]
        known = items < len(codes)
        ctx_codes, ctx_w = codes[items[known]], w[known]
        ok = ctx_codes >= 0
        votes = np.bincount(ctx_codes[ok], weights=ctx_w[ok], minlength=n_values).astype(float)
        answers = [v for v in stated if 0 <= v < n_values]
        votes[answers] += 1.0
        return votes

    def _score_all(self, ctx: Context) -> FloatArray:
        items, w = _context_tail(ctx, self.n_items, self.context_size, self.decay)
        out = np.zeros(self.n_items)
        if not len(items) and not ctx.preferences:
            return out  # nothing to be similar to
        for name, lookup in self._lookup.items():
            if self._n_values[name] <= 0:
                continue
            votes = self._votes(name, items, w, ctx.preferences.get(name, ()))
            if votes.any():
                out[: len(lookup)] += np.r_[votes, 0.0][lookup[: self.n_items]]
        if self.features is not None and self.features.shape[1]:
            out += self._feature_votes(items, w, ctx.preferences.get("features", ()))
        # log-popularity only orders items within a matching attribute value
        return out * _grow(self._boost, self.n_items, fill=1.0)[: self.n_items]


DEFAULT_AFFINITY_KINDS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.5)


class CustomerAffinity(_Model):
    """Items the shopper already engaged with, by event kind and recency.

    Shoppers return to items they viewed, carted or wished for; `kind_weights` says which
    kinds count (the hybrid holds one instance per kind so the tuner learns their worth).
    """

    def __init__(
        self, kind_weights: tuple[float, ...] = DEFAULT_AFFINITY_KINDS, decay: float = 0.9
    ) -> None:
        self.kind_weights = np.asarray(kind_weights, float)
        self.decay = decay

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)

    def _score_all(self, ctx: Context) -> FloatArray:
        known = ctx.items < self.n_items
        w = recency_weights(len(ctx.items), self.decay) * self.kind_weights[ctx.kinds]
        return np.bincount(ctx.items[known], weights=w[known], minlength=self.n_items).astype(float)


def only(kind: int) -> tuple[float, ...]:
    """Kind weights selecting a single event kind."""
    return tuple(1.0 if k == kind else 0.0 for k in range(N_KINDS))


# ---------------------------------------------------------------------------------------------
# Hybrid


class Hybrid:
    """Weighted blend of normalised component scores; weights come from `tuning.tune_weights`."""

    def __init__(
        self, components: Mapping[str, Recommender], weights: Mapping[str, float] | None = None
    ) -> None:
        self.components = dict(components)
        self.weights = dict(weights or {name: 1.0 for name in self.components})

    def fit(self, log: EventLog) -> None:
        for model in self.components.values():
            model.fit(log)

    def update(self, event: Event) -> None:
        for model in self.components.values():
            model.update(event)

    def component_scores(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray:
        """(n_components, n_items) normalised scores, in `components` order."""
        return np.vstack([normalise(m.score(ctx, candidates)) for m in self.components.values()])

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray:
        return self.blend(ctx, candidates)[0]

    def blend(
        self, ctx: Context, candidates: IntArray | None = None
    ) -> tuple[FloatArray, dict[str, tuple[float, FloatArray]]]:
        """The blended scores, and per component its scale and raw scores (for reasons).

        Summed in place: at serving time this runs per request over the whole catalogue.
        """
        size = self.n_items if candidates is None else len(candidates)
        out = np.zeros(size)
        raw: dict[str, tuple[float, FloatArray]] = {}
        for name, w in self.weights.items():
            model = self.components.get(name)
            if w <= 0 or model is None:
                continue
            scores = model.score(ctx, candidates)
            top = float(scores.max()) if len(scores) else 0.0
            if top > 0:
                scale = w / top
                out[: len(scores)] += scale * scores[:size]
                raw[name] = (scale, scores)
        return out, raw

    @property
    def n_items(self) -> int:
        return max((getattr(m, "n_items", 0) for m in self.components.values()), default=0)


def default_components(time_span: float) -> dict[str, Recommender]:
    """The hybrid's candidate components; the tuner decides which matter for a shop.

    Decays are relative (per event, or a share of the training time span), so nothing here
    depends on a particular data set.
    """
    span = max(time_span, 1.0)
    return {
        "trending": Trending(half_life=span / 20),
        "popularity": Trending(),
        "cooccurrence": CoOccurrence(window=None, context_size=3, decay=0.5),
        "sequential": SequentialRules(steps=10, context_size=1),
        "sequential_ctx": SequentialRules(steps=10, context_size=5, decay=0.5),
        "sknn": SessionKNN(),
        "content": ContentSimilarity(),
        "affinity_view": CustomerAffinity(only(VIEW)),
        "affinity_cart": CustomerAffinity(only(CART)),
        "affinity_wishlist": CustomerAffinity(only(WISHLIST)),
        "affinity_purchase": CustomerAffinity(only(PURCHASE)),
    }
