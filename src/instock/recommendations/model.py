"""Recommender models behind one interface: fit from history, update from one event, score.

Pure NumPy/SciPy, no I/O. Every model gives its `Opinion` of a `Context` (the shopper's earlier
events): its best items and its score of any item, computed where asked rather than over the
whole catalogue. The hybrid blends the components' normalised scores over the union of their
best items, with weights tuned on a validation split (see `tuning.py`), never set by hand per
data set; offline evaluation and serving rank the same candidates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from instock.recommendations.latent import DEFAULT_ALS_ALPHA, SERVING_POOL, LatentFactors
from instock.recommendations.pairs import (
    PairCounts,
    RecentItems,
    all_pairs,
    pairs_within,
    strongest_per_row,
)
from instock.recommendations.scores import (
    EMPTY_FLOATS,
    EMPTY_INTS,
    Dense,
    Opinion,
    Rows,
    Sparse,
    best,
    distinct,
    ragged,
)

# Each component's best items that a blend considers (tuning considers the same): a list shows
# ten to twenty, and an item outside every component's top fifty hardly reaches their blend's.
CANDIDATES = 50


class Recommender(Protocol):
    """The one interface every model (and the hybrid) implements."""

    def fit(self, log: EventLog) -> None: ...

    def update(self, event: Event) -> None: ...

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray: ...


class Component(Recommender, Protocol):
    """A model the hybrid blends: it also answers with an opinion, scored only where asked."""

    def opinion(self, ctx: Context) -> Opinion: ...


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


def _context_tail(
    ctx: Context, n_items: int, size: int, decay: float
) -> tuple[IntArray, FloatArray]:
    """The last `size` context items known to the model, with recency weights."""
    known = ctx.items[ctx.items < n_items]
    known = known[-size:] if size > 0 else known
    return known, recency_weights(len(known), decay)


class _Model:
    """Base class: subclasses give an `opinion`; `score` reads it densely or at candidates."""

    n_items: int = 0

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray:
        opinion = self.opinion(ctx)
        if candidates is None:
            return opinion.dense(self.n_items)
        return opinion.at(np.asarray(candidates, np.int64))

    def opinion(self, ctx: Context) -> Opinion:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Models


class Trending(_Model):
    """Popularity with exponential time decay (half_life=inf gives plain popularity).

    Counts are stored relative to a moving anchor time so that one event is O(1): decaying
    every count equally would not change the ranking, only the scale. The same opinion serves
    every context; its top items come from a pool kept between events (see `top`).
    """

    # Items kept as the pool of the best, and events after which the pool is rebuilt.
    POOL = 512
    REBUILD_AFTER = 2048

    def __init__(
        self, half_life: float = math.inf, kind_weights: tuple[float, ...] = (1.0,) * N_KINDS
    ) -> None:
        self.half_life = half_life
        self.kind_weights = np.asarray(kind_weights, float)
        self.counts: FloatArray = np.zeros(0)
        self.anchor = 0.0
        self._pool: IntArray | None = None
        self._touched: set[int] = set()
        self._top: tuple[int, IntArray] | None = None  # (n, top n) until the next event

    def _boost(self, t: FloatArray | float) -> FloatArray:
        if math.isinf(self.half_life):
            return np.ones_like(np.asarray(t, float))
        return np.exp2((np.asarray(t, float) - self.anchor) / self.half_life)

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        self.anchor = float(log.time.max()) if len(log) else 0.0
        w = self.kind_weights[log.kind] * self._boost(log.time)
        self.counts = np.bincount(log.item, weights=w, minlength=log.n_items).astype(float)
        self._pool, self._top = None, None

    def load(self, counts: FloatArray, anchor: float, half_life: float) -> None:
        """Take counts fitted elsewhere (a trained artefact), relative to their anchor time."""
        self.half_life = half_life
        self.n_items = max(self.n_items, len(counts))
        self.counts = _grow(np.asarray(counts, float), self.n_items)
        self.anchor = anchor
        self._pool, self._top, self._touched = None, None, set()

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)
        self.counts = _grow(self.counts, self.n_items)
        if not math.isinf(self.half_life) and event.time - self.anchor > 50 * self.half_life:
            # Re-anchor before 2**exponent overflows; scaling all counts keeps the ranking.
            self.counts *= float(np.exp2((self.anchor - event.time) / self.half_life))
            self.anchor = event.time
        self.counts[event.item] += self.kind_weights[event.kind] * float(self._boost(event.time))
        self._touched.add(event.item)
        self._top = None

    def opinion(self, ctx: Context) -> Trending:
        return self  # the same for every shopper

    def top(self, n: int) -> IntArray:
        """Exact: an item outside the pool that no event touched since the pool was taken
        still ranks below the whole pool (re-anchoring scales every count alike)."""
        if self._top is not None and self._top[0] == n:
            return self._top[1]  # the same for every shopper between two events
        if self._pool is None or n > self.POOL or len(self._touched) > self.REBUILD_AFTER:
            self._pool = best(np.arange(len(self.counts)), self.counts, max(n, self.POOL))
            self._touched = set()
        pool = distinct(np.r_[self._pool, np.fromiter(self._touched, np.int64,
                                                      len(self._touched))])
        top = best(pool, self.counts[pool], n)
        self._top = (n, top)
        return top

    def at(self, items: IntArray) -> FloatArray:
        return Dense(self.counts).at(items)

    def dense(self, n_items: int) -> FloatArray:
        return Dense(self.counts).dense(n_items)


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
        self._recent = RecentItems(per_seq=window or 50)

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        if self.window is None:
            self.pairs.base = all_pairs(log)
            self.pairs.delta, self.pairs._pending = {}, 0
        else:
            rows, cols = [], []
            for _, a, b in pairs_within(log, self.window):
                rows += [a, b]
                cols += [b, a]
            r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
            c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
            self.pairs.fit(r, c, np.ones(len(r)), log.n_items)
        self._recent.seed(log)

    def load_pairs(self, rows: IntArray, cols: IntArray, vals: FloatArray, n: int) -> None:
        """Take pair counts trained elsewhere (`instock recs train`)."""
        self.pairs.fit(rows, cols, vals, n)

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)
        self.pairs.grow(self.n_items)
        for other in self._recent.push(event.seq, event.item):
            self.pairs.add(other, event.item, 1.0)
            self.pairs.add(event.item, other, 1.0)

    def opinion(self, ctx: Context) -> Rows:
        items, w = _context_tail(ctx, self.n_items, self.context_size, self.decay)
        return self.pairs.combine(items, w)


class SequentialRules(_Model):
    """Directed rules a -> b when b follows a within `steps` events, weighted 1/gap.

    This is the sequential-rules method of the session-rec benchmark (its sr.py with weighting
    'div'): a repeated item makes a rule to itself, as there, and each item keeps only its
    `pruning` strongest rules (0 keeps all), ties kept by the lower item code (session-rec keeps
    the first inserted). Scores sum the rules of the last `context_size` items with recency
    weights. Online updates add rules unpruned until the next fit.
    """

    def __init__(
        self, steps: int = 10, context_size: int = 1, decay: float = 1.0, pruning: int = 20
    ) -> None:
        self.steps = steps
        self.context_size = context_size
        self.decay = decay
        self.pruning = pruning
        self.pairs = PairCounts()
        self._recent = RecentItems(per_seq=steps)

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        rows, cols, vals = [], [], []
        for gap, a, b in pairs_within(log, self.steps):
            rows.append(a)
            cols.append(b)
            vals.append(np.full(len(a), 1.0 / gap))
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        v = np.concatenate(vals) if vals else np.zeros(0)
        self.load_pairs(r, c, v, log.n_items)
        self._recent.seed(log)

    def load_pairs(self, rows: IntArray, cols: IntArray, vals: FloatArray, n: int) -> None:
        """Take every rule's weight (from a fit, or trained elsewhere: `instock recs train`
        keeps them all) and keep each item's `pruning` strongest."""
        self.pairs.fit(rows, cols, vals, n)
        if self.pruning > 0:
            self.pairs.base = strongest_per_row(self.pairs.base, self.pruning)

    def update(self, event: Event) -> None:
        self.n_items = max(self.n_items, event.item + 1)
        self.pairs.grow(self.n_items)
        prev = self._recent.push(event.seq, event.item)
        for gap, other in enumerate(reversed(prev), start=1):
            self.pairs.add(other, event.item, 1.0 / gap)

    def opinion(self, ctx: Context) -> Rows:
        items, w = _context_tail(ctx, self.n_items, self.context_size, self.decay)
        return self.pairs.combine(items, w)


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
        self._by_item: sp.csc_matrix = sp.csc_matrix((0, 0))  # the sequences holding each item
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
        self._by_item = self.matrix.tocsc()
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

    def _proximity(self, owner: IntArray, cols: IntArray, pos: IntArray,
                   q: Sparse) -> FloatArray:
        """Per neighbour item: proximity ** (steps from where its sequence meets the context,
        i.e. its item that is most recent in the context)."""
        if self.proximity >= 1.0 or not len(cols):
            return np.ones(len(cols))
        order = np.lexsort((q.at(cols), owner))
        last = order[np.r_[owner[order][1:] != owner[order][:-1], True]]
        meet = np.zeros(int(owner.max()) + 1)
        meet[owner[last]] = pos[last]
        return self.proximity ** np.abs(pos - meet[owner])

    def opinion(self, ctx: Context) -> Sparse:
        if self.auto_flush:
            self._flush()
        items, w = _context_tail(ctx, self.n_items, self.context_size, self.decay)
        q = Sparse.summed(items, w)
        folded = q.items < self._by_item.shape[1]  # newer items have no neighbours yet
        # each sequence sharing context items, with the summed weight of what it shares
        owner, at = ragged(self._by_item.indptr, q.items[folded])
        # a count per sequence: cheaper than sorting the (many) sequences of popular items
        sims = np.bincount(self._by_item.indices[at], weights=q.scores[folded][owner],
                           minlength=self._by_item.shape[0])
        if ctx.seq is not None and ctx.seq in self.row_of:
            sims[self.row_of[ctx.seq]] = 0.0  # a live session is not its own neighbour
        nb = np.flatnonzero(sims > 0)
        sim = sims[nb]
        if len(nb) > self.k:
            pick = np.argpartition(-sim, self.k)[: self.k]
            nb, sim = nb[pick], sim[pick]
        owner, at = ragged(self.positions.indptr, nb)
        cols, pos = self.positions.indices[at], self.positions.data[at]
        votes = Sparse.summed(cols, sim[owner] * self._proximity(owner, cols, pos, q))
        votes.scores *= self._item_weight[votes.items]
        return votes


