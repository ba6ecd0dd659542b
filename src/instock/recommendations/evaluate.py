"""Offline evaluation: load a log, tune the hybrid on validation data, compare with baselines.

Protocols are those of ../shared/data/README.md (see `protocol.py`). Nothing is tuned on the
evaluation targets: the hybrid's weights come from a split of the training data only.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from instock.recommendations import comparison, neural
from instock.recommendations.baselines import baseline_models, tune_als
from instock.recommendations.data import VIEW, IntArray, kind_code
from instock.recommendations.latent import DEFAULT_ALS_ALPHA
from instock.recommendations.model import Component, Hybrid, Recommender
from instock.recommendations.protocol import (
    Progress,
    Split,
    make_split,
    price_bands,
    rank_targets,
    target_positions,
    time_split,
)
from instock.recommendations.search import DEFAULT_BUDGET_SECONDS, Chosen, choose

FORMATS: tuple[str, ...] = ("yoochoose", "taobao", "rees46", "csv")
YOOCHOOSE_PREFIX = "yoochoose-clicks-100k_"
# Below this many validation purchases the purchase tuning is noise; tune on next events instead.
MIN_TUNING_TARGETS = 30
MAX_SKIPPED_EXAMPLES = 5
# Validation targets used for tuning: enough for stable weights, bounded for run time.
MAX_TUNING_TARGETS = 5000
MAX_ALS_TUNING_TARGETS = 1000


# ---------------------------------------------------------------------------------------------
# Loading


def _price(value: str) -> float:
    """A price, or NaN when missing or unreadable: a bad price must not drop the event."""
    try:
        return float(value)
    except ValueError:
        return math.nan


@dataclass
class RawEvents:
    """Parsed rows with raw ids; `attributes` are per event (empty string = unknown)."""

    seq: list[str] = field(default_factory=list)
    item: list[str] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def add(self, seq: str, item: str, when: float, kind: int, **attrs: str) -> None:
        self.seq.append(seq)
        self.item.append(item)
        self.time.append(when)
        self.kind.append(kind)
        for name, value in attrs.items():
            self.attributes.setdefault(name, []).append(value)

    def skip(self, where: str, row: list[str], why: str) -> None:
        self.skipped += 1
        if len(self.skipped_examples) < MAX_SKIPPED_EXAMPLES:
            self.skipped_examples.append(f"{where}: {why}: {','.join(row)[:120]}")

    def attribute_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, values in self.attributes.items():
            if name == "price":
                prices = [_price(v) for v in values]
                bands = price_bands(prices)
                out["price_band"] = np.where(bands >= 0, bands.astype(str), "")
            else:
                out[name] = np.asarray(values, dtype=str)
        return out


@dataclass
class Dataset:
    name: str
    final: Split
    tune: Split
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)


def parse_time(value: str) -> float:
    """Unix seconds, or an ISO-8601 / 'YYYY-MM-DD hh:mm:ss UTC' timestamp."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    text = value.removesuffix(" UTC").replace("Z", "+00:00")
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # logs without a zone are taken as UTC
    return stamp.timestamp()


