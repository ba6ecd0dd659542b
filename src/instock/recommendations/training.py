"""`instock recs train --engine local`: the served components' statistics from a log, in process.

The statistics are those of the components serving builds (`engine.serving_components`), fitted
by the models' own `fit`; the Spark engine (`spark.py`) computes the same definitions and reads
its parameters from here, so both engines write the same artefacts for the same log.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from instock.recommendations.artefacts import Artefacts, statistics
from instock.recommendations.data import EventLog
from instock.recommendations.engine import DAY, KINDS, epoch, serving_components, subject_of
from instock.recommendations.latent import LatentFactors
from instock.recommendations.logs import RawEvents
from instock.recommendations.model import CoOccurrence, SequentialRules, Trending


class EmptyLog(ValueError):
    """Nothing to train on: the log holds no readable event."""


@dataclass(frozen=True)
class AlsSettings:
    """ALS on sequence x item counts with implicit preferences; defaults are the baseline's."""

    factors: int
    regularization: float
    alpha: float
    iterations: int
    seed: int

    @classmethod
    def default(cls) -> AlsSettings:
        als = LatentFactors()
        return cls(als.factors, als.regularization, als.alpha, als.iterations, als.seed)


@dataclass(frozen=True)
class Parameters:
    """What the statistics depend on besides the events, read off the served components."""

    steps: int  # sequential rules: b follows a within this many events, weighted 1/gap
    half_life: float  # trending: seconds for an event's weight to halve
    anchor: float  # trending: counts are relative to this time (the newest event)
    kind_weights: tuple[float, ...]  # popularity and trending: weight per event kind
    als: AlsSettings

    def manifest(self) -> dict[str, Any]:
        return asdict(self)


def span_of(first: float, last: float) -> float:
    """The training time span as serving's refit takes it (`engine.fit`)."""
    return max(last - first, DAY)


def statistic_components(span: float) -> tuple[CoOccurrence, SequentialRules, Trending, Trending]:
    """The served components whose statistics an artefact holds, configured as served."""
    components = serving_components(span)
    cooccurrence, sequential = components["cooccurrence"], components["sequential"]
    popularity, trending = components["popularity"], components["trending"]
    assert isinstance(cooccurrence, CoOccurrence) and isinstance(sequential, SequentialRules)
    assert isinstance(popularity, Trending) and isinstance(trending, Trending)
    # Both engines implement these definitions; a change of them must be made in both.
    assert cooccurrence.window is None and math.isinf(popularity.half_life)
    assert components["sequential_ctx"].steps == sequential.steps  # type: ignore[attr-defined]
    assert np.array_equal(popularity.kind_weights, trending.kind_weights)
    # An artefact keeps every rule: the serving component prunes its own (load_pairs), so a
    # change of its pruning needs no retraining, and the engines count one definition.
    sequential.pruning = 0
    return cooccurrence, sequential, popularity, trending


def parameters(first: float, last: float, als: AlsSettings) -> Parameters:
    _, sequential, _, trending = statistic_components(span_of(first, last))
    return Parameters(sequential.steps, trending.half_life, last,
                      tuple(float(w) for w in trending.kind_weights), als)


def stored_events(rows: Iterable[Mapping[str, Any]]) -> RawEvents:
    """Stored behaviour rows (the database's, oldest first) as a log, read as a refit reads
    them (`engine.history_log`): a shopper's events are one sequence, other kinds are left out."""
    raw = RawEvents()
    for row in rows:
        if row["kind"] in KINDS and row.get("product_id"):
            raw.add(subject_of(row.get("customer_id"), row.get("session_id")),
                    str(row["product_id"]), epoch(row["occurred_at"]), KINDS[row["kind"]])
    return raw


def item_ids(raw_items: list[str]) -> list[str]:
    """Item ids in code order: sorted, which any engine can reproduce."""
    return sorted(set(raw_items))


def event_log(raw: RawEvents, items: list[str]) -> EventLog:
    code = {item: i for i, item in enumerate(items)}
    seq = np.unique(np.asarray(raw.seq, dtype=str), return_inverse=True)[1]
    return EventLog.build(seq, [code[i] for i in raw.item], raw.time, raw.kind, len(items))


def train_local(raw: RawEvents, als: AlsSettings | None = None) -> Artefacts:
    """Fit the statistics with the models' own code."""
    if not raw.seq:
        raise EmptyLog("the log holds no readable event")
    items = item_ids(raw.item)
    log = event_log(raw, items)
    params = parameters(float(log.time.min()), float(log.time.max()), als or AlsSettings.default())
    cooccurrence, sequential, popularity, trending = statistic_components(
        span_of(float(log.time.min()), float(log.time.max())))
    for model in (cooccurrence, sequential, popularity, trending):
        model.fit(log)
    assert trending.anchor == params.anchor
    settings = params.als
    factoriser = LatentFactors(settings.factors, settings.regularization, settings.alpha,
                             settings.iterations, settings.seed)
    factoriser.fit(log)
    return statistics(items, cooccurrence.pairs.base, sequential.pairs.base, popularity.counts,
                      trending.counts, params.manifest(), "local", len(log),
                      factoriser.item_factors)