# Content's candidates come from this many of the values each attribute votes for most (and
# from this many features): each value's most popular items, `n` of them split by vote, at
# least MIN_SLOTS each.
VOTED_VALUES = 5
VOTED_FEATURES = 10
MIN_SLOTS = 5


class ContentSimilarity(_Model):
    """Items sharing attributes (category, brand, price band...) with the recent context.

    Stated preferences (poll answers) count like a context item, which is what makes a new
    visitor's first list relevant. Within a matching attribute, popular items come first.

    Every attribute's values share one numbering (`_slots`: each attribute's values, then one
    slot for its unknown value), and the features follow them: a served list then costs a few
    NumPy calls for all attributes at once rather than a few per attribute and per value.
    """

    def __init__(self, decay: float = 0.8, context_size: int = 20) -> None:
        self.decay = decay
        self.context_size = context_size
        self.attributes: dict[str, IntArray] = {}
        self._n_values: dict[str, int] = {}
        self.features: sp.csr_matrix | None = None
        self.popularity: FloatArray = np.zeros(0)
        self._boost: FloatArray = np.ones(0)  # 1 + log1p(popularity), kept per event
        # Per item, the slot of its value of each attribute (items x attributes); where each
        # attribute's slots begin; the unknown values' slots; how many slots in all.
        self._slots: IntArray = np.zeros((0, 0), np.int64)
        self._first_slot: dict[str, int] = {}
        self._unknown: IntArray = EMPTY_INTS
        self._n_slots = 0
        # Items by slot, most popular first within a slot, and where each slot starts (the
        # features' after the attributes' as slots _n_slots...); how many values of a slot's
        # attribute a list draws from (see `_ContentOpinion.top`).
        self._by_slot: IntArray = EMPTY_INTS
        self._slot_starts: IntArray = np.zeros(1, np.int64)
        self._group_of_slot: IntArray = EMPTY_INTS
        self._most: IntArray = EMPTY_INTS
        # Each item's features as a padded row (columns, values; padding points at column
        # n_features, whose taste is 0), so scoring items by taste is a gather, not a ragged
        # walk of the CSR; None when some item has more than PADDED_FEATURES.
        self._padded: tuple[IntArray, FloatArray] | None = None

    def fit(self, log: EventLog) -> None:
        self.n_items = log.n_items
        self.popularity = np.bincount(log.item, minlength=log.n_items).astype(float)
        self.set_attributes({k: v[: log.n_items] for k, v in log.attributes.items()},
                            log.features)

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
        words; stated preferences name feature columns under the key "features". The orders
        by popularity that candidates are drawn from are taken here (and at a fit), not per event.
        """
        self.attributes = {k: np.asarray(v, np.int64) for k, v in attributes.items()}
        self._n_values = {k: int(v.max()) + 1 if len(v) else 0 for k, v in self.attributes.items()}
        self.features = features
        n = max((len(v) for v in self.attributes.values()), default=0)
        self.n_items = max(self.n_items, n)
        self.popularity = _grow(self.popularity, self.n_items)
        self._boost = 1.0 + np.log1p(self.popularity)
        columns, orders, starts, groups, most = [], [], [], [], []
        first, placed = 0, 0
        self._first_slot = {}
        for g, (name, codes) in enumerate(self.attributes.items()):
            n_values = self._n_values[name]
            self._first_slot[name] = first
            # unknown (-1), and an item the attribute does not reach, take the trailing slot
            slot = np.full(n, first + n_values, np.int64)
            slot[: len(codes)] = np.where(codes >= 0, codes + first, first + n_values)
            columns.append(slot)
            order = np.lexsort((-self._boost[:n], slot))
            orders.append(order)
            starts.append(np.searchsorted(slot[order], np.arange(first, first + n_values + 1))
                          + placed)
            groups.append(np.full(n_values + 1, g))
            most.append(VOTED_VALUES)
            first += n_values + 1
            placed += n
        self._slots = np.stack(columns, axis=1) if columns else np.zeros((n, 0), np.int64)
        self._n_slots = first
        self._unknown = np.array([self._first_slot[name] + self._n_values[name]
                                  for name in self.attributes], np.int64)
        self._padded = None
        if features is not None:
            self._padded = _padded_rows(features.tocsr())
            by_feature = features.tocsc()
            column = np.repeat(np.arange(by_feature.shape[1]), np.diff(by_feature.indptr))
            rows = by_feature.indices.astype(np.int64)
            orders.append(rows[np.lexsort((-_grow(self._boost, by_feature.shape[0], 1.0)[rows],
                                           column))])
            starts.append(by_feature.indptr[:-1].astype(np.int64) + placed)
            groups.append(np.full(by_feature.shape[1], len(self.attributes)))
            most.append(VOTED_FEATURES)
            placed += len(rows)
        self._by_slot = np.concatenate([EMPTY_INTS, *orders]).astype(np.int64)
        self._slot_starts = np.r_[np.concatenate([EMPTY_INTS, *starts]), placed].astype(np.int64)
        self._group_of_slot = np.concatenate([EMPTY_INTS, *groups]).astype(np.int64)
        self._most = np.asarray(most, np.int64)

    def _taste(self, items: IntArray, w: FloatArray, stated: Sequence[int]) -> FloatArray | None:
        """Weight per feature: each context item's features share its weight; answers add 1."""
        f = self.features
        if f is None or not f.shape[1]:
            return None
        known = items < f.shape[0]
        rows, weights = items[known], w[known]
        per_row = np.maximum(f.indptr[rows + 1] - f.indptr[rows], 1)
        if self._padded is not None:
            columns, values = self._padded[0][rows], self._padded[1][rows]
            summed = np.bincount(columns.ravel(), minlength=f.shape[1] + 1,
                                 weights=(values * (weights / per_row)[:, None]).ravel())
            taste: FloatArray = summed[: f.shape[1]].astype(float)  # nothing gives ints
        else:
            owner, at = ragged(f.indptr, rows)
            taste = np.bincount(f.indices[at], weights=f.data[at] * (weights / per_row)[owner],
                                minlength=f.shape[1]).astype(float)
        taste[[v for v in stated if 0 <= v < f.shape[1]]] += 1.0
        return taste if taste.any() else None

    def _votes(self, items: IntArray, w: FloatArray,
               preferences: Mapping[str, Sequence[int]]) -> FloatArray | None:
        """Weight of each slot (every attribute's values) among the context items and stated
        answers; None when nothing has a vote."""
        if not self._n_slots:
            return None
        known = items < len(self._slots)
        slots = self._slots[items[known]]
        votes = np.bincount(slots.ravel(), weights=np.repeat(w[known], slots.shape[1]),
                            minlength=self._n_slots).astype(float)
        votes[self._unknown] = 0.0  # an unknown value is shared by nothing
        for name, stated in preferences.items():
            first = self._first_slot.get(name)
            if first is not None:
                n_values = self._n_values[name]
                votes[[first + v for v in stated if 0 <= v < n_values]] += 1.0
        return votes if votes.any() else None

    def opinion(self, ctx: Context) -> _ContentOpinion:
        items, w = _context_tail(ctx, self.n_items, self.context_size, self.decay)
        if not len(items) and not ctx.preferences:
            return _ContentOpinion(self, None, None, items)  # nothing to be similar to
        return _ContentOpinion(self, self._votes(items, w, ctx.preferences), self._taste(
            items, w, ctx.preferences.get("features", ())), items)


