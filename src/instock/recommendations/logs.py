"""Interaction logs read from files, as offline evaluation, training and the Spark jobs take
them: the shared YOOCHOOSE split, Taobao's UserBehavior, REES46's event stream, and any `csv`
log (session or user-level, with an optional rating or weight). A bad row is skipped and
reported, not fatal; a file of the wrong shape is refused with a `FormatError`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from instock.recommendations.data import VIEW, kind_code
from instock.recommendations.protocol import (
    Split,
    make_split,
    price_bands,
    time_split,
)

FORMATS: tuple[str, ...] = ("yoochoose", "taobao", "rees46", "csv")
YOOCHOOSE_PREFIX = "yoochoose-clicks-100k_"
MAX_SKIPPED_EXAMPLES = 5

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


