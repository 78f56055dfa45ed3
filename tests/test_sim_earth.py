"""The built-in world stands on Earth's land (``xmw_ray/sim/earth.py``): known places are land or sea, real towers'
cells are land cells, the world's own towers stand on land, and the same seed gives the same world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xmw_ray.data.contract import grid_shape, site_cell
from xmw_ray.sim import earth
from xmw_ray.sim.statics import build_world, world_cells
from xmw_ray.sim.towers import plan_towers

#: (name, lat, lon, land?) of places whose answer does not depend on a coastline's exact position.
PLACES = [
    ("Sahara centre", 23.0, 13.0, True),
    ("Amazon basin", -3.5, -62.0, True),
    ("West Siberian Lowland", 61.0, 75.0, True),
    ("Hudson Bay Lowlands", 53.0, -85.0, True),
    ("mid-Pacific", 0.0, -160.0, False),
    ("North Atlantic", 35.0, -40.0, False),
    ("Indian Ocean", -20.0, 80.0, False),
]


@pytest.mark.parametrize(("name", "lat", "lon", "land"), PLACES, ids=[p[0] for p in PLACES])
def test_known_places_are_land_or_sea(name: str, lat: float, lon: float, land: bool) -> None:
    assert bool(earth.is_land(lat, lon)) is land
    ilat, ilon = site_cell(lat, lon, 0.5)
    assert earth.land_fraction(0.5)[ilat, ilon] == (1.0 if land else 0.0)
    cells, _ = world_cells(0.5)
    assert (int(ilat * grid_shape(0.5)[1] + ilon) in set(cells.tolist())) is land


def test_land_fraction_nests_across_resolutions() -> None:
    """A 1° cell's land fraction is the mean of its four 0.5° cells' (the sample points nest)."""
    fine, coarse = earth.land_fraction(0.5), earth.land_fraction(1.0)
    np.testing.assert_allclose(fine.reshape(180, 2, 360, 2).mean(axis=(1, 3)), coarse, atol=1e-12)
    assert 0.25 < np.average(coarse.mean(axis=1), weights=np.cos(np.deg2rad(np.arange(-89.5, 90, 1.0)))) < 0.32


def _real_tower_sites(fluxnet_dir: Path) -> pd.DataFrame:
    metas = sorted(fluxnet_dir.glob("FLX_AA-Flx_CH4-META_*.csv"))
    if not metas:
        pytest.skip(f"no FLUXNET-CH4 metadata file in {fluxnet_dir}")
    return pd.read_csv(metas[-1])[["SITE_ID", "LAT", "LON"]]


def test_every_real_tower_stands_in_a_land_cell_at_half_a_degree(fluxnet_dir: Path) -> None:
    sites = _real_tower_sites(fluxnet_dir)
    ilat, ilon = site_cell(sites["LAT"].to_numpy(), sites["LON"].to_numpy(), 0.5)
    cells, _ = world_cells(0.5)
    flat = ilat * grid_shape(0.5)[1] + ilon
    off_land = sites["SITE_ID"][~np.isin(flat, cells)].tolist()
    assert not off_land, f"real towers in cells that are sea in the built-in world: {off_land}"


def test_the_worlds_towers_stand_on_land_in_their_cells() -> None:
    world = build_world(0, 10.0)
    plan = plan_towers(world, 60, (2000, 2005), 0)
    assert earth.is_land(plan.lat, plan.lon).all()
    ilat, ilon = site_cell(plan.lat, plan.lon, 10.0)
    np.testing.assert_array_equal(ilat, world.ilat[plan.cell])
    np.testing.assert_array_equal(ilon, world.ilon[plan.cell])
    # coastal cells are part land: a tower placed anywhere in its cell would often stand in the sea
    assert (world.land_fraction[plan.cell] < 1.0).any()


def test_same_seed_same_world() -> None:
    a, b = build_world(7, 10.0), build_world(7, 10.0)
    for name in ("cells", "elev", "cont", "wetland_fraction", "land_fraction"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for var, values in a.maps.items():
        np.testing.assert_array_equal(values, b.maps[var])
    pa, pb = plan_towers(a, 20, (2000, 2003), 7), plan_towers(b, 20, (2000, 2003), 7)
    np.testing.assert_array_equal(pa.lat, pb.lat)
    np.testing.assert_array_equal(pa.lon, pb.lon)
    other = build_world(8, 10.0)
    np.testing.assert_array_equal(other.cells, a.cells)  # the continents are Earth's for every seed
    assert not np.array_equal(other.wetland_fraction, a.wetland_fraction)  # the climate and wetlands are the seed's
