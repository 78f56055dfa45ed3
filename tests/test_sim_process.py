"""The methane process model: frozen soil, the global budget, the simulator/true-world gap, streaming state."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from xmw_ray.sim.process import SIMULATOR, TRUE_WORLD, Forcing, run, spin_up
from xmw_ray.sim.statics import build_world
from xmw_ray.sim.weather import WeatherGenerator
from xmw_ray.sim.world import global_budget_tg


@pytest.fixture(scope="module")
def year_run():
    world = build_world(0, 10.0)
    gen = WeatherGenerator(0, world.clim, world.xyz, world.cont, world.elev)
    wx = gen.year(2010)
    forcing = Forcing(wx.tair, wx.prec, wx.solr, wx.vapr, np.full(365, 389.0))
    props = world.props()
    state = spin_up(forcing, props, SIMULATOR)
    result, end = run(forcing, props, SIMULATOR, state, diagnostics=True)
    return world, forcing, props, state, result, end


def test_frozen_soil_emits_nothing(year_run):
    _, _, _, _, result, _ = year_run
    frozen = result.soil_temp <= 0.0
    assert frozen.sum() > 1000  # the world has winters
    assert np.all(result.ch4[frozen] == 0.0)
    assert np.all(result.ch4 >= 0.0) and np.all(np.isfinite(result.ch4))
    assert result.ch4[~frozen].mean() > 1.0


def test_global_budget_in_plausible_range(year_run):
    world, _, _, _, result, _ = year_run
    assert 100.0 < global_budget_tg(world, result.ch4) < 250.0  # Saunois et al. 2024: 159 [119-203] Tg/yr


def test_water_table_controls_emission(year_run):
    _, _, _, _, result, _ = year_run
    thawed = result.soil_temp > 5.0
    wet = thawed & (result.water_table > 0)
    dry = thawed & (result.water_table < -300)
    assert wet.any() and dry.any()
    assert np.median(result.ch4[wet]) > 3 * np.median(result.ch4[dry])


def test_true_world_differs_by_the_documented_parameters(year_run):
    world, forcing, props, state, result, _ = year_run
    assert (TRUE_WORLD.q10, TRUE_WORLD.wt_efold_mm, TRUE_WORLD.substrate_lag_d) == (3.0, 150.0, 60.0)
    assert (SIMULATOR.q10, SIMULATOR.wt_efold_mm, SIMULATOR.substrate_lag_d) == (2.0, 250.0, 30.0)
    assert replace(TRUE_WORLD, q10=2.0, wt_efold_mm=250.0, substrate_lag_d=30.0) == SIMULATOR
    # only Q10 differs: the flux ratio is (3/2)^((Ts - Tref)/10) exactly, day by day
    only_q10 = replace(SIMULATOR, q10=3.0)
    other, _ = run(forcing, props, only_q10, state, diagnostics=True)
    ok = result.ch4 > 1.0
    expected = (3.0 / 2.0) ** ((result.soil_temp[ok].astype(np.float64) - SIMULATOR.t_ref) / 10.0)
    np.testing.assert_allclose(other.ch4[ok] / result.ch4[ok], expected, rtol=2e-3)


def test_state_carries_across_years(year_run):
    _, forcing, props, state, result, end = year_run
    half = 180
    first = Forcing(*(x[:half] for x in (forcing.tair, forcing.prec, forcing.solr, forcing.vapr, forcing.co2)))
    second = Forcing(*(x[half:] for x in (forcing.tair, forcing.prec, forcing.solr, forcing.vapr, forcing.co2)))
    a, mid = run(first, props, SIMULATOR, state)
    b, last = run(second, props, SIMULATOR, mid)
    np.testing.assert_array_equal(np.concatenate([a.ch4, b.ch4]), result.ch4)
    np.testing.assert_array_equal(last.water_table, end.water_table)
