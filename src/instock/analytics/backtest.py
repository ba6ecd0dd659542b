"""Rolling-origin backtest of the demand forecasts on a sales log (`instock analytics backtest`).

The data decide the set-up. The Taobao log in ../shared/data holds 1,750 purchases over nine days
(25 Nov - 3 Dec 2017, China time, UTC+8) of 1,654 items in 758 categories: no item sells more
than four times, so per-item series are nearly all zeros and every forecast of them is noise.
Series are therefore categories (a stand-in for a SKU with steady sales; `--by sku` for logs that
have them), and a series takes part at an origin when its history has at least
`MIN_PURCHASES` purchases (decided on the history alone, never on what comes after).

Nine days are too few for a daily series (three to eight points per fit, no weekly season to
find), so the buckets are six hours: night, morning, afternoon and evening in local time. That
keeps the one season nine days can show, the time of day people buy (almost nothing sells at
night), with a day as the cycle: the season is `24 / bucket_hours` buckets and the
instock forecast predicts demand per day, then spreads it over the day with a profile pooled over
every series' history (analytics.forecast). With daily buckets (`--bucket-hours 24`) only the
daily level is left, and on this log it does about as well as the week's moving average: what
wins at six hours is mostly the time-of-day profile, and on these few days the level models at
best match the mean.

Protocol: origins at every midnight that leaves `MIN_HISTORY_DAYS` days of history before it and
`horizon_days` of log after it; at each, every model sees only the buckets before the origin and
forecasts the next `horizon_days` days bucket by bucket. Baselines, in the same run on the same
series: seasonal naive (each bucket repeats the same bucket the day before; with daily buckets,
the last day) and a moving average over the last week of buckets.

Metrics. MASE (Hyndman & Koehler 2006): mean absolute error over the horizon divided by the
in-sample mean absolute error of the one-step seasonal-naive forecast on that origin's history; a
series whose history gives that no error (no demand, or the same every day) cannot be scaled and
is left out at that origin. A series' MASE is the mean over its origins; the aggregate is the
arithmetic mean over series. Bias = sum(forecast - actual) / sum(actual) over every evaluated
bucket: +0.1 means 10 % too much forecast. MAE is absolute and rewards forecasting zero on
intermittent series (the median is zero); bias shows when a model buys its MAE that way.
Every model's bias is positive on Taobao: series are picked for having sold at least
`MIN_PURCHASES` times, and such a pick sells less afterwards on average (regression to the mean).

Formats: `taobao` (the UserBehavior log, read by the recommendations' reader; `buy` rows) and
`csv` (`_read_csv`). No package this project depends on ships a retail sales data set (statsmodels'
data sets are macro-economic and survey data, statsforecast's is AirPassengers), so there is no
third format.
"""

from __future__ import annotations

import csv
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from instock.analytics.forecast import (
    MOVING_AVERAGE_WINDOW,
    FloatArray,
    Forecast,
    forecast_demand,
    moving_average,
    seasonal_naive,
    seasonal_profile,
)
from instock.recommendations.data import PURCHASE, kind_code
from instock.recommendations.logs import FormatError, RawEvents, parse_time, read_taobao

FORMATS: tuple[str, ...] = ("taobao", "csv")
LEVELS: tuple[str, ...] = ("category", "sku")
# Taobao's timestamps are UTC; its shoppers' day runs on China Standard Time.
UTC_OFFSET_HOURS: dict[str, float] = {"taobao": 8.0, "csv": 0.0}
DEFAULT_LEVEL: dict[str, str] = {"taobao": "category", "csv": "sku"}
MIN_HISTORY_DAYS = 3
MIN_PURCHASES = 5
DAY_SECONDS = 86_400
MODEL_NAMES: tuple[str, ...] = ("instock", "seasonal_naive", "moving_average")

Progress = Callable[[str, int, int], None]
"""progress(label, done, total), called as origins are evaluated."""


class NotEnoughData(ValueError):
    """The log reads, but holds too little to backtest on (no purchases, too few days)."""


@dataclass(frozen=True)
class Sales:
    """Purchases as parallel arrays: the series each belongs to, when (unix s), how many units."""

    name: str
    series: list[str]
    time: FloatArray
    quantity: FloatArray
    skipped: int
    skipped_examples: list[str]


