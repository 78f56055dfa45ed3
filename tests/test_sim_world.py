"""``xmw simulate``: files in the X-MethaneWet layout that come back, value for value, through the real readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xmw_ray.cli import main
from xmw_ray.data import layout
from xmw_ray.data.contract import DAILY_VARS, NMOL_PER_S_TO_MG_PER_DAY, STATIC_VARS, grid_shape, site_cell
from xmw_ray.data.fluxnet import (
    SiteSources,
    find_site_sources,
    iter_site_years,
    read_site_metadata,
    target_days,
)
from xmw_ray.data.layout import WETLAND_EXTENT_FILE
from xmw_ray.data.temmdm import open_temmdm
from xmw_ray.data.wetland_extent import read_wetland_extent
from xmw_ray.sim.process import SIMULATOR, Forcing, run, spin_up
from xmw_ray.sim.site_forcing import parse_site_rows
from xmw_ray.sim.statics import build_world
from xmw_ray.sim.weather import WeatherGenerator

RES, YEARS, SITES, SEED = 10.0, (2003, 2004), 4, 7


def _simulate(out: Path, seed: int = SEED, years: tuple[int, int] = YEARS) -> None:
    argv = ["simulate", "--out", str(out), "--res", str(RES), "--years", f"{years[0]}-{years[1]}",
            "--sites", str(SITES), "--seed", str(seed)]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "sim"
    _simulate(out)
    return out


def _nc(path: Path) -> np.ndarray:
    with xr.open_dataset(path) as ds:
        return np.asarray(ds[next(iter(ds.data_vars))].values)


def test_layout_is_complete_and_off_land_is_nan(sim_dir):
    nlat, nlon = grid_shape(RES)
    land = _nc(layout.static_path(sim_dir, "landmask")) == 1
    assert 0.2 < land.mean() < 0.5
    for var in STATIC_VARS:
        assert np.all(np.isnan(_nc(layout.static_path(sim_dir, var))[~land]))
    for year in range(YEARS[0], YEARS[1] + 1):
        for path in [layout.daily_path(sim_dir, v, year) for v in DAILY_VARS] + [layout.target_path(sim_dir, year)]:
            data = _nc(path)
            assert data.shape == (nlat, nlon, 12, 31)
            assert np.all(np.isnan(data[~land]))
            assert np.all(np.isfinite(data[land][:, 0, :]))  # every land cell has January
            assert np.all(np.isnan(data[land][:, 1, 28:]))  # no Feb 29-31 slots
        npp = _nc(layout.npp_path(sim_dir, year))
        assert npp.shape == (nlat, nlon, 12) and np.all(npp[land] >= 0)
    for var in ("CH4", "CO2"):
        lines = layout.annual_path(sim_dir, var).read_text().split("\n")
        assert [int(line.split()[0]) for line in lines if line] == list(range(YEARS[0], YEARS[1] + 1))
    truth = json.loads((sim_dir / "truth.json").read_text())
    assert all(100 < b < 250 for b in truth["global_wetland_budget_Tg_per_year"].values())


def test_round_trip_through_the_temmdm_reader(sim_dir):
    src = open_temmdm(sim_dir)
    assert src.res == RES and src.years == tuple(range(YEARS[0], YEARS[1] + 1))
    world = build_world(SEED, RES)
    gen = WeatherGenerator(SEED, world.clim, world.xyz, world.cont, world.elev)
    co2 = src.annual_values(src.years)[:, 1]
    wx0 = gen.year(YEARS[0])
    props = world.props()
    state = spin_up(Forcing(wx0.tair, wx0.prec, wx0.solr, wx0.vapr, np.full(365, co2[0])), props, SIMULATOR)
    ilat, ilon = world.ilat, world.ilon
    for i, year in enumerate(src.years):
        wx = gen.year(year)
        result, state = run(Forcing(wx.tair, wx.prec, wx.solr, wx.vapr, np.full(365, co2[i])), props, SIMULATOR, state)
        for var, expected in (("TAIR", wx.tair), ("PREC", wx.prec), ("SOLR", wx.solr), ("VAPR", wx.vapr)):
            got = src.daily(var, year).rows(0, src.nlat)[ilat, ilon]
            np.testing.assert_array_equal(got, expected.T)
        np.testing.assert_array_equal(src.target(year).rows(0, src.nlat)[ilat, ilon], result.ch4.T)
    extent = read_wetland_extent(sim_dir / WETLAND_EXTENT_FILE, RES)  # WAD2M-like: the same fraction every month
    assert extent.variable == "Fw" and extent.time_steps == 12
    np.testing.assert_allclose(extent.monthly[:, ilat, ilon], np.broadcast_to(world.wetland_fraction, (12, world.n)),
                               rtol=1e-6)
    np.testing.assert_array_equal(src.static("wetlandtype").rows(0, src.nlat)[ilat, ilon], world.maps["wetlandtype"])


def test_round_trip_through_the_fluxnet_reader(sim_dir):
    sources = find_site_sources(sim_dir)
    assert sorted(sources.daily_paths) == [f"XW-{i:03d}" for i in range(1, SITES + 1)]
    metas = read_site_metadata(sources.meta_path)
    truth = json.loads((sim_dir / "truth.json").read_text())["towers"]["sites"]
    cols = ["FCH4", "FCH4_F", "FCH4_F_ANNOPTLM", "TA_F", "P_F", "SW_IN_F", "VPD_F"]
    per_site = {}
    for sy in iter_site_years(sources, cols):
        meta = metas[sy.site]
        assert meta.classification and meta.igbp == "WET"
        ilat, ilon = site_cell(meta.lat, meta.lon, RES)
        assert [int(ilat), int(ilon)] == truth[sy.site]["cell"]  # the tower stands in its cell
        assert list(sy.years) == list(range(truth[sy.site]["years"][0], truth[sy.site]["years"][1] + 1))
        path = sources.daily_paths[sy.site]
        rows = parse_site_rows(sy.site, pd.read_csv(path), path, extra=("FCH4",))
        month0 = rows.dates.astype("datetime64[M]").astype(int) % 12
        day0 = (rows.dates - rows.dates.astype("datetime64[M]")).astype(int)
        keep = ~((month0 == 1) & (day0 == 28))  # the reader drops Feb 29
        np.testing.assert_allclose(target_days(sy, "FCH4").ravel(),
                                   rows.columns["FCH4"][keep] * NMOL_PER_S_TO_MG_PER_DAY, equal_nan=True)
        assert np.isnan(sy.columns["FCH4"]).any() and np.isfinite(sy.columns["FCH4_F_ANNOPTLM"]).all()
        per_site[sy.site] = sy
    # X-MethaneWet's combined files carry the same rows (site names with dots, as its code expects)
    combined = SiteSources(meta_path=sim_dir / layout.FLUX_DIR / layout.SITE_META_FILE, daily_paths={},
                           combined_path=sim_dir / layout.FLUX_DIR / layout.SITE_DAILY_FILE)
    info = read_site_metadata(combined.meta_path)
    for sy in iter_site_years(combined, cols):
        site = sy.site.replace(".", "-")
        assert info[site].lat == metas[site].lat
        for col in cols:
            np.testing.assert_array_equal(sy.columns[col], per_site[site].columns[col])


def test_same_seed_same_files_other_seed_differs_and_rerun_is_clean(sim_dir, tmp_path):
    again = tmp_path / "again"
    _simulate(again, years=(2003, 2005))
    _simulate(again)  # re-run into the same folder with a shorter span: no stale year left behind
    names = sorted(p.relative_to(sim_dir) for p in sim_dir.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in names:
        if name.suffix == ".nc":
            np.testing.assert_array_equal(_nc(sim_dir / name), _nc(again / name))
        else:
            assert (sim_dir / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other"
    _simulate(other, seed=SEED + 1)
    assert not np.array_equal(_nc(layout.daily_path(sim_dir, "TAIR", 2003)),
                              _nc(layout.daily_path(other, "TAIR", 2003)), equal_nan=True)
    assert (sim_dir / "FLUXNET-CH4" / "FLUXNET_T1_DD.csv").read_bytes() != (
        other / "FLUXNET-CH4" / "FLUXNET_T1_DD.csv").read_bytes()


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x"), "--res", "7"]) == 2
    assert main(["simulate", "--out", str(tmp_path / "x"), "--years", "2010-2001"]) == 2
    assert main(["simulate", "--out", str(tmp_path / "x"), "--res", "30", "--sites", "500"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("xmw: error: ") for line in err)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*.nc"))


def test_combined_files_alone_prepare_the_same_site_store(sim_dir, tmp_path):
    """X-MethaneWet's combined FLUXNET_T1_DD.csv (dotted ids) gives the same samples as the per-site files."""
    import shutil

    from xmw_ray.data.site_store import SiteStore, prepare_sites

    combined = tmp_path / "combined" / "FLUXNET-CH4"
    combined.mkdir(parents=True)
    for name in ("FLUXNET_T1_DD.csv", "FLUXNET_CH4_2024.csv"):
        shutil.copy(sim_dir / "FLUXNET-CH4" / name, combined / name)
    prepare_sites(sim_dir, tmp_path / "per_site")
    prepare_sites(combined.parent, tmp_path / "from_combined")
    a, b = SiteStore.open(tmp_path / "per_site"), SiteStore.open(tmp_path / "from_combined")
    assert a.sites == b.sites and all("-" in s for s in b.sites)
    sa, sb = a.samples(), b.samples()
    np.testing.assert_allclose(sa["target"], sb["target"], rtol=1e-5, equal_nan=True)


def test_an_unfinished_world_is_refused_also_from_inside_its_folders(tmp_path, monkeypatch):
    """``--src .`` run inside a world's FLUXNET-CH4 folder names the same unfinished world."""
    from xmw_ray.data.layout import FLUX_DIR, WORLD_MARKER, refuse_unfinished_world
    from xmw_ray.errors import XmwInputError

    world = tmp_path / "world"
    (world / FLUX_DIR).mkdir(parents=True)
    (world / WORLD_MARKER).touch()
    monkeypatch.chdir(world / FLUX_DIR)
    for src in (Path("."), world, world / FLUX_DIR):
        with pytest.raises(XmwInputError, match="an unfinished xmw simulate"):
            refuse_unfinished_world(src)
    (world / "truth.json").write_text("{}")
    refuse_unfinished_world(Path("."))
