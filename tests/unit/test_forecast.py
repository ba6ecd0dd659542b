"""Demand forecasts on synthetic series whose structure is known, and the replenishment maths."""

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from instock.analytics import forecast
from instock.analytics.forecast import (
    MODELS,
    classify,
    count_interval,
    forecast_demand,
    level_forecast,
    moving_average,
    seasonal_naive,
    seasonal_profile,
)
from instock.analytics.model import order_up_to_level, reorder_point, reorder_quantity


def intermittent(seed: int, days: int, p: float = 0.25) -> np.ndarray:
    """Demand on a quarter of the days, 1 + Poisson(1) units when it comes: 0.5 a day."""
    rng = np.random.default_rng(seed)
    return (rng.random(days) < p) * (1 + rng.poisson(1.0, days))


def test_intermittent_demand_is_forecast_near_its_known_rate() -> None:
    forecasts = [forecast_demand(intermittent(seed, 120), horizon=7) for seed in range(30)]
    assert {f.demand_class for f in forecasts} == {"intermittent"}
    assert {f.model for f in forecasts} <= set(MODELS) - {"AutoETS"}  # ETS: not intermittent
    means = np.array([f.cycle_mean for f in forecasts])
    assert means.mean() == pytest.approx(0.5, rel=0.15)  # no systematic under-forecast
    # a long run without demand (chance, here) is read as demand fading: TSB, lower
    assert np.median(means) == pytest.approx(0.5, rel=0.25)
    for f in forecasts:  # no season: flat over the horizon
        assert np.allclose(f.mean, f.cycle_mean)


def test_syntetos_boylan_classes() -> None:
    assert classify([3, 4, 3, 4, 3, 4, 3, 4]).kind == "smooth"
    assert classify([1, 9, 1, 9, 1, 9]).kind == "erratic"
    assert classify([0, 0, 2, 0, 0, 2, 0, 0, 2]).kind == "intermittent"
    assert classify([0, 0, 1, 0, 0, 9, 0, 0, 1]).kind == "lumpy"
    assert classify([0, 0, 0, 5]).kind == "new"  # one demand: no interval to measure
    assert classify([0, 0, 2, 0, 0, 2]).adi == pytest.approx(3.0)


def test_fallback_chain_of_a_new_product() -> None:
    never_sold = forecast_demand([], horizon=3, prior=0.4)
    assert never_sold.model == "prior" and np.allclose(never_sold.mean, 0.4)
    assert forecast_demand([0, 0, 0], horizon=3).model == "prior"
    two_days = forecast_demand([0, 3], horizon=3)
    assert two_days.model == "moving_average" and np.allclose(two_days.mean, 1.5)
    one_sale = forecast_demand([0] * 9 + [7], horizon=2)  # one demand in ten days
    assert one_sale.model == "moving_average" and np.allclose(one_sale.mean, 1.0)
    # three days, two demands: too short to compare models, the Syntetos-Boylan rule picks
    assert forecast_demand([2, 0, 2], horizon=1).model == "SBA"
    assert forecast_demand([2, 3, 2], horizon=1).model == "Croston"
    # a month: the holdout picks among the models
    assert forecast_demand(intermittent(1, 30), horizon=1).model in MODELS