def _read_csv(path: Path) -> RawEvents:
    """A sales log with a header: `timestamp`, `sku` or `item_id`; optional `quantity` (default
    1), `event_type` (only purchases are kept) and `category`. Bad rows are skipped, reported."""
    raw = RawEvents()
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        sku = next((c for c in ("sku", "item_id") if c in header), None)
        if "timestamp" not in header or sku is None:
            raise FormatError(f"{path.name}: header needs timestamp and sku or item_id: {header}")
        for line, rec in enumerate(reader, start=2):
            try:
                if None in rec or any(v is None for v in rec.values()):
                    raise ValueError("wrong number of fields")
                if "event_type" in rec and kind_code(rec["event_type"]) != PURCHASE:
                    continue
                quantity = float(rec.get("quantity") or 1)
                if not rec[sku].strip() or not (math.isfinite(quantity) and quantity > 0):
                    raise ValueError(f"needs a {sku} and a positive quantity")
                when = parse_time(rec["timestamp"])
                attrs = {"quantity": repr(quantity), "category": rec.get("category") or ""}
                raw.add("", rec[sku].strip(), when, PURCHASE, **attrs)
            except ValueError as exc:
                raw.skip(f"{path.name}:{line}", [str(v) for v in rec.values()], str(exc))
    return raw


def read_sales(path: str | Path, fmt: str, by: str) -> Sales:
    """Purchases of a log in `fmt`, one series per `by` (category or sku)."""
    p = Path(path)
    if fmt not in FORMATS or by not in LEVELS:
        raise ValueError(f"format must be one of {FORMATS} and level one of {LEVELS}")
    raw = read_taobao(p) if fmt == "taobao" else _read_csv(p)
    bought = np.asarray(raw.kind, dtype=np.int64) == PURCHASE
    n = len(raw.kind)
    if by == "category":
        categories = raw.attributes.get("category", [""] * n)
        if bought.any() and not any(c for c, b in zip(categories, bought, strict=True) if b):
            raise FormatError(f"{p.name}: no category column to group purchases by (try --by sku)")
        keys = categories
    else:
        keys = raw.item
    quantity = np.asarray([float(q) for q in raw.attributes.get("quantity", ["1"] * n)])
    return Sales(
        name=p.name,
        series=[k or "(none)" for k, b in zip(keys, bought, strict=True) if b],
        time=np.asarray(raw.time, dtype=np.float64)[bought],
        quantity=quantity[bought],
        skipped=raw.skipped,
        skipped_examples=raw.skipped_examples,
    )


@dataclass(frozen=True)
class Demand:
    """Demand per series (rows) and bucket (columns); bucket 0 starts local midnight `start`."""

    series: list[str]
    matrix: FloatArray
    start: datetime


