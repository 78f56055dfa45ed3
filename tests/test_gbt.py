"""The gradient-boosted-trees baseline: its per-day features, NaN handling, seeding and skill."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from xmw_ray.baselines.gbt import GBTBaseline, day_features
from xmw_ray.data.tower_features import trailing_mean
from xmw_ray.errors import XmwInputError
from xmw_ray.train.metrics import nse

FAST = {"max_iter": 60, "min_samples_leaf": 10}


@pytest.fixture(autouse=True)
def _one_openmp_thread():
    """Small fits: one OpenMP thread avoids oversubscribing the shared cores (the result does not depend on it)."""
    with threadpool_limits(1):
        yield


def make_world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux = seasonal temperature response × static scale + the 30-day rain memory (a wetland water table)."""
    rng = np.random.default_rng(seed)
    t = np.arange(365) / 365
    temp = 10 + 15 * np.sin(2 * np.pi * t - 1.5 + rng.uniform(-0.5, 0.5, (n, 1)))
    rain = rng.gamma(0.5, 6.0, (n, 365))
    dyn = np.stack([temp, rain], axis=-1)
    stat = rng.uniform(0.5, 2.0, (n, 1))
    target = stat * np.maximum(temp, 0) + 3 * trailing_mean(dyn, 30, axis=1)[..., 1]
    target[rng.random((n, 365)) < 0.4] = np.nan
    return dyn, stat, target


def test_trailing_mean_uses_only_available_past_days() -> None:
    x = np.arange(40, dtype=float).reshape(1, 40, 1)
    m = trailing_mean(x, 7, axis=1)[0, :, 0]
    assert m[0] == 0 and m[3] == pytest.approx(1.5)  # mean(0..3)
    assert m[20] == pytest.approx(np.mean(np.arange(14, 21)))


def test_a_gap_day_costs_only_the_windows_that_hold_it() -> None:
    """A missing driver day (tower drivers have gaps) leaves the trailing means of later windows intact: each
    is the mean of the window's valid days, NaN only where the window holds none."""
    dyn = np.random.default_rng(0).normal(size=(1, 365, 2))
    dyn[0, 10, 0] = np.nan
    dyn[0, 40:50, 1] = np.nan
    x = day_features(dyn, np.zeros((1, 1))).astype(np.float64)
    week, month = x[:, 2:4], x[:, 4:6]
    assert np.isfinite(week[:, 0]).all() and np.isfinite(month[:, 0]).all()
    np.testing.assert_allclose(week[12, 0], np.mean(dyn[0, [6, 7, 8, 9, 11, 12], 0]), rtol=1e-5)
    np.testing.assert_allclose(month[200, 0], dyn[0, 171:201, 0].mean(), rtol=1e-5)
    assert np.isnan(week[46:50, 1]).all() and np.isfinite(week[np.r_[:40, 50:365], 1]).all()
    np.testing.assert_allclose(week[52, 1], dyn[0, 50:53, 1].mean(), rtol=1e-5)
    np.testing.assert_allclose(month[300, 1], dyn[0, 271:301, 1].mean(), rtol=1e-5)


def test_day_features_layout() -> None:
    dyn = np.random.default_rng(0).normal(size=(2, 365, 3))
    stat = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = day_features(dyn, stat)
    assert x.shape == (2 * 365, 3 * 3 + 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[365 + 10, :3], dyn[1, 10], rtol=1e-6)  # sample-major rows
    np.testing.assert_allclose(x[365 + 10, 3:6], dyn[1, 4:11].mean(0), rtol=1e-5)  # 7-day trailing mean
    np.testing.assert_allclose(x[365:, -2:], np.broadcast_to(stat[1], (365, 2)))
    # drivers that already carry their trailing means (over a record longer than a sample) take none more
    assert day_features(dyn, stat, ()).shape == (2 * 365, 3 + 2)
    with pytest.raises(XmwInputError, match="trailing_windows"):
        GBTBaseline(trailing_windows=[7, 0])


def test_fits_held_out_samples_with_memory_features() -> None:
    dyn, stat, target = make_world(24, seed=0)
    model = GBTBaseline(**FAST).fit(dyn[:16], stat[:16], target[:16])
    pred = model.predict(dyn[16:], stat[16:])
    assert pred.shape == (8, 365) and pred.dtype == np.float32 and np.isfinite(pred).all()
    assert nse(pred.ravel(), target[16:].ravel()) > 0.9


def test_nan_targets_are_dropped_and_fitting_is_seeded() -> None:
    dyn, stat, target = make_world(6, seed=1)
    blank = target.copy()
    blank[2] = np.nan  # a sample with no observed day contributes no row
    a = GBTBaseline(**FAST).fit(dyn, stat, blank).predict(dyn, stat)
    keep = [0, 1, 3, 4, 5]
    b = GBTBaseline(**FAST).fit(dyn[keep], stat[keep], target[keep]).predict(dyn, stat)
    np.testing.assert_array_equal(a, b)
    sub = {**FAST, "max_rows": 500}
    c1 = GBTBaseline(**sub, random_state=3).fit(dyn, stat, target).predict(dyn, stat)
    c2 = GBTBaseline(**sub, random_state=3).fit(dyn, stat, target).predict(dyn, stat)
    c3 = GBTBaseline(**sub, random_state=4).fit(dyn, stat, target).predict(dyn, stat)
    np.testing.assert_array_equal(c1, c2)
    assert not np.array_equal(c1, c3)


def test_bad_input_is_a_clear_error() -> None:
    dyn, stat, target = make_world(2, seed=2)
    with pytest.raises(XmwInputError, match="unknown hyper-parameter 'n_trees'"):
        GBTBaseline(n_trees=10)
    with pytest.raises(XmwInputError, match="no observed day"):
        GBTBaseline(**FAST).fit(dyn, stat, np.full_like(target, np.nan))
    with pytest.raises(XmwInputError, match="before fit"):
        GBTBaseline().predict(dyn, stat)
    model = GBTBaseline(**FAST).fit(dyn, stat, target)
    with pytest.raises(XmwInputError, match="features per day"):
        model.predict(dyn[..., :1], stat)


def test_a_driver_no_training_sample_measures_is_left_out() -> None:
    """Tower drivers may be missing at every training tower (NaN throughout): the trees fit on the others and
    predict the same as without that column."""
    dyn, stat, target = make_world(12, seed=2)
    blank = np.concatenate([dyn, np.full((12, 365, 1), np.nan)], axis=-1)
    a = GBTBaseline(**FAST).fit(blank, stat, target).predict(blank, stat)
    b = GBTBaseline(**FAST).fit(dyn, stat, target).predict(dyn, stat)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_trees_take_the_season_from_the_drivers_not_a_calendar() -> None:
    """Rows of days with equal drivers are equal: no day-of-year column (hemisphere-blind) is added; the season is
    the drivers' own (the tower set's solar season)."""
    x = day_features(np.ones((1, 365, 2)), np.zeros((1, 1)))
    assert (x == x[0]).all()