def _rows(path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        yield from enumerate(csv.reader(fh, delimiter=delimiter), start=1)


def _read_yoochoose_file(path: Path, into: RawEvents) -> None:
    for line, row in _rows(path, "\t"):
        if line == 1 and row and row[0] == "SessionId":
            continue
        try:
            session, item, when = row
            into.add(session, item, float(when), VIEW)
        except ValueError as exc:
            into.skip(f"{path.name}:{line}", row, str(exc))


def read_taobao(path: Path) -> RawEvents:
    raw = RawEvents()
    for line, row in _rows(path):
        try:
            user, item, category, behavior, ts = row
            raw.add(user, item, float(int(ts)), kind_code(behavior), category=category)
        except ValueError as exc:
            raw.skip(f"{path.name}:{line}", row, str(exc))
    return raw


Columns = Callable[[dict[str, str]], tuple[Any, ...]]


class FormatError(ValueError):
    """The file is not in the announced format at all (as opposed to a few bad rows)."""


def _check_header(
    path: Path, header: list[str], required: tuple[str, ...], one_of: tuple[str, ...]
) -> None:
    missing = [c for c in required if c not in header]
    if one_of and not any(c in header for c in one_of):
        missing.append(" or ".join(one_of))
    if missing:
        raise FormatError(f"{path.name}: header lacks {', '.join(missing)}; it has {header}")


def _read_with_header(
    path: Path, columns: Columns, required: tuple[str, ...], one_of: tuple[str, ...] = ()
) -> RawEvents:
    raw = RawEvents()
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        _check_header(path, list(reader.fieldnames or []), required, one_of)
        for line, rec in enumerate(reader, start=2):
            try:
                if None in rec or any(v is None for v in rec.values()):
                    raise ValueError("wrong number of fields")
                seq, item, when, kind, attrs = columns(rec)
                raw.add(seq, item, when, kind, **attrs)
            except (ValueError, KeyError) as exc:
                raw.skip(f"{path.name}:{line}", [str(v) for v in rec.values()], str(exc))
    return raw


REES46_COLUMNS = (
    "event_time", "event_type", "product_id", "category_id", "brand", "price", "user_id",
    "user_session",
)  # fmt: skip
# A shop's own log: sessions or users (session_id or user_id), items and times; event_type is
# optional (a log of one kind, say a user's views or purchases in time order, is all views).
CSV_COLUMNS = ("item_id", "timestamp")
CSV_SEQUENCE_COLUMNS = ("session_id", "user_id")
# The files `instock recs stream` reads carry these columns, in this order (a streaming source
# has one schema for every file); the `recs-stream-files` consumer writes them.
STREAM_COLUMNS = ("session_id", "item_id", "timestamp", "event_type")


def _rees46_columns(rec: dict[str, str]) -> tuple[Any, ...]:
    seq = rec["user_session"] or rec["user_id"]
    attrs = {"category": rec["category_id"], "brand": rec["brand"], "price": rec["price"]}
    kind = kind_code(rec["event_type"])
    return seq, rec["product_id"], parse_time(rec["event_time"]), kind, attrs


def _csv_columns(rec: dict[str, str]) -> tuple[Any, ...]:
    seq = rec.get("session_id") or rec["user_id"]
    if not rec["item_id"]:
        raise ValueError("empty item_id")
    attrs = {name: rec[name] for name in ("category", "brand", "price") if name in rec}
    kind = kind_code(rec["event_type"]) if "event_type" in rec else VIEW
    return seq, rec["item_id"], parse_time(rec["timestamp"]), kind, attrs


def read_csv_log(path: Path) -> RawEvents:
    """A shop's own log (the `csv` format): see CSV_COLUMNS."""
    return _read_with_header(path, _csv_columns, CSV_COLUMNS, CSV_SEQUENCE_COLUMNS)


def csv_event(rec: dict[str, str]) -> tuple[str, str, float, int]:
    """One row of a `csv` log as (sequence, item, time, kind); ValueError/KeyError if bad.

    The one reading of a row, for engines that read the file themselves (Spark)."""
    seq, item, when, kind, _ = _csv_columns(rec)
    return seq, item, when, kind


def check_csv_header(path: Path, header: list[str]) -> None:
    _check_header(path, header, CSV_COLUMNS, CSV_SEQUENCE_COLUMNS)


def _split(raw: RawEvents, is_train: np.ndarray) -> Split:
    attrs = raw.attribute_arrays()
    return make_split(raw.seq, raw.item, raw.time, raw.kind, is_train, attrs)


def _unsplit_dataset(name: str, raw: RawEvents) -> Dataset:
    """0.8-quantile time split; tuning repeats it inside the training part only."""
    when = np.asarray(raw.time, float)
    train = time_split(when)
    inner = RawEvents(
        seq=[s for s, t in zip(raw.seq, train, strict=True) if t],
        item=[i for i, t in zip(raw.item, train, strict=True) if t],
        time=when[train].tolist(),
        kind=[k for k, t in zip(raw.kind, train, strict=True) if t],
        attributes={
            n: [v for v, t in zip(vals, train, strict=True) if t]
            for n, vals in raw.attributes.items()
        },
    )
    return Dataset(
        name,
        final=_split(raw, train),
        tune=_split(inner, time_split(inner.time)),
        skipped=raw.skipped,
        skipped_examples=raw.skipped_examples,
    )


def _yoochoose_dataset(folder: Path) -> Dataset:
    """The session-rec split: train_full -> test, and train_tr -> train_valid for tuning."""
    splits = []
    skipped, examples = 0, []
    for train_name, test_name in (("train_full", "test"), ("train_tr", "train_valid")):
        raw = RawEvents()
        _read_yoochoose_file(folder / f"{YOOCHOOSE_PREFIX}{train_name}.txt", raw)
        n_train = len(raw.seq)
        _read_yoochoose_file(folder / f"{YOOCHOOSE_PREFIX}{test_name}.txt", raw)
        is_train = np.arange(len(raw.seq)) < n_train
        splits.append(_split(raw, is_train))
        skipped += raw.skipped
        examples += raw.skipped_examples
    return Dataset(folder.name, splits[0], splits[1], skipped, examples[:MAX_SKIPPED_EXAMPLES])


def load(path: str | Path, fmt: str) -> Dataset:
    p = Path(path)
    if fmt == "yoochoose":
        return _yoochoose_dataset(p)
    if fmt == "taobao":
        return _unsplit_dataset(p.name, read_taobao(p))
    if fmt == "rees46":
        raw = _read_with_header(p, _rees46_columns, REES46_COLUMNS)
        return _unsplit_dataset(p.name, raw)
    if fmt == "csv":
        return _unsplit_dataset(p.name, read_csv_log(p))
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------
# Tuning and evaluation


def _sample(positions: IntArray, limit: int) -> IntArray:
    """At most `limit` targets, a fixed random subset (tuning cost grows with targets)."""
    if len(positions) <= limit:
        return positions
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(positions, limit, replace=False))