# Items with up to this many features (tags, title words) are scored by taste as padded rows.
PADDED_FEATURES = 32


def _padded_rows(m: sp.csr_matrix) -> tuple[IntArray, FloatArray] | None:
    """A CSR's rows as (columns, values) padded to its longest row with (n_columns, 0.0);
    None when a row is longer than PADDED_FEATURES."""
    lengths = np.diff(m.indptr)
    width = int(lengths.max(initial=0))
    if width > PADDED_FEATURES:
        return None
    columns = np.full((m.shape[0], width), m.shape[1], np.int64)
    values = np.zeros((m.shape[0], width))
    filled = np.arange(width) < lengths[:, None]  # row-major: the CSR's own order
    columns[filled], values[filled] = m.indices, m.data
    return columns, values


class _ContentOpinion:
    def __init__(self, model: ContentSimilarity, votes: FloatArray | None,
                 taste: FloatArray | None, context: IntArray) -> None:
        self.model, self.votes, self.taste, self.context = model, votes, taste, context
        self._padded_taste = np.r_[taste, 0.0] if taste is not None else None  # + padding's

    def at(self, items: IntArray) -> FloatArray:
        m = self.model
        if self.votes is not None:
            slots = m._slots
            inside = items < len(slots)
            out = self.votes[slots[np.where(inside, items, 0)]].sum(axis=1)
            out[~inside] = 0.0
        else:
            out = np.zeros(len(items))
        taste = self._padded_taste
        if taste is not None and m.features is not None and m._padded is not None:
            inside = items < m.features.shape[0]
            at = np.where(inside, items, 0)
            out += np.where(inside, (taste[m._padded[0][at]] * m._padded[1][at]).sum(axis=1),
                            0.0)
        elif self.taste is not None and m.features is not None:
            rows = np.flatnonzero(items < m.features.shape[0])
            owner, at = ragged(m.features.indptr, items[rows])
            out[rows] += np.bincount(owner, minlength=len(rows),
                                       weights=m.features.data[at]
                                       * self.taste[m.features.indices[at]])
        # log-popularity only orders items within a matching attribute value (1 if unknown)
        boost = m._boost
        known = items < len(boost)
        return out * np.where(known, boost[np.where(known, items, 0)], 1.0) if len(boost) \
            else out

    def top(self, n: int) -> IntArray:
        """The most popular items of the few values (and features) with the most votes, n per
        attribute split by vote, then the best n of those by their whole score. An
        approximation: an unpopular item matching several values at once can be missed, except
        the context's own items (each matches every value of its own)."""
        m = self.model
        weights = np.concatenate([self.votes if self.votes is not None
                                  else np.zeros(m._n_slots),
                                  self.taste if self.taste is not None else EMPTY_FLOATS])
        voted = np.flatnonzero(weights > 0)
        picks = [self.context]
        if len(voted):
            weight, group = weights[voted], m._group_of_slot[voted]
            # per attribute (the features count as one), its values by vote, most first
            order = np.lexsort((voted, -weight, group))
            group = group[order]
            rank = np.arange(len(order)) - np.searchsorted(group, group)
            chosen = order[rank < m._most[group]]
            values, weight, group = voted[chosen], weight[chosen], group[rank < m._most[group]]
            summed = np.bincount(group, weights=weight)[group]
            slots = np.maximum(np.ceil(n * weight / summed), MIN_SLOTS).astype(np.int64)
            starts = m._slot_starts[values]
            lengths = np.minimum(slots, m._slot_starts[values + 1] - starts)
            owner = np.repeat(np.arange(len(values)), lengths)
            offsets = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            picks.append(m._by_slot[starts[owner] + offsets])
        candidates = distinct(np.concatenate(picks))
        return best(candidates, self.at(candidates), n)

    def dense(self, n_items: int) -> FloatArray:
        if self.votes is None and self.taste is None:
            return np.zeros(n_items)
        return self.at(np.arange(n_items))


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

    def opinion(self, ctx: Context) -> Sparse:
        known = ctx.items < self.n_items
        w = recency_weights(len(ctx.items), self.decay) * self.kind_weights[ctx.kinds]
        return Sparse.summed(ctx.items[known], w[known])


