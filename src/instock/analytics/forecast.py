"""Demand forecasts for replenishment: pure functions on arrays of bucketed demand (no I/O).

A series is demand per bucket (a day, or a part of one), oldest first. Most SKUs sell rarely and
have little history, so the forecast is built for short, intermittent series:

1. Level. Buckets are summed into cycles (`season` buckets each: a day of 6-hour buckets, or a
   week of days), and the demand per cycle is forecast by one statsforecast model chosen per
   series (`choose_model`). Summing first is the ADIDA idea: fewer zeros, a steadier size per
   demand.
2. Shape. The cycle's demand is spread over its buckets by a profile of shares (the time of day
   people buy). On one sparse SKU the shape is noise, so callers pass a profile pooled over many
   series (group seasonal indices, Withycombe 1989; Dekker et al. 2004); without one the series'
   own history is used.
3. Interval. Counts with a variance `dispersion` times their mean: Poisson when the history is
   not over-dispersed, else the negative binomial with that mean and variance.

Model choice, on the cycle series. The candidates are Croston, SBA, TSB and ADIDA, and AutoETS
for a series that sells in most cycles (ADI < 1.32) once there are `MIN_ETS_PERIODS` of them.
With enough history the one with the smallest mean squared one-step error over the last
`HOLDOUT_PERIODS` cycles wins, each step fitted on the cycles before it only (a rolling origin
inside the history). Before that (fewer than
`MIN_HOLDOUT` such steps), and to break ties, a rule picks by demand pattern (Syntetos, Boylan &
Croston 2005: ADI = periods per demand, CV² = squared coefficient of variation of the non-zero
demands, cut-offs 1.32 and 0.49). On a few days of history the rule alone does worse (the Taobao
backtest, analytics.backtest): Croston's smoothing starts from the first demand and has too few
points to forget it. The error is squared because replenishment needs the mean: absolute error
is smallest at the median, zero on intermittent demand, and chose forecasts a quarter too low on
simulated intermittent series where squared error chose unbiased ones.

- smooth (ADI < 1.32, CV² < 0.49): AutoETS when there are `MIN_ETS_PERIODS` cycles, else Croston
  (on a smooth series Croston is exponential smoothing of the demand);
- erratic and intermittent: SBA, Croston with the Syntetos-Boylan bias correction;
- lumpy (ADI >= 1.32, CV² >= 0.49): ADIDA, whose aggregation evens out the lumps;
- any of these whose current run without demand is longer than `DYING_RUN` mean intervals: TSB,
  which lowers the demand probability in every empty period where Croston stays flat.

The fallback chain for new and short series, in order: no demand ever → `prior` (e.g. the
category's mean; zero by default); fewer than `MIN_MODEL_PERIODS` cycles or fewer than two
demands (no interval to measure) → moving average of the last `MOVING_AVERAGE_WINDOW` cycles; a
model that fails or returns nothing finite → the same moving average.

A forecast's daily mean and spread feed the replenishment formulas (reorder point and quantity),
which are pure and live in analytics.model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from statsforecast.models import ADIDA, TSB, AutoETS, CrostonClassic, CrostonSBA

FloatArray = npt.NDArray[np.float64]

ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49
MIN_MODEL_PERIODS = 3
HOLDOUT_PERIODS = 7  # a week of daily cycles
MIN_HOLDOUT = 2  # one step picks a model by the luck of one day
MIN_DEMANDS = 2
# Two weeks of days: statsforecast refuses fewer than 7 points, and an error model chosen on
# fewer than two weeks is a guess.
MIN_ETS_PERIODS = 14
MOVING_AVERAGE_WINDOW = 7
DYING_RUN = 2.0
# The usual textbook smoothing constants for TSB's size and probability.
TSB_ALPHA = 0.1
# Add-one smoothing of profile counts: a bucket never seen to sell keeps a small share.
PROFILE_SMOOTHING = 1.0

MODELS: dict[str, Callable[[], Any]] = {
    "Croston": CrostonClassic,
    "SBA": CrostonSBA,
    "TSB": lambda: TSB(alpha_d=TSB_ALPHA, alpha_p=TSB_ALPHA),
    "ADIDA": ADIDA,
    "AutoETS": lambda: AutoETS(model="ZNN"),  # no trend: trends on short demand overshoot
}
PRIOR, MOVING_AVERAGE = "prior", "moving_average"


@dataclass(frozen=True)
class DemandClass:
    """Syntetos-Boylan class of a series: `kind` is smooth, erratic, intermittent, lumpy or new."""

    adi: float
    cv2: float
    kind: str


@dataclass(frozen=True)
class Forecast:
    """Expected demand per bucket over the horizon, its central interval, and how it was made."""

    mean: FloatArray
    lower: FloatArray
    upper: FloatArray
    model: str
    demand_class: str
    cycle_mean: float  # expected demand per cycle (per day for sub-daily buckets)
    cycle_sd: float


def _as_demand(y: npt.ArrayLike) -> FloatArray:
    demand = np.asarray(y, dtype=np.float64).ravel()
    if not np.all(np.isfinite(demand)) or np.any(demand < 0):
        raise ValueError("demand must be finite and non-negative")
    return demand


def classify(y: npt.ArrayLike) -> DemandClass:
    """ADI (periods per demand) and CV² of the demand sizes, and the class they put `y` in."""
    demand = _as_demand(y)
    sizes = demand[demand > 0]
    if len(sizes) < MIN_DEMANDS:
        return DemandClass(math.inf, math.nan, "new")
    adi = len(demand) / len(sizes)
    cv2 = float(np.var(sizes) / np.mean(sizes) ** 2)
    if adi < ADI_CUTOFF:
        return DemandClass(adi, cv2, "smooth" if cv2 < CV2_CUTOFF else "erratic")
    return DemandClass(adi, cv2, "intermittent" if cv2 < CV2_CUTOFF else "lumpy")


def _trailing_zeros(demand: FloatArray) -> int:
    sold = np.flatnonzero(demand > 0)
    return len(demand) if not len(sold) else len(demand) - 1 - int(sold[-1])


def _rule(demand: FloatArray, pattern: DemandClass) -> str:
    if _trailing_zeros(demand) > DYING_RUN * pattern.adi:
        return "TSB"
    if pattern.kind == "smooth":
        return "AutoETS" if len(demand) >= MIN_ETS_PERIODS else "Croston"
    return "ADIDA" if pattern.kind == "lumpy" else "SBA"


def _fit_next(name: str, demand: FloatArray) -> float:
    """One-step forecast of model `name`; NaN when it cannot fit (the caller falls back)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numerical chatter on all-but-empty series
            value = float(MODELS[name]().forecast(y=demand, h=1)["mean"][0])
    except (ValueError, ArithmeticError, IndexError, RuntimeError):
        return math.nan  # e.g. AutoETS's "tiny datasets"
    return value if math.isfinite(value) and value >= 0 else math.nan