def validation_targets(tune: Split, target: str) -> tuple[IntArray, str]:
    """Validation targets of the requested kind, or next events when purchases are too few."""
    positions = target_positions(tune, purchase_only=target == "purchase")
    if target == "purchase" and len(positions) < MIN_TUNING_TARGETS:
        return target_positions(tune), "next"
    return positions, target


def tune_hybrid(
    tune: Split,
    positions: IntArray,
    k: int,
    progress: Progress | None = None,
    fitted: Mapping[str, Component] | None = None,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    started: float | None = None,
    offer_neural: bool = False,
) -> Chosen:
    """The hybrid's components, hyper-parameters and weights, chosen on the validation split of
    the training data within the budget (see `search.choose`; the neural component only when
    offered: the offline evaluation does, a serving refit does not)."""
    return choose(tune, _sample(positions, MAX_TUNING_TARGETS), k, budget_seconds, progress,
                  fitted, started, offer_neural)


def _tune(data: Dataset, target: str, k: int, budget_seconds: float,
          progress: Progress | None) -> tuple[Chosen, dict[str, Any]]:
    """Everything learnt from the validation split: ALS's alpha, then the hybrid (with that
    ALS as one of its components), all within the budget."""
    began = time.perf_counter()
    valid, tuned_on = validation_targets(data.tune, target)
    als_valid = _sample(valid, MAX_ALS_TUNING_TARGETS)
    als, als_scores = tune_als(data.tune, als_valid, k, progress=progress)
    chosen = tune_hybrid(data.tune, valid, k, progress, {"als": als} if als else None,
                         budget_seconds, began, offer_neural=True)
    return chosen, {
        "weights": chosen.weights,
        "validation_targets": len(valid),
        "tuned_on": tuned_on if len(valid) else "nothing (no validation targets)",
        "als_alpha": als.alpha if als else DEFAULT_ALS_ALPHA,
        "als_validation_hr_plus_mrr": als_scores,
        "seconds": round(time.perf_counter() - began, 2),
    }


def _run(
    models: dict[str, Recommender],
    split: Split,
    positions: IntArray,
    k: int,
    progress: Progress | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
    """Each model's metrics with their intervals, and the rank it gave each target."""
    results: dict[str, dict[str, Any]] = {}
    ranks: dict[str, list[int]] = {}
    train = split.train
    for name, model in models.items():
        began = time.perf_counter()
        model.fit(train)
        fit_seconds = round(time.perf_counter() - began, 2)
        began = time.perf_counter()
        ranked = rank_targets(model, split, positions, k, name, progress)
        ranks[name] = ranked.ranks
        results[name] = {**ranked.summary(), **comparison.intervals(ranked.ranks, k),
                         "seconds": round(time.perf_counter() - began, 2),
                         "fit_seconds": fit_seconds}
    return results, ranks


def evaluate(
    path: str | Path,
    fmt: str,
    k: int = 20,
    target: str = "next",
    progress: Progress | None = None,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
) -> dict[str, Any]:
    """Run the protocol for instock's hybrid and every baseline; returns the report as a dict.

    `budget_seconds` bounds the choice of the hybrid on validation data (`search.choose`)."""
    if target not in ("next", "purchase"):
        raise ValueError(f"unknown target {target!r}; expected next or purchase")
    data = load(path, fmt)
    split = data.final
    positions = target_positions(split, purchase_only=target == "purchase")
    # Scoring is many small matrix products: BLAS threads only add overhead there.
    with threadpool_limits(1, "blas"):
        chosen, tuning = _tune(data, target, k, budget_seconds, progress)
        weights = tuning.pop("weights")
        configured = chosen.components(split.time_span, tuning["als_alpha"])
        used = {n: c for n, c in configured.items() if weights[n] > 0}
        models = {"instock": Hybrid(used, weights), **baseline_models(tuning["als_alpha"]),
                  **neural.as_tried(chosen.neural)}
        results, ranks = _run(models, split, positions, k, progress)
    return {
        "dataset": data.name,
        "k": k,
        "target": target,
        "targets": len(positions),
        "models": results,
        # Is the hybrid's lead real? Its paired difference to the best baseline, per metric.
        "versus_best_baseline": comparison.versus_best_baseline(ranks, "instock", k),
        "chosen": comparison.chosen_configuration(
            used, weights, als_alpha=tuning["als_alpha"], tuned_on=tuning["tuned_on"],
            searched=chosen.trials, validation_objective=chosen.validation_objective,
            budget_seconds=budget_seconds, budget_spent=chosen.budget_spent,
            seconds=tuning["seconds"], neural=chosen.neural),
        "weights": weights,
        "tuning": tuning,
        "catalogue": split.n_train_items,
        "events": {"train": int(split.is_train.sum()), "held_out": int((~split.is_train).sum())},
        "skipped_rows": data.skipped,
        "skipped_examples": data.skipped_examples,
    }