def only(kind: int) -> tuple[float, ...]:
    """Kind weights selecting a single event kind."""
    return tuple(1.0 if k == kind else 0.0 for k in range(N_KINDS))


# ---------------------------------------------------------------------------------------------
# Hybrid


@dataclass(frozen=True)
class Blend:
    """A hybrid's scores of its candidates, and each component's part of them (for reasons)."""

    items: IntArray
    scores: FloatArray
    parts: dict[str, FloatArray]


class Hybrid:
    """Weighted blend of normalised component scores; weights come from `tuning.tune_weights`.

    Only the union of each weighted component's best `CANDIDATES` items is blended: at serving
    time this runs per request, and offline evaluation ranks exactly what serving would.
    """

    def __init__(
        self, components: Mapping[str, Component], weights: Mapping[str, float] | None = None
    ) -> None:
        self.components = dict(components)
        self.weights = dict(weights or {name: 1.0 for name in self.components})

    def fit(self, log: EventLog) -> None:
        for model in self.components.values():
            model.fit(log)

    def update(self, event: Event) -> None:
        for model in self.components.values():
            model.update(event)

    def opinions(self, ctx: Context, weighted_only: bool = True) -> dict[str, Opinion]:
        return {name: model.opinion(ctx) for name, model in self.components.items()
                if not weighted_only or self.weights.get(name, 0.0) > 0}

    @staticmethod
    def candidates(opinions: Mapping[str, Opinion], depth: int = CANDIDATES) -> IntArray:
        """The union of each opinion's best `depth` items."""
        tops = [opinion.top(depth) for opinion in opinions.values()]
        return distinct(np.concatenate([EMPTY_INTS, *tops]).astype(np.int64))

    @staticmethod
    def component_scores(opinions: Mapping[str, Opinion], candidates: IntArray) -> FloatArray:
        """(n_opinions, n_candidates) scores, each opinion scaled to a maximum of 1 (its best
        item is among the candidates when they include its top: see `candidates`)."""
        return np.vstack([normalise(op.at(candidates)) for op in opinions.values()])

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray:
        if candidates is not None:
            return self.blend(ctx, candidates).scores
        blend = self.blend(ctx)
        out = np.zeros(max(self.n_items, int(blend.items.max(initial=-1)) + 1))
        out[blend.items] = blend.scores
        return out

    def blend(self, ctx: Context, candidates: IntArray | None = None) -> Blend:
        opinions = self.opinions(ctx)
        items = self.candidates(opinions) if candidates is None else candidates
        if not opinions or not len(items):
            return Blend(items, np.zeros(len(items)), {})
        # every opinion's scores as one matrix: the scaling and summing are a few NumPy calls
        # for all of them (the same sums, added in the same order, as one opinion at a time)
        names = list(opinions)
        scores = np.vstack([opinion.at(items) for opinion in opinions.values()])
        tops = scores.max(axis=1)
        counted = np.flatnonzero(tops > 0)  # an opinion without a positive score adds nothing
        weights = np.fromiter((self.weights[names[i]] for i in counted.tolist()), float,
                              len(counted))
        scaled = (weights / tops[counted])[:, None] * scores[counted]
        parts = {names[i]: scaled[j] for j, i in enumerate(counted.tolist())}
        out = scaled.sum(axis=0) if len(counted) else np.zeros(len(items))
        return Blend(items, out, parts)

    @property
    def n_items(self) -> int:
        return max((getattr(m, "n_items", 0) for m in self.components.values()), default=0)


def default_components(
    time_span: float, als_alpha: float = DEFAULT_ALS_ALPHA
) -> dict[str, Component]:
    """The hybrid's candidate components; the tuner decides which matter for a shop.

    Decays are relative (per event, or a share of the training time span), so nothing here
    depends on a particular data set; ALS's confidence weight is tuned per log.
    """
    span = max(time_span, 1.0)
    return {
        "trending": Trending(half_life=span / 20),
        "popularity": Trending(),
        "cooccurrence": CoOccurrence(window=None, context_size=3, decay=0.5),
        "sequential": SequentialRules(steps=10, context_size=1),
        "sequential_ctx": SequentialRules(steps=10, context_size=5, decay=0.5),
        "sknn": SessionKNN(),
        "als": LatentFactors(alpha=als_alpha, pool=SERVING_POOL),
        "content": ContentSimilarity(),
        "affinity_view": CustomerAffinity(only(VIEW)),
        "affinity_cart": CustomerAffinity(only(CART)),
        "affinity_wishlist": CustomerAffinity(only(WISHLIST)),
        "affinity_purchase": CustomerAffinity(only(PURCHASE)),
    }
