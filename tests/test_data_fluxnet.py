"""FLUXNET-CH4 readers and the Site store, on the real tower files and on small synthetic ones."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from builders import write_tiny_fluxnet, write_tiny_temmdm

from xmw_ray.data import schema
from xmw_ray.data.contract import STATIC_VARS, site_cell
from xmw_ray.data.fluxnet import find_site_sources, iter_site_years, read_site_metadata
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.site_store import SiteStore, prepare_sites

REAL_SITES = ("BW-Gum", "CA-SCB", "DE-Hte", "DE-SfN", "DE-Zrk", "FI-Hyy", "FI-Lom", "FI-Si2", "FR-LGt", "RU-Ch2",
              "RU-Che", "US-Atq", "US-BZF", "US-EDN", "US-ICs")
JUL15 = 31 + 28 + 31 + 30 + 31 + 30 + 14  # day index of 15 July in a 365-day year


@pytest.fixture(scope="module")
def real_store(fluxnet_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sites") / "sites"
    summary = prepare_sites(fluxnet_dir, out)
    return summary, SiteStore.open(out)


def test_all_real_site_files_ingest(fluxnet_dir, real_store):
    sources = find_site_sources(fluxnet_dir)
    assert tuple(sorted(sources.daily_paths)) == REAL_SITES
    metas = read_site_metadata(sources.meta_path)  # BOM-headed header: SITE_ID must still be found
    assert metas["US-Atq"].lat == pytest.approx(70.4696) and metas["US-Atq"].koppen == "ET"
    seen = {sy.site: sy for sy in iter_site_years(sources, ["FCH4", "TA_F", "GPP_NT"])}
    assert tuple(sorted(seen)) == REAL_SITES
    assert list(seen["DE-Hte"].years) == list(range(2011, 2019))
    summary, store = real_store
    dropped = sum(summary["dropped"].values())
    assert summary["samples"] + dropped == sum(len(sy.years) for sy in seen.values())
    assert store.table().num_rows == summary["samples"] > 0
    s = store.samples()
    assert s[schema.DYNAMIC].shape == (summary["samples"], 365, 5)
    assert np.isfinite(s[schema.DYNAMIC]).all() and np.isfinite(s[schema.STATIC]).all()


def test_unit_conversion_against_a_hand_worked_real_row(real_store):
    # FLX_DE-Hte_..._DD_2011-2018: TIMESTAMP 20120715, FCH4 = 150.486 nmol m-2 s-1, TA_F 15.2576 degC, VPD_F 4.19752 hPa
    # → 150.486 × 1.3859 = 208.5585 mg CH4 m-2 d-1; VAPR = 6.1094·exp(17.625·15.2576/(15.2576+243.04)) − 4.1975 = 13.106
    _, store = real_store
    s = store.samples((pc.field("site") == "DE-Hte") & (pc.field("year") == 2012))
    assert s[schema.TARGET][0, JUL15] == pytest.approx(208.5585, abs=1e-3)
    assert s[schema.DYNAMIC][0, JUL15, 3] == pytest.approx(13.106, abs=1e-3)
    assert s[schema.DYNAMIC][0, JUL15, 2] == pytest.approx(15.2576, abs=1e-3)


def test_missing_markers_and_huge_values_become_nan(fluxnet_dir):
    sources = find_site_sources(fluxnet_dir)
    one = type(sources)(sources.meta_path, {"RU-Ch2": sources.daily_paths["RU-Ch2"]})
    sy = next(iter_site_years(one, ["FCH4", "RECO_NT", "GPP_NT"]))
    y14, y15 = list(sy.years).index(2014), list(sy.years).index(2015)
    assert np.isnan(sy.columns["RECO_NT"][y14, 16])  # 20140117: 'inf' in the file
    assert np.isnan(sy.columns["GPP_NT"][y15, 31 + 28 + 2])  # 20150303: 1.56e142 in the file
    assert np.isnan(sy.columns["FCH4"][y14, 0])  # 20140101: -9999 in the file
    assert np.nanmax(np.abs(sy.columns["GPP_NT"])) < 1e3


def test_feb29_is_dropped_and_partial_years_keep_nan_target(tmp_path):
    frames = write_tiny_fluxnet(tmp_path / "flux", {"XX-Aaa": (50.0, 10.0)}, start="2016-01-01",
                                end="2016-12-31")
    df = frames["XX-Aaa"]
    sy = next(iter_site_years(find_site_sources(tmp_path / "flux"), ["TA_F"]))
    mar1 = df.loc[df.TIMESTAMP == 20160301, "TA_F"].item()
    feb28 = df.loc[df.TIMESTAMP == 20160228, "TA_F"].item()
    assert sy.columns["TA_F"].shape == (1, 365)
    assert sy.columns["TA_F"][0, 58] == feb28 and sy.columns["TA_F"][0, 59] == mar1
    prepare_sites(tmp_path / "flux", tmp_path / "store")
    s = SiteStore.open(tmp_path / "store").samples()
    missing = (df.loc[df.TIMESTAMP != 20160229, "FCH4"] == -9999).to_numpy()
    np.testing.assert_array_equal(np.isnan(s[schema.TARGET][0]), missing)


def test_combined_xmethanewet_files_give_the_same_samples(tmp_path):
    import pandas as pd

    sites = {"XX-Aaa": (50.0, 10.0), "XX-Bbb": (-20.0, 130.0)}
    frames = write_tiny_fluxnet(tmp_path / "release", sites)
    prepare_sites(tmp_path / "release", tmp_path / "a")
    combined = tmp_path / "xmw" / "FLUXNET-CH4"
    combined.mkdir(parents=True)
    pd.concat([f.assign(Site=s) for s, f in frames.items()]).to_csv(combined / "FLUXNET_T1_DD.csv", index=False)
    meta = pd.DataFrame({"SITE_ID": list(sites), "LOCATION_LAT": [v[0] for v in sites.values()],
                         "LOCATION_LONG": [v[1] for v in sites.values()], "LOCATION_ELEV": [12.0, 3.0],
                         "IGBP": ["WET", "WET"], "SITE_CLASSIFICATION": ["Bog", "Bog"], "KOPPEN": ["Dfb", "Dfb"]})
    meta.to_csv(combined / "FLUXNET_CH4_2024.csv", index=False)
    prepare_sites(tmp_path / "xmw", tmp_path / "b")
    a, b = SiteStore.open(tmp_path / "a").samples(), SiteStore.open(tmp_path / "b").samples()
    np.testing.assert_array_equal(a[schema.DYNAMIC], b[schema.DYNAMIC])
    np.testing.assert_array_equal(a[schema.TARGET], b[schema.TARGET])
    np.testing.assert_array_equal(a[schema.ENTITY], b[schema.ENTITY])
    # the combined metadata gives an elevation; the release META has none (slot holds 0)
    assert b[schema.STATIC][0, STATIC_VARS.index("clelev")] == 12.0
    assert a[schema.STATIC][0, STATIC_VARS.index("clelev")] == 0.0


def test_target_choices(fluxnet_dir, real_store, tmp_path):
    prepare_sites(fluxnet_dir, tmp_path / "fill", target="xmw-fill")
    filled = SiteStore.open(tmp_path / "fill").samples()
    missing = ~np.isfinite(filled[schema.TARGET])
    # FCH4_F_ANNOPTLM fills every day in the files; US-ICs has no row for 2014-01-01 (input gap filled, target not)
    rows = np.flatnonzero(missing.any(axis=1))
    assert [(filled[schema.ENTITY][r], filled[schema.YEAR][r]) for r in rows] == [("US-ICs", 2014)]
    assert np.flatnonzero(missing[rows[0]]).tolist() == [0]
    measured = real_store[1].samples()
    assert np.isnan(measured[schema.TARGET]).sum() > 1000  # measured FCH4 has real gaps


def test_grid_gives_npp_statics_and_annual_at_the_site_cell(tmp_path):
    truth = write_tiny_temmdm(tmp_path / "tem", res=10.0, years=(2015, 2016), land_fraction=1.0,
                              wetland_fraction=1.0, spoil_cells=0, seed=3)
    prepare_grid(tmp_path / "tem", tmp_path / "grid.zarr", cells_per_chunk=64)
    write_tiny_fluxnet(tmp_path / "flux", {"XX-Aaa": (47.3, 2.28)}, start="2015-01-01", end="2017-12-31")
    summary = prepare_sites(tmp_path / "flux", tmp_path / "s", grid=tmp_path / "grid.zarr",
                            wetland_types={"XX-Aaa": 4})
    assert summary["samples"] == 2 and summary["dropped"]["year_not_in_grid"] == 1
    store = SiteStore.open(tmp_path / "s")
    s = store.samples()
    ilat, ilon = site_cell(47.3, 2.28, 10.0)
    assert set(store.table()["lat"].to_pylist()) == {47.3} and set(store.table()["lon"].to_pylist()) == {2.28}
    np.testing.assert_array_equal(s[schema.DYNAMIC][1, 31:59, 4], truth["npp"][2016][ilat, ilon, 1])
    assert s[schema.STATIC][0, 0] == truth["static"]["clelev"][ilat, ilon]
    assert s[schema.STATIC][0, STATIC_VARS.index("wetlandtype")] == 4
    ch4 = dict(zip(*truth["annual"]["CH4"], strict=True))
    assert s[schema.STATIC][1, len(STATIC_VARS)] == pytest.approx(ch4[2016])
    assert GridStore.open(tmp_path / "grid.zarr").years == (2015, 2016)


def test_sites_rerun_is_identical(tmp_path):
    write_tiny_fluxnet(tmp_path / "flux", {"XX-Aaa": (50.0, 10.0), "XX-Bbb": (60.0, 20.0)})
    prepare_sites(tmp_path / "flux", tmp_path / "a")
    prepare_sites(tmp_path / "flux", tmp_path / "b")
    prepare_sites(tmp_path / "flux", tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    store = SiteStore.open(tmp_path / "a")
    assert store.sites == ("XX-Aaa", "XX-Bbb") and store.years_of("XX-Bbb") == (2015, 2016)


def test_wetland_class_from_metadata_against_xmethanewets_table(fluxnet_dir):
    """What the comment on ``fluxnet._WETLAND_CLASS`` says: the rule (SITE_CLASSIFICATION and TREE) agrees with
    X-MethaneWet's own per-tower table except at these towers, which ``--wetland-types xmw`` takes from the table."""
    from xmw_ray.data.presets import xmw_wetland_types

    meta = read_site_metadata(next(fluxnet_dir.glob("FLX_AA-Flx_CH4-META_*.csv")))
    table = xmw_wetland_types()
    assert set(table) <= set(meta)
    differ = {s: (meta[s].wetland_class(), v) for s, v in table.items() if meta[s].wetland_class() != v}
    assert differ == {"BW-Gum": (3, 4), "BW-Nxr": (3, 5), "CA-SCC": (0, 1), "DE-SfN": (1, 2), "FI-Si2": (1, 2),
                      "US-BZB": (2, 1), "US-Los": (1, 2), "US-ORv": (4, 3)}