def _next_or_average(name: str, demand: FloatArray) -> float:
    value = _fit_next(name, demand)
    return float(moving_average(demand, 1)[0]) if math.isnan(value) else value


def holdout_error(name: str, y: npt.ArrayLike, periods: int) -> float:
    """Mean squared one-step error of `name` on the last `periods` values, each forecast from
    the values before it (a failed fit counts as the moving average, as in `level_forecast`)."""
    demand = _as_demand(y)
    steps = range(len(demand) - periods, len(demand))
    return float(np.mean([(_next_or_average(name, demand[:t]) - demand[t]) ** 2 for t in steps]))


def choose_model(y: npt.ArrayLike) -> tuple[str, DemandClass]:
    """The model for the demand-per-period series `y` (the rules in the module docstring)."""
    demand = _as_demand(y)
    pattern = classify(demand)
    if not np.any(demand > 0):
        return PRIOR, pattern
    if len(demand) < MIN_MODEL_PERIODS or pattern.kind == "new":
        return MOVING_AVERAGE, pattern
    preferred = _rule(demand, pattern)
    periods = min(HOLDOUT_PERIODS, len(demand) - MIN_MODEL_PERIODS)
    if periods < MIN_HOLDOUT:
        return preferred, pattern
    ets = len(demand) >= MIN_ETS_PERIODS and pattern.adi < ADI_CUTOFF
    usable = [n for n in MODELS if n != "AutoETS" or ets]
    candidates = [preferred, *(n for n in usable if n != preferred)]  # min keeps the first tie
    return min(candidates, key=lambda n: holdout_error(n, demand, periods)), pattern


def moving_average(
    y: npt.ArrayLike, horizon: int, window: int = MOVING_AVERAGE_WINDOW
) -> FloatArray:
    """Mean of the last `window` values, flat over the horizon (zero without history)."""
    demand = _as_demand(y)
    level = float(demand[-window:].mean()) if len(demand) else 0.0
    return np.full(horizon, level)


