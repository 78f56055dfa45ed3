"""The built-in world's weather and static maps: seeded, physically bounded, spatially coherent."""

from __future__ import annotations

import numpy as np
import pytest

from xmw_ray.data.fluxnet import saturation_vapour_pressure_hpa
from xmw_ray.data.solar import toa_insolation
from xmw_ray.sim.climatology import DAYS
from xmw_ray.sim.statics import WETLAND_AREA_M2, build_world
from xmw_ray.sim.weather import WeatherGenerator

RES = 10.0


@pytest.fixture(scope="module")
def world():
    return build_world(3, RES)


def _generator(world, seed=3):
    return WeatherGenerator(seed, world.clim, world.xyz, world.cont, world.elev)


def test_same_seed_same_weather_and_other_seed_differs(world):
    a, b = _generator(world).year(2000), _generator(world).year(2000)
    for var in ("tair", "prec", "solr", "vapr"):
        np.testing.assert_array_equal(getattr(a, var), getattr(b, var))
    other = build_world(4, RES)
    assert not np.array_equal(other.cells, world.cells) or not np.array_equal(
        _generator(other, 4).year(2000).tair, a.tair)


def test_a_year_does_not_depend_on_where_the_run_starts(world):
    g = _generator(world)
    g.year(2000)
    np.testing.assert_array_equal(g.year(2001).tair, _generator(world).year(2001).tair)


def test_vapour_pressure_below_saturation_and_radiation_below_top_of_atmosphere(world):
    wx = _generator(world).year(2005)
    assert np.all(wx.vapr > 0)
    assert np.all(wx.vapr <= saturation_vapour_pressure_hpa(wx.tair))
    toa = toa_insolation(world.lat[None, :], DAYS[:, None])
    assert np.all(wx.solr >= 0) and np.all(wx.solr <= toa + 1e-3)
    assert np.all(wx.prec >= 0) and np.all(np.isfinite(wx.tair))


def test_seasonal_cycle_and_latitude_gradient(world):
    wx = _generator(world).year(2000)
    north = world.lat > 45
    july, january = slice(181, 212), slice(0, 31)
    assert wx.tair[july, north].mean() > wx.tair[january, north].mean() + 10
    tropics = np.abs(world.lat) < 15
    assert wx.tair[:, tropics].mean() > wx.tair[:, north].mean() + 10


def test_precipitation_comes_in_wet_and_dry_spells(world):
    wet = _generator(world).year(2000).prec > 0
    p_wet = wet[1:].mean()
    p_wet_after_wet = (wet[1:] & wet[:-1]).sum() / wet[:-1].sum()
    assert 0.1 < p_wet < 0.7
    assert p_wet_after_wet > p_wet + 0.1  # persistence: a wet day is more likely after a wet day


def test_anomalies_are_spatially_coherent(world):
    wx = _generator(world).year(2000)
    anomaly = wx.tair - world.clim.seasonal_temperature()  # weather minus the mean seasonal cycle
    near = np.linalg.norm(world.xyz[:, None] - world.xyz[None, :], axis=-1)
    i, j = np.nonzero((near > 0) & (near < 0.2))  # neighbours within ~1300 km
    far_i, far_j = np.nonzero(near > 1.5)
    corr = np.corrcoef(anomaly.T)
    assert corr[i, j].mean() > 0.3
    assert abs(corr[far_i, far_j].mean()) < 0.1


def test_static_maps_are_consistent(world):
    # Earth's land outside Antarctica is about 135 million km² (149 million less Antarctica's 14)
    assert (world.area * world.land_fraction).sum() == pytest.approx(135e12, rel=0.06)
    assert np.all(world.land_fraction >= 0.2) and np.all(world.land_fraction <= 1.0)
    assert (world.wetland_fraction * world.area).sum() == pytest.approx(WETLAND_AREA_M2, rel=0.02)
    wt = world.maps["wetlandtype"]
    assert set(np.unique(wt)) <= {0, 1, 2, 3, 4, 5}
    assert np.all((wt > 0) == (world.wetland_fraction > 0))
    assert set(np.unique(world.maps["climatetype"])) <= {1, 2, 3, 4, 5}
    assert np.all((world.maps["phh2o"] >= 3.8) & (world.maps["phh2o"] <= 8.5))
    polar = world.maps["climatetype"] == 5
    assert np.all(world.clim.warmest[polar] < 10)
    # the same continents at another resolution: Earth's, and the same climate (continuous fields) on them
    fine = build_world(3, 5.0)
    assert (fine.area * fine.land_fraction).sum() == pytest.approx((world.area * world.land_fraction).sum(), rel=0.03)
    assert (fine.wetland_fraction * fine.area).sum() == pytest.approx(WETLAND_AREA_M2, rel=0.02)