def bucket_demand(sales: Sales, bucket_hours: int, utc_offset_hours: float) -> Demand:
    """Sum the units of each series into buckets of `bucket_hours` local hours, whole days."""
    if not len(sales.time):
        raise NotEnoughData(
            f"{sales.name}: no purchases to forecast ({sales.skipped} unreadable row(s) skipped)"
        )
    local = sales.time + utc_offset_hours * 3600
    first_day = math.floor(local.min() / DAY_SECONDS)
    days = math.floor(local.max() / DAY_SECONDS) - first_day + 1
    per_day = 24 // bucket_hours
    bucket = ((local - first_day * DAY_SECONDS) // (bucket_hours * 3600)).astype(np.int64)
    keys, row = np.unique(np.asarray(sales.series), return_inverse=True)
    matrix = np.zeros((len(keys), days * per_day))
    np.add.at(matrix, (row, bucket), sales.quantity)
    zone = timezone(timedelta(hours=utc_offset_hours))
    start = datetime.fromtimestamp(first_day * DAY_SECONDS, UTC).replace(tzinfo=zone)
    return Demand([str(k) for k in keys], matrix, start)


def mase_scale(y: FloatArray, season: int) -> float:
    """In-sample mean absolute error of the one-step seasonal-naive forecast (0: unscalable)."""
    return float(np.abs(y[season:] - y[:-season]).mean()) if len(y) > season else 0.0


def _forecasts(
    y: FloatArray, horizon: int, season: int, profile: FloatArray
) -> tuple[dict[str, FloatArray], Forecast]:
    """Every model's forecast of the next `horizon` buckets, and instock's own in full."""
    ours = forecast_demand(y, horizon, season=season, profile=profile)
    return {
        "instock": ours.mean,
        "seasonal_naive": seasonal_naive(y, horizon, season),
        "moving_average": moving_average(y, horizon, window=MOVING_AVERAGE_WINDOW * season),
    }, ours


@dataclass
class _Tally:
    """Errors gathered over the run, per model."""

    mase: dict[str, dict[str, list[float]]]
    abs_error: dict[str, float]
    error: dict[str, float]
    actual: float = 0.0
    buckets: int = 0

    @classmethod
    def empty(cls) -> _Tally:
        zero = dict.fromkeys(MODEL_NAMES, 0.0)
        return cls({m: defaultdict(list) for m in MODEL_NAMES}, dict(zero), dict(zero))

    def add(
        self, series: str, actual: FloatArray, forecasts: dict[str, FloatArray], scale: float
    ) -> None:
        for name in MODEL_NAMES:
            diff = forecasts[name] - actual
            self.mase[name][series].append(float(np.abs(diff).mean()) / scale)
            self.abs_error[name] += float(np.abs(diff).sum())
            self.error[name] += float(diff.sum())
        self.actual += float(actual.sum())
        self.buckets += len(actual)

    def metrics(self, name: str) -> dict[str, float | None]:
        per_series = [float(np.mean(v)) for v in self.mase[name].values()]
        return {
            "mase": round(float(np.mean(per_series)), 4),
            "bias": round(self.error[name] / self.actual, 4) if self.actual else None,
            "mae": round(self.abs_error[name] / self.buckets, 4),
        }


def backtest(
    path: str | Path,
    fmt: str,
    horizon_days: int = 1,
    bucket_hours: int = 6,
    by: str | None = None,
    min_purchases: int = MIN_PURCHASES,
    utc_offset_hours: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate instock's forecasts and the two baselines on one log; the report as a dict."""
    began = time.perf_counter()
    if horizon_days < 1 or bucket_hours < 1 or 24 % bucket_hours:
        raise ValueError("horizon_days must be >= 1 and bucket_hours must divide 24")
    level = by or DEFAULT_LEVEL.get(fmt, "sku")
    offset = UTC_OFFSET_HOURS.get(fmt, 0.0) if utc_offset_hours is None else utc_offset_hours
    sales = read_sales(path, fmt, level)
    demand = bucket_demand(sales, bucket_hours, offset)
    season = 24 // bucket_hours
    horizon = horizon_days * season
    days = demand.matrix.shape[1] // season
    origin_days = list(range(MIN_HISTORY_DAYS, days - horizon_days + 1))
    if not origin_days:
        raise NotEnoughData(
            f"{sales.name}: {days} day(s) of purchases; a backtest needs "
            f"{MIN_HISTORY_DAYS + horizon_days} ({MIN_HISTORY_DAYS} of history, then the horizon)"
        )
    tally, mix, classes = _Tally.empty(), Counter[str](), Counter[str]()
    timeline: list[dict[str, Any]] = []
    unscaled = 0
    for done, day in enumerate(origin_days):
        origin = day * season
        history = demand.matrix[:, :origin]
        future = demand.matrix[:, origin : origin + horizon]
        profile = seasonal_profile(history.sum(axis=0), season)  # pooled over every series
        sums: dict[str, FloatArray] = {n: np.zeros(horizon) for n in ("actual", *MODEL_NAMES)}
        for row in np.flatnonzero(history.sum(axis=1) >= min_purchases):
            scale = mase_scale(history[row], season)
            if scale == 0:
                unscaled += 1
                continue
            forecasts, ours = _forecasts(history[row], horizon, season, profile)
            tally.add(demand.series[row], future[row], forecasts, scale)
            mix[ours.model] += 1
            classes[ours.demand_class] += 1
            sums["actual"] += future[row]
            for name in MODEL_NAMES:
                sums[name] += forecasts[name]
        when = demand.start + timedelta(days=day)
        timeline.append({"origin": when.isoformat()} | {k: v.tolist() for k, v in sums.items()})
        if progress:
            progress("origins", done + 1, len(origin_days))
    if not tally.buckets:
        raise NotEnoughData(
            f"{sales.name}: no series has {min_purchases} purchases before an origin"
        )
    return {
        "dataset": sales.name,
        "format": fmt,
        "series": len(tally.mase["instock"]),
        "series_level": level,
        "evaluations": sum(mix.values()),
        "unscalable_evaluations": unscaled,
        "granularity": f"{bucket_hours}h",
        "buckets_per_day": season,
        "horizon_days": horizon_days,
        "days": days,
        "utc_offset_hours": offset,
        "min_purchases": min_purchases,
        "purchases": len(sales.time),
        "units": float(sales.quantity.sum()),
        "origins": [t["origin"] for t in timeline],
        "models": {name: tally.metrics(name) for name in MODEL_NAMES},
        "model_mix": dict(mix.most_common()),
        "demand_classes": dict(classes.most_common()),
        "aggregate": "MASE: mean over series of each series' mean over origins; "
        "bias: sum(forecast - actual) / sum(actual)",
        "timeline": timeline,
        "skipped_rows": sales.skipped,
        "skipped_examples": sales.skipped_examples,
        "seconds": round(time.perf_counter() - began, 2),
    }