def test_npp_takes_gpp_dt_where_gpp_nt_is_missing_and_counts_those_days(tmp_path, capsys):
    """Half the real towers' site-years lack enough GPP_NT days in some month while GPP_DT (the daytime
    partitioning of the same NEE) has them: those days come from GPP_DT scaled to the tower's GPP_NT level, are
    counted (only in kept site-years), and the year is kept. An impossible GPP_DT value is masked and counted, never
    used. A tower without GPP_DT still drops the year as ``npp_gap``."""
    from xmw_ray.cli import main
    from xmw_ray.data.fluxnet import MONTH_OF_DAY, NPP_PER_GPP, UMOL_PER_S_TO_GC_PER_DAY

    frames = write_tiny_fluxnet(tmp_path / "flux", {"XX-Aaa": (50.0, 10.0), "XX-Bbb": (60.0, 20.0)})
    march_2015, jan_2016 = slice(31 + 28, 31 + 28 + 31), slice(365, 365 + 31)
    for site, frame in frames.items():
        frame.loc[frame.index[march_2015], "GPP_NT"] = -9999
        if site == "XX-Aaa":
            frame["GPP_DT"] = 3.0
            frame.loc[frame.index[march_2015][0], "GPP_DT"] = 500.0  # impossible: masked, not a fill
            frame.loc[frame.index[jan_2016], "GPP_NT"] = -9999  # filled, but 2016 has no target: not counted
            frame.loc[frame.index[365:], ["FCH4", "FCH4_F", "FCH4_F_ANNOPTLM"]] = -9999
        frame.to_csv(tmp_path / "flux" / f"FLX_{site}_FLUXNET-CH4_DD_2015-2016_1-1.csv", index=False)
    out = tmp_path / "s"
    assert main(["prepare", "sites", "--src", str(tmp_path / "flux"), "--out", str(out)]) == 0
    store = SiteStore.open(out)
    assert store.meta["dropped"]["npp_gap"] == 1  # XX-Bbb 2015: no GPP_DT to stand in
    assert store.meta["dropped"]["no_target"] == 1  # XX-Aaa 2016
    assert store.meta["gpp_dt_days"] == 30
    assert store.meta["driver_qc"]["GPP_DT"]["impossible"] == 1
    assert "NPP: 30 days of GPP_NT missing taken from GPP_DT" in capsys.readouterr().out
    rows = store.table()
    kept = list(zip(rows["site"].to_pylist(), rows["year"].to_pylist(), strict=True))
    s = store.samples()
    march = MONTH_OF_DAY == 2
    frame = frames["XX-Aaa"]
    nt = frame["GPP_NT"][(frame["TIMESTAMP"] % 10000 != 229) & (frame["GPP_NT"] != -9999)]  # Feb 29 is dropped
    level = nt.mean()  # GPP_DT (3.0 every day) scaled to the tower's GPP_NT level
    expected = NPP_PER_GPP * level * UMOL_PER_S_TO_GC_PER_DAY * 31
    np.testing.assert_allclose(s[schema.DYNAMIC][kept.index(("XX-Aaa", 2015)), march, 4], expected, rtol=1e-5)
