"""The evaluation protocols of ../shared/data/README.md, as pure functions over arrays.

A `Split` is one event log (training and held-out events together, sorted by sequence and
time) plus a mask of training events. Items are coded training items first, so the catalogue
that models rank is simply 0..n_train_items-1 and held-out-only items fall outside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from instock.recommendations.data import (
    PURCHASE,
    BoolArray,
    Context,
    EventLog,
    IntArray,
    sort_order,
)
from instock.recommendations.metrics import Ranker, RankingMetrics
from instock.recommendations.model import Recommender

Progress = Callable[[str, int, int], None]
"""progress(label, done, total): called as targets are scored."""


@dataclass
class Split:
    log: EventLog
    is_train: BoolArray
    n_train_items: int

    @property
    def train(self) -> EventLog:
        part = self.log.select(self.is_train)
        part.n_items = self.n_train_items
        return part

    @property
    def time_span(self) -> float:
        """Span of training time, ignoring the 1% extremes (logs hold stray old clocks)."""
        t = self.log.time[self.is_train]
        return float(np.quantile(t, 0.99) - np.quantile(t, 0.01)) if len(t) else 0.0

    @cached_property
    def _starts(self) -> IntArray:
        return self.log.starts()

    def context_at(self, pos: int) -> Context:
        """Everything the sequence of event `pos` did before it: the target's context."""
        return self.log.context_before(pos, int(self._starts[pos]))


def _codes(values: npt.NDArray[np.generic]) -> IntArray:
    """Dense codes of raw values; empty strings and NaN mean unknown (-1)."""
    uniq, inv = np.unique(values, return_inverse=True)
    missing = np.array([str(u) in ("", "nan", "None") for u in uniq], bool)
    codes = np.where(missing[inv], -1, inv).astype(np.int64)
    # Renumber so that known values are 0..n-1 without gaps.
    known = np.unique(codes[codes >= 0])
    remap = np.full(len(uniq), -1, np.int64)
    remap[known] = np.arange(len(known))
    return np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)


def make_split(
    seq: npt.ArrayLike,
    item: npt.ArrayLike,
    when: npt.ArrayLike,
    kind: npt.ArrayLike,
    is_train: npt.ArrayLike,
    attributes: Mapping[str, npt.ArrayLike] | None = None,
) -> Split:
    """Code raw ids (any hashable dtype) into a Split; `attributes` are per event."""
    train = np.asarray(is_train, bool)
    uniq_items, inv = np.unique(np.asarray(item), return_inverse=True)
    in_train = np.zeros(len(uniq_items), bool)
    in_train[inv[train]] = True
    order = np.r_[np.flatnonzero(in_train), np.flatnonzero(~in_train)]
    code = np.empty(len(uniq_items), np.int64)
    code[order] = np.arange(len(uniq_items))
    items = code[inv]
    per_item = {}
    for name, values in (attributes or {}).items():
        codes = np.full(len(uniq_items), -1, np.int64)
        codes[items] = _codes(np.asarray(values))
        per_item[name] = codes
    seq_codes = np.unique(np.asarray(seq), return_inverse=True)[1]
    log = EventLog.build(seq_codes, items, when, kind, len(uniq_items), per_item)
    # EventLog.build sorted the events; put the mask in the same order.
    return Split(log, train[sort_order(seq_codes, when)], int(in_train.sum()))


def time_split(when: npt.ArrayLike, quantile: float = 0.8) -> BoolArray:
    """Training mask: events at or before the given quantile of timestamps."""
    t = np.asarray(when, float)
    return t <= np.quantile(t, quantile) if len(t) else np.zeros(0, bool)


def price_bands(prices: npt.ArrayLike, n_bands: int = 5) -> IntArray:
    """Quantile band of each price (-1 when unknown) so that price can act as an attribute."""
    p = np.asarray(prices, float)
    ok = np.isfinite(p)
    if not ok.any():
        return np.full(len(p), -1, np.int64)
    edges = np.quantile(p[ok], np.linspace(0, 1, n_bands + 1)[1:-1])
    return np.where(ok, np.searchsorted(edges, np.nan_to_num(p), side="right"), -1)


def target_positions(split: Split, purchase_only: bool = False) -> IntArray:
    """Held-out events with an earlier event in their sequence and an item known from training."""
    log = split.log
    has_prev = np.r_[False, log.seq[1:] == log.seq[:-1]]
    ok = ~split.is_train & has_prev & (log.item < split.n_train_items)
    if purchase_only:
        ok &= log.kind == PURCHASE
    return np.flatnonzero(ok)


def evaluate_model(
    model: Recommender,
    split: Split,
    positions: IntArray,
    k: int,
    label: str = "",
    progress: Progress | None = None,
) -> dict[str, float]:
    """HR@k, MRR@k, NDCG@k and coverage of one fitted model over the target positions."""
    began = time.perf_counter()
    acc = rank_targets(model, split, positions, k, label, progress)
    return {**acc.summary(), "seconds": round(time.perf_counter() - began, 2)}


def rank_targets(
    model: Recommender,
    split: Split,
    positions: IntArray,
    k: int,
    label: str = "",
    progress: Progress | None = None,
) -> RankingMetrics:
    """The rank one fitted model gives each target (in the order of `positions`), and the
    items of its top-k lists."""
    n_cat = split.n_train_items
    ranker = Ranker(n_cat)
    acc = RankingMetrics(k, n_cat)
    for done, pos in enumerate(positions, start=1):
        scores = model.score(split.context_at(int(pos)))[:n_cat]
        acc.add(ranker.rank(scores, int(split.log.item[pos])), ranker.top(scores, k))
        if progress is not None and (done % 200 == 0 or done == len(positions)):
            progress(label, done, len(positions))
    return acc
