"""bench/calibrate_process.py's helpers on synthetic series: calendar days onto 365-day years, and a calibration
that reads only its training towers (the outer tower's target must not move it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import calibrate_process as cal  # noqa: E402


def test_calendar_days_land_on_noleap_years_with_feb29_dropped():
    dates = np.arange(np.datetime64("2015-12-31"), np.datetime64("2017-01-02"), dtype="datetime64[D]")
    values = np.arange(len(dates), dtype=np.float64)
    out = cal.on_noleap_years(dates, values, np.array([2016]))
    assert out.shape == (1, 365)
    assert out[0, 0] == 1.0  # 2016-01-01 (the 2015 and 2017 days are left out)
    assert out[0, 58] == 59.0  # Feb 28
    assert out[0, 59] == 61.0  # Mar 1: Feb 29 (value 60) dropped
    assert out[0, 364] == 366.0  # Dec 31
    assert np.isfinite(out).all()


def test_calibration_finds_the_scale_and_point_and_ignores_the_outer_target():
    rng = np.random.default_rng(0)
    base = {s: rng.gamma(2.0, 5.0, (2, 365)) for s in ("A", "B", "C", "D")}
    sims = {(1.0,): base, (2.0,): {s: v ** 1.3 for s, v in base.items()}}
    obs = {s: 3.0 * v for s, v in base.items()}  # the first point, scaled by 3
    point, a = cal.calibrate(sims, obs, ["A", "B", "C"])
    assert point == (1.0,) and a == pytest.approx(3.0)
    poisoned = {**obs, "D": obs["D"] * 1e3}
    assert cal.calibrate(sims, poisoned, ["A", "B", "C"]) == (point, a)
    assert cal.fit_scale(sims[(1.0,)], {s: -v for s, v in obs.items()}, ["A"])[0] == 0.0  # never negative