def test_a_model_that_cannot_fit_falls_back_to_the_moving_average(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        def forecast(self, **_: object) -> dict[str, np.ndarray]:
            raise NotImplementedError("tiny datasets")

    broken: Callable[[], Broken] = Broken
    monkeypatch.setitem(forecast.MODELS, "SBA", broken)
    value, model, _ = level_forecast([2, 0, 2])
    assert model == "moving_average" and value == pytest.approx(4 / 3)


def test_autoets_only_with_a_long_enough_history() -> None:
    rng = np.random.default_rng(3)
    steady = rng.poisson(20, 60).astype(float)
    assert forecast_demand(steady[:10], horizon=1).model != "AutoETS"
    long = forecast_demand(steady, horizon=1)
    assert long.demand_class == "smooth"
    assert long.cycle_mean == pytest.approx(20, rel=0.15)


def test_the_daily_level_is_spread_by_the_time_of_day_profile() -> None:
    shares = np.array([0.05, 0.25, 0.3, 0.4])  # night, morning, afternoon, evening
    rng = np.random.default_rng(7)
    y = rng.poisson(np.tile(shares * 12, 30)).astype(float)  # 12 a day, 30 days
    own = forecast_demand(y, horizon=8, season=4)
    assert own.cycle_mean == pytest.approx(12, rel=0.2)
    assert np.allclose(own.mean.sum(), 2 * own.cycle_mean)
    assert list(np.argsort(own.mean[:4])) == [0, 1, 2, 3]
    assert np.allclose(seasonal_profile(y, 4), shares, atol=0.03)
    # a pooled profile is used as given; mid-day, the forecast starts at the right bucket
    pooled = forecast_demand(y[:-1], horizon=4, season=4, profile=shares)
    assert np.allclose(pooled.mean, pooled.cycle_mean * shares[[3, 0, 1, 2]])


@pytest.mark.parametrize("dispersed", [False, True])
def test_intervals_contain_the_truth_on_simulated_demand(dispersed: bool) -> None:
    rng = np.random.default_rng(11)
    inside = []
    for _ in range(60):
        # mean 1.5 a day; the negative binomial's variance is 5.25
        series = rng.negative_binomial(1.0, 1 / 2.5, 40) if dispersed else rng.poisson(1.5, 40)
        f = forecast_demand(series[:33], horizon=7, level=0.8)
        # counts: a small mean's upper quantile can be 0, below the mean, and that is right
        assert np.all(f.lower <= f.mean) and np.all(f.lower <= f.upper)
        inside.append(np.mean((series[33:] >= f.lower) & (series[33:] <= f.upper)))
    assert 0.75 <= np.mean(inside) < 0.99


def test_count_interval_quantiles() -> None:
    lower, upper = count_interval([0.0, 4.0], over_dispersion=1.0, level=0.9)
    assert list(lower) == [0, stats.poisson.ppf(0.05, 4)]
    assert list(upper) == [0, stats.poisson.ppf(0.95, 4)]
    _, wider = count_interval([4.0], over_dispersion=3.0, level=0.9)
    assert wider[0] > upper[1]


def test_baselines() -> None:
    y = [1, 2, 3, 4, 5, 6, 7, 8]
    assert list(seasonal_naive(y, 6, season=4)) == [5, 6, 7, 8, 5, 6]
    assert list(moving_average(y, 2, window=4)) == [6.5, 6.5]
    assert list(seasonal_naive([1, 2], 3, season=4)) == [1.5, 1.5, 1.5]  # short: an average
    assert list(moving_average([], 2)) == [0, 0]


def test_reorder_point_and_quantity_match_a_hand_computation() -> None:
    # 10 a day (sd 3), 4 days' lead time, 95 % cycle service: z = 1.6449
    assert reorder_point(10, 3, 4, 0.95) == pytest.approx(40 + 1.644854 * 3 * 2, abs=1e-4)
    # reviewed weekly: cover 11 days
    assert order_up_to_level(10, 3, 4, 7, 0.95) == pytest.approx(
        110 + 1.644854 * 3 * 11**0.5, abs=1e-4
    )
    assert reorder_quantity(10, 3, 4, 7, 0.95, inventory_position=50) == 77  # ceil(76.37)
    assert reorder_quantity(10, 3, 4, 7, 0.95, inventory_position=200) == 0
    assert reorder_point(10, 0, 4, 0.5) == pytest.approx(40)
    for bad in [(10, 3, -1, 0.95), (10, 3, 4, 1.0), (-1, 3, 4, 0.95)]:
        with pytest.raises(ValueError):
            reorder_point(*bad)


def test_bad_demand_is_refused() -> None:
    with pytest.raises(ValueError):
        forecast_demand([1, -2, 3], horizon=1)
    with pytest.raises(ValueError):
        forecast_demand([1, 2, 3], horizon=0)
    with pytest.raises(ValueError):
        forecast_demand([1, 2, 3, 4], horizon=2, season=2, profile=[1, 1, 1])