def seasonal_naive(y: npt.ArrayLike, horizon: int, season: int) -> FloatArray:
    """Each bucket repeats the same bucket one season earlier (the last season, over and over)."""
    demand = _as_demand(y)
    if len(demand) < season:
        return moving_average(demand, horizon)
    return np.resize(demand[-season:], horizon).astype(np.float64)


def level_forecast(y: npt.ArrayLike, prior: float = 0.0) -> tuple[float, str, DemandClass]:
    """Expected demand for the next period of `y`, the model that gave it, and `y`'s class."""
    demand = _as_demand(y)
    name, pattern = choose_model(demand)
    if name == PRIOR:
        return prior, name, pattern
    value = math.nan if name == MOVING_AVERAGE else _fit_next(name, demand)
    if math.isnan(value):
        return float(moving_average(demand, 1)[0]), MOVING_AVERAGE, pattern
    return value, name, pattern


def seasonal_profile(y: npt.ArrayLike, season: int) -> FloatArray:
    """Share of a cycle's demand that falls in each of its buckets; `y` starts a cycle.

    A trailing partial cycle is left out; counts get add-one smoothing, so shares never vanish.
    """
    demand = _as_demand(y)
    whole = len(demand) - len(demand) % season
    counts = demand[:whole].reshape(-1, season).sum(axis=0) + PROFILE_SMOOTHING
    return counts / counts.sum()


def dispersion(cycles: npt.ArrayLike) -> float:
    """Variance over mean of demand per cycle, at least 1 (Poisson)."""
    demand = _as_demand(cycles)
    mean = float(demand.mean()) if len(demand) else 0.0
    if len(demand) < 2 or mean <= 0:
        return 1.0
    return max(1.0, float(demand.var(ddof=1)) / mean)


def count_interval(
    mean: npt.ArrayLike, over_dispersion: float, level: float
) -> tuple[FloatArray, FloatArray]:
    """Central `level` interval of counts with this mean and variance `over_dispersion` * mean."""
    mu = np.asarray(mean, dtype=np.float64)
    quantiles = ((1 - level) / 2, (1 + level) / 2)
    positive = np.maximum(mu, 1e-12)  # a zero mean is a point mass at zero, set below
    if over_dispersion <= 1.0:
        bounds = [stats.poisson.ppf(q, positive) for q in quantiles]
    else:  # negative binomial: mean n(1-p)/p = mu and variance mu/p = phi * mu
        p = 1.0 / over_dispersion
        bounds = [stats.nbinom.ppf(q, positive * p / (1 - p), p) for q in quantiles]
    lower, upper = (np.where(mu > 0, b, 0.0).astype(np.float64) for b in bounds)
    return lower, upper


def forecast_demand(
    y: npt.ArrayLike,
    horizon: int,
    season: int = 1,
    profile: npt.ArrayLike | None = None,
    phase: int | None = None,
    level: float = 0.8,
    prior: float = 0.0,
) -> Forecast:
    """Forecast `horizon` buckets after `y` (see the module docstring for the method).

    `phase` is the position in the cycle of the first forecast bucket; by default `y` starts a
    cycle. `profile` holds `season` shares; `prior` is the demand per cycle of a new series.
    """
    demand = _as_demand(y)
    if horizon < 1 or season < 1 or not 0 < level < 1:
        raise ValueError("horizon and season must be positive and level within (0, 1)")
    phase = len(demand) % season if phase is None else phase % season
    # Whole cycles only: the current one (its first `phase` buckets) and the oldest, partial one
    # would read as a drop in demand.
    before = demand[: max(len(demand) - phase, 0)]
    aligned = before[len(before) % season :]
    cycles = aligned.reshape(-1, season).sum(axis=1)
    shares = seasonal_profile(aligned, season) if profile is None else _as_demand(profile)
    if len(shares) != season or not shares.sum() > 0:
        raise ValueError(f"a profile needs {season} non-negative shares, not all zero")
    shares = shares / shares.sum()
    per_cycle, model, pattern = level_forecast(cycles, prior)
    mean = per_cycle * shares[(phase + np.arange(horizon)) % season]
    spread = dispersion(cycles)
    lower, upper = count_interval(mean, spread, level)
    return Forecast(
        mean=mean,
        lower=lower,
        upper=upper,
        model=model,
        demand_class=pattern.kind,
        cycle_mean=per_cycle,
        cycle_sd=math.sqrt(spread * per_cycle),
    )
