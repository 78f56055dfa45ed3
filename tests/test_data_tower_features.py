"""`prepare sites --drivers tower`: the towers' own drivers, trailing means, gap flags, simulated flux and metadata
descriptors, on small synthetic towers and on the 15 real ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from builders import write_fluxnet_meta, write_tiny_fluxnet

from xmw_ray.cli import main
from xmw_ray.data import schema
from xmw_ray.data.contract import DYNAMIC_VARS
from xmw_ray.data.fluxnet import SiteMeta, find_site_sources, read_site_metadata
from xmw_ray.data.normstats import site_normstats
from xmw_ray.data.site_store import SiteStore, prepare_sites
from xmw_ray.data.solar import SEASON_VARS, day_length_hours, season_features, sun_trend, toa_insolation
from xmw_ray.data.splits import SplitSpec
from xmw_ray.data.tower_features import (
    PHYSICAL_BOUNDS,
    SIM_MARKER,
    TOWER_STATIC_VARS,
    outside_tower_climate,
    qc_drivers,
    tower_dynamic_vars,
    tower_static,
    tower_units,
)
from xmw_ray.sim.site_forcing import SIM_PENDING, simulate_sites

SITES = {"XX-Aaa": (50.0, 10.0), "XX-Bbb": (-60.0, 20.0)}
BASE = ["TA_F", "P_F", "LE_F", "GPP_NT", "TS_1"]


def _day(stamp: int) -> tuple[int, int]:
    """(year, day index on the 365-day calendar) of a YYYYMMDD date that is not Feb 29."""
    d = pd.Timestamp(str(stamp))
    leap_shift = int(d.is_leap_year and d.month > 2)
    return d.year, d.day_of_year - 1 - leap_shift


def _rewrite(folder, site: str, df: pd.DataFrame) -> None:
    df.to_csv(next(folder.glob(f"FLX_{site}_*.csv")), index=False)


def _column(store: SiteStore, site: str, var: str) -> tuple[np.ndarray, np.ndarray]:
    """``(years, (n_years, 365))`` of one dynamic var of one tower."""
    s = store.samples(pc.field("site") == site)
    return s[schema.YEAR], s[schema.DYNAMIC][:, :, store.dynamic_vars.index(var)]


def _value(store: SiteStore, site: str, var: str, stamp: int) -> float:
    years, values = _column(store, site, var)
    year, day = _day(stamp)
    return float(values[list(years).index(year), day])


def _fails(capsys, argv: list[str], needle: str, out) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("xmw: error: ") and sum(line.startswith("xmw:") for line in lines) == 1, lines
    assert needle in lines[-1], lines[-1]
    assert not out.exists()


def test_var_lists_order_and_metadata(tmp_path):
    means = [f"{v}_mean{w}" for v in BASE for w in (7, 30)]
    flags = [f"{v}_missing" for v in BASE]
    season = ["DAY_LENGTH", "TOA_RAD", "SUN_TREND"]
    assert list(tower_dynamic_vars(with_sim=False)) == [*BASE, *means, *flags, *season]
    with_sim = list(tower_dynamic_vars(with_sim=True))
    assert with_sim[:6] == [*BASE, "SIM_FCH4"] and with_sim[16:18] == ["SIM_FCH4_mean7", "SIM_FCH4_mean30"]
    assert with_sim[-4:] == ["SIM_FCH4_missing", *season] and len(with_sim) == 6 * 4 + 3
    assert not any("DOY" in v for v in with_sim)  # the bare day of year is hemisphere-blind: never an input
    assert tower_units(False)["DAY_LENGTH"] == "h" and tower_units(False)["TOA_RAD"] == "W m-2"
    assert list(TOWER_STATIC_VARS) == ["class_bog", "class_fen", "class_tundra", "class_swamp", "class_marsh",
                                       "class_other", "abs_lat", "igbp_wet", "moss_brown", "moss_sphagnum",
                                       "aerenchymatous", "eri_shrub", "tree"]
    write_tiny_fluxnet(tmp_path / "flux", SITES)
    prepare_sites(tmp_path / "flux", tmp_path / "store", drivers="tower")
    store = SiteStore.open(tmp_path / "store")
    assert store.dynamic_vars == tower_dynamic_vars(with_sim=False)
    assert store.static_vars == TOWER_STATIC_VARS
    assert set(store.units) == {*store.dynamic_vars, *store.static_vars, "CH4_emission"}
    assert store.units["TA_F_mean30"] == "degC" and store.units["abs_lat"] == "degrees"
    assert store.meta["drivers"] == "tower" and store.meta["sim_source"] is None
    s = store.samples()
    assert s[schema.DYNAMIC].shape == (4, 365, len(store.dynamic_vars)) and s[schema.STATIC].shape == (4, 13)
    for site, (lat, _) in SITES.items():  # each tower's season from its own latitude
        got = s[schema.DYNAMIC][list(s[schema.ENTITY]).index(site), :, -3:]
        np.testing.assert_allclose(got, season_features(lat), rtol=1e-6, atol=1e-4)
    features = {f.name: f for f in store.features.dynamic}
    assert features["DAY_LENGTH"].meaning == "day_length" and features["TOA_RAD"].provenance == "derived"


def test_season_is_solar_and_hemisphere_correct():
    """A northern tower's 1 July is a southern tower's 1 January (same |lat|): day length equal to within
    minutes (1 July and 1 January lie ~2 days apart from their solstices), exactly mirrored (N + S = 24 h on any day), TOA equal up to the orbital
    eccentricity (the Earth is nearest the sun in January); the sun climbs in the northern spring and the southern
    one. The equator has 12 h every day, the poles polar day and night."""
    july1, jan1 = 182, 1
    for lat in (10.0, 35.0, 50.0, 64.0):
        assert day_length_hours(lat, july1) == pytest.approx(day_length_hours(-lat, jan1), abs=0.1)
        assert day_length_hours(lat, july1) > 12.0 > day_length_hours(lat, jan1)
        days = np.arange(1, 366)
        np.testing.assert_allclose(day_length_hours(lat, days) + day_length_hours(-lat, days), 24.0, atol=1e-9)
        ratio = toa_insolation(-lat, jan1) / toa_insolation(lat, july1)
        assert 1.0 < ratio < 1.075  # perihelion in January: a few % more, never a season apart
        assert sun_trend(lat, 100) == 1 and sun_trend(-lat, 100) == -1  # 10 April: north spring, south autumn
        np.testing.assert_array_equal(sun_trend(lat, days), -sun_trend(-lat, days))
    np.testing.assert_allclose(day_length_hours(0.0, np.arange(1, 366)), 12.0, atol=1e-12)
    assert (sun_trend(0.0, np.arange(1, 366)) == 0).all()
    assert day_length_hours(89.0, july1) == 24.0 and day_length_hours(89.0, jan1) == 0.0
    assert day_length_hours(-89.0, july1) == 0.0 and day_length_hours(-89.0, jan1) == 24.0
    assert toa_insolation(89.0, jan1) == 0.0 and toa_insolation(89.0, july1) > 500.0
    dl = day_length_hours(np.linspace(-90, 90, 37)[:, None], np.arange(1, 366)[None, :])
    assert dl.min() >= 0.0 and dl.max() <= 24.0
    assert season_features(-50.0).shape == (365, len(SEASON_VARS))


def test_trailing_means_by_hand_across_the_year_boundary(tmp_path):
    df = write_tiny_fluxnet(tmp_path / "flux", {"XX-Aaa": SITES["XX-Aaa"]})["XX-Aaa"]
    df.loc[df.TIMESTAMP == 20151230, "TA_F"] = -9999
    df.loc[df.TIMESTAMP.between(20150601, 20150607), "TA_F"] = -9999
    _rewrite(tmp_path / "flux", "XX-Aaa", df)
    prepare_sites(tmp_path / "flux", tmp_path / "store", drivers="tower")
    store = SiteStore.open(tmp_path / "store")
    ta = df.set_index("TIMESTAMP")["TA_F"]

    def mean(stamps):
        values = ta.loc[stamps]
        return values[values != -9999].mean()

    # 3 Jan 2016: 7 days back reach 28 Dec 2015; 30 Dec 2015 is missing and skipped
    week = [20151228, 20151229, 20151230, 20151231, 20160101, 20160102, 20160103]
    assert _value(store, "XX-Aaa", "TA_F_mean7", 20160103) == pytest.approx(mean(week), rel=1e-6)
    month = [int(d.strftime("%Y%m%d")) for d in pd.date_range("2015-12-05", "2016-01-03")]
    assert _value(store, "XX-Aaa", "TA_F_mean30", 20160103) == pytest.approx(mean(month), rel=1e-6)
    # 2 Mar 2016 on the 365-day calendar: 29 Feb is not a day, so the week starts on 24 Feb
    leap_week = [20160224, 20160225, 20160226, 20160227, 20160228, 20160301, 20160302]
    assert _value(store, "XX-Aaa", "TA_F_mean7", 20160302) == pytest.approx(mean(leap_week), rel=1e-6)
    # the record's first days average what the record has; a window of missing days only is NaN
    assert _value(store, "XX-Aaa", "TA_F_mean7", 20150103) == pytest.approx(mean([20150101, 20150102, 20150103]),
                                                                            rel=1e-6)
    assert np.isnan(_value(store, "XX-Aaa", "TA_F_mean7", 20150607))
    assert _value(store, "XX-Aaa", "TA_F_mean7", 20150608) == pytest.approx(ta.loc[20150608], rel=1e-6)
    assert _value(store, "XX-Aaa", "TA_F_mean30", 20150607) == pytest.approx(
        mean([int(d.strftime("%Y%m%d")) for d in pd.date_range("2015-05-09", "2015-06-07")]), rel=1e-6)


def test_gaps_are_kept_with_flags_and_only_targetless_years_drop(tmp_path):
    frames = write_tiny_fluxnet(tmp_path / "flux", SITES)
    a, b = frames["XX-Aaa"], frames["XX-Bbb"]
    gap = a.TIMESTAMP.between(20150601, 20150610)
    a.loc[gap, "TA_F"] = -9999
    b.loc[b.TIMESTAMP >= 20160101, "FCH4"] = -9999
    _rewrite(tmp_path / "flux", "XX-Aaa", a)
    _rewrite(tmp_path / "flux", "XX-Bbb", b)

    xmw = prepare_sites(tmp_path / "flux", tmp_path / "xmw")
    assert xmw["dropped"]["input_gap"] == 1 and xmw["dropped"]["no_target"] == 1 and xmw["samples"] == 2
    tower = prepare_sites(tmp_path / "flux", tmp_path / "tower", drivers="tower")
    assert tower["samples"] == 3 and tower["dropped"] == {**xmw["dropped"], "input_gap": 0}
    store = SiteStore.open(tmp_path / "tower")
    assert store.years_of("XX-Aaa") == (2015, 2016) and store.years_of("XX-Bbb") == (2015,)

    years, ta = _column(store, "XX-Aaa", "TA_F")
    _, flag = _column(store, "XX-Aaa", "TA_F_missing")
    gap_days = [_day(t)[1] for t in a.TIMESTAMP[gap]]
    assert np.isnan(ta[0, gap_days]).all() and np.isfinite(np.delete(ta[0], gap_days)).all()
    np.testing.assert_array_equal(flag, np.isnan(ta).astype(np.float32))
    assert flag[0].sum() == 10 and flag[1].sum() == 0
    for absent in ("LE_F", "TS_1"):  # not written by the tiny builder: all NaN, flag all 1
        _, values = _column(store, "XX-Aaa", absent)
        _, missing = _column(store, "XX-Aaa", f"{absent}_missing")
        assert np.isnan(values).all() and (missing == 1).all()
        assert np.isnan(_column(store, "XX-Aaa", f"{absent}_mean30")[1]).all()


def test_sim_fch4_is_the_simulated_files_flux_in_mg(tmp_path):
    write_tiny_fluxnet(tmp_path / "flux", SITES)
    simulate_sites(tmp_path / "flux", tmp_path / "sim", log=lambda msg: None)
    prepare_sites(tmp_path / "flux", tmp_path / "store", drivers="tower", sim_sites=tmp_path / "sim")
    store = SiteStore.open(tmp_path / "store")
    assert store.dynamic_vars == tower_dynamic_vars(with_sim=True)
    assert store.meta["sim_source"] == str(tmp_path / "sim") and store.units["SIM_FCH4"] == "mg CH4 m-2 d-1"
    for site in SITES:
        sim = pd.read_csv(next((tmp_path / "sim" / "FLUXNET-CH4").glob(f"FLX_{site}_*.csv")))
        sim = sim[sim.TIMESTAMP % 10000 != 229]
        nmol = sim["FCH4"].replace(-9999, np.nan).to_numpy()
        years, got = _column(store, site, "SIM_FCH4")
        assert list(years) == [2015, 2016] and np.isfinite(nmol).sum() > 700
        np.testing.assert_allclose(got.reshape(-1), nmol * 1.3859, rtol=1e-6)
        _, flag = _column(store, site, "SIM_FCH4_missing")
        np.testing.assert_array_equal(flag.reshape(-1), np.isnan(nmol))


def test_static_one_hot_and_flags_from_meta(tmp_path):
    expected_class = {"Bog": "bog", "Fen": "fen", "Wet tundra": "tundra", "Drained": "tundra", "Swamp": "swamp",
                      "Marsh": "marsh", "Salt marsh": "marsh", "Upland": "other"}
    classes = ["bog", "fen", "tundra", "swamp", "marsh", "other"]
    for text, cls in expected_class.items():
        onehot = tower_static(SiteMeta(site="XX-Aaa", lat=1.0, lon=0.0, classification=text))[:6]
        np.testing.assert_array_equal(onehot, [float(c == cls) for c in classes], err_msg=text)
    assert np.isnan(tower_static(SiteMeta(site="XX-Aaa", lat=1.0, lon=0.0, classification=" "))[:6]).all()

    write_tiny_fluxnet(tmp_path / "flux", SITES)
    write_fluxnet_meta(tmp_path / "flux", [
        {"SITE_ID": "XX-Aaa", "LAT": 50.0, "LON": 10.0, "SITE_CLASSIFICATION": "Salt marsh", "IGBP": "WET",
         "MOSS_BROWN": 1, "MOSS_SPHAGNUM": "", "AERENCHYMATOUS": 1, "ERI_SHRUB": 0, "TREE": 1},
        {"SITE_ID": "XX-Bbb", "LAT": -60.0, "LON": 20.0, "SITE_CLASSIFICATION": "Upland", "IGBP": "ENF",
         "MOSS_BROWN": 0, "MOSS_SPHAGNUM": 1, "AERENCHYMATOUS": 0, "ERI_SHRUB": 1, "TREE": ""},
    ])
    prepare_sites(tmp_path / "flux", tmp_path / "store", drivers="tower")
    s = SiteStore.open(tmp_path / "store").samples()
    by_site = {site: s[schema.STATIC][list(s[schema.ENTITY]).index(site)] for site in SITES}
    #                     bog fen tun swa mar oth |lat| wet brown sphag aer eri tree
    nan = np.nan  # a flag the metadata leaves empty is unknown, not "absent"
    np.testing.assert_array_equal(by_site["XX-Aaa"], [0, 0, 0, 0, 1, 0, 50, 1, 1, nan, 1, 0, 1])
    np.testing.assert_array_equal(by_site["XX-Bbb"], [0, 0, 0, 0, 0, 1, 60, 0, 0, 1, 0, 1, nan])

    bare = write_fluxnet_meta(tmp_path / "bare", [{"SITE_ID": "XX-Aaa", "LAT": 5, "LON": 5, "IGBP": "WET"}])
    np.testing.assert_array_equal(tower_static(read_site_metadata(bare)["XX-Aaa"]),
                                  [*[nan] * 6, 5, 1, nan, nan, nan, nan, nan])


def test_descriptors_the_metadata_does_not_give_are_unknown_and_counted(tmp_path, capsys):
    """A user's tower whose META file lacks the class, IGBP and flag columns gets NaN there (models fill the
    training mean), never a silent 0 or "other"; the summary and the command's output count them."""
    write_tiny_fluxnet(tmp_path / "flux", SITES)
    write_fluxnet_meta(tmp_path / "flux", [
        {"SITE_ID": "XX-Aaa", "LAT": 50.0, "LON": 10.0, "SITE_CLASSIFICATION": "Bog", "IGBP": "WET", "TREE": 0},
        {"SITE_ID": "XX-Bbb", "LAT": -60.0, "LON": 20.0, "SITE_CLASSIFICATION": "", "IGBP": "", "TREE": 1},
    ])
    out = tmp_path / "store"
    assert main(["prepare", "sites", "--src", str(tmp_path / "flux"), "--out", str(out), "--drivers", "tower"]) == 0
    flags = ["aerenchymatous", "eri_shrub", "moss_brown", "moss_sphagnum"]
    unknown = SiteStore.open(out).meta["unknown_descriptors"]
    assert unknown == {"class": 1, "igbp_wet": 1, **{f: 2 for f in flags}}
    printed = capsys.readouterr().out
    assert "descriptors the metadata does not give (stored as NaN, unknown): " in printed
    assert "class at 1 towers" in printed and "moss_brown at 2 towers" in printed


def test_the_map_set_counts_towers_whose_wetland_class_is_unknown(tmp_path, capsys):
    """With ``--drivers map`` a tower whose SITE_CLASSIFICATION is empty (or not a wetland class) gets a NaN
    wetlandtype, and the summary and the command's output say so instead of passing it on silently."""
    write_tiny_fluxnet(tmp_path / "flux", SITES)
    write_fluxnet_meta(tmp_path / "flux", [
        {"SITE_ID": "XX-Aaa", "LAT": 50.0, "LON": 10.0, "SITE_CLASSIFICATION": "Bog", "TREE": 0},
        {"SITE_ID": "XX-Bbb", "LAT": -60.0, "LON": 20.0, "SITE_CLASSIFICATION": "", "TREE": 1},
    ])
    out = tmp_path / "store"
    assert main(["prepare", "sites", "--src", str(tmp_path / "flux"), "--out", str(out), "--drivers", "map"]) == 0
    assert SiteStore.open(out).meta["unknown_descriptors"] == {"wetlandtype": 1}
    assert "wetlandtype at 1 towers" in capsys.readouterr().out


def test_driver_qc_masks_and_counts_impossible_and_foreign_values(tmp_path, capsys):
    """Planted impossible values (beyond ``PHYSICAL_BOUNDS``) and a value far outside the tower's own record are
    NaN in the store, flagged missing, counted per var and kind, and named in one line of ``prepare sites``; the
    untouched values pass as they are."""
    frames = write_tiny_fluxnet(tmp_path / "flux", SITES)
    a = frames["XX-Aaa"]
    a["TA_F"] = 10.0 + 12.0 * np.sin(2 * np.pi * np.arange(len(a)) / 365.0)
    a["LE_F"] = 40.0 + 30.0 * np.sin(2 * np.pi * np.arange(len(a)) / 365.0)
    a.loc[a.TIMESTAMP == 20150310, "TA_F"] = 75.0  # hotter than any air on Earth
    a.loc[a.TIMESTAMP == 20150311, "TA_F"] = -120.0
    a.loc[a.TIMESTAMP == 20160505, "P_F"] = -3.0  # negative rain
    a.loc[a.TIMESTAMP == 20150801, "LE_F"] = 900.0  # possible somewhere, not at a tower whose LE spans 10..70
    _rewrite(tmp_path / "flux", "XX-Aaa", a)
    out = tmp_path / "store"
    assert main(["prepare", "sites", "--src", str(tmp_path / "flux"), "--out", str(out), "--drivers", "tower"]) == 0
    printed = capsys.readouterr().out
    assert "driver QC: masked 4 values (TA_F 2 impossible, P_F 1 impossible, LE_F 1 outside tower climate)" in printed
    store = SiteStore.open(out)
    assert store.meta["driver_qc"]["TA_F"] == {"impossible": 2, "outside_tower_climate": 0}
    assert store.meta["driver_qc"]["LE_F"] == {"impossible": 0, "outside_tower_climate": 1}
    for var, stamp in (("TA_F", 20150310), ("TA_F", 20150311), ("P_F", 20160505), ("LE_F", 20150801)):
        assert np.isnan(_value(store, "XX-Aaa", var, stamp)) and _value(store, "XX-Aaa", f"{var}_missing", stamp) == 1
    assert _value(store, "XX-Aaa", "TA_F", 20150312) == pytest.approx(a.set_index("TIMESTAMP").TA_F[20150312])
    # the xmw set reads the same columns through the same QC: the planted days are gaps there
    summary = prepare_sites(tmp_path / "flux", tmp_path / "xmw")
    assert summary["driver_qc"]["TA_F"]["impossible"] == 2
    write_tiny_fluxnet(tmp_path / "clean", SITES)
    assert main(["prepare", "sites", "--src", str(tmp_path / "clean"), "--out", str(tmp_path / "c")]) == 0
    assert "driver QC: nothing masked" in capsys.readouterr().out


@pytest.mark.parametrize("drivers", ["tower", "xmw", "map"])
def test_target_qc_masks_impossible_daily_fluxes_and_keeps_a_burst(tmp_path, capsys, drivers):
    """A daily-mean flux beyond ``TARGET_BOUNDS`` (a mean over a few noisy half-hours: -1710 nmol m-2 s-1 occurs in
    the release) is a missing target day, counted and named in one line; a burst the size of a rewetted fen's
    (3318) passes. Every driver set reads the target through the same rule."""
    from xmw_ray.data.fluxnet import NMOL_PER_S_TO_MG_PER_DAY

    frames = write_tiny_fluxnet(tmp_path / "flux", SITES)
    a = frames["XX-Aaa"]
    for stamp, value in ((20150401, -1710.0), (20150402, 12000.0), (20150403, 3318.0)):
        a.loc[a.TIMESTAMP == stamp, "FCH4"] = value
    _rewrite(tmp_path / "flux", "XX-Aaa", a)
    out = tmp_path / "store"
    capsys.readouterr()
    assert main(["prepare", "sites", "--src", str(tmp_path / "flux"), "--out", str(out), "--drivers", drivers]) == 0
    printed = capsys.readouterr().out
    assert "target QC: masked 2 impossible daily fluxes (FCH4 2; outside -50..10000 nmol m-2 s-1): 2 target days " \
           "lost" in printed
    store = SiteStore.open(out)
    assert store.meta["target_qc"]["FCH4"] == 2 and store.meta["target_qc"]["target_days_lost"] == 2
    s = store.samples(pc.field("site") == "XX-Aaa")
    years = list(s[schema.YEAR])

    def target(stamp: int) -> float:
        year, day = _day(stamp)
        return float(s[schema.TARGET][years.index(year), day])

    assert np.isnan(target(20150401)) and np.isnan(target(20150402))
    assert target(20150403) == pytest.approx(3318.0 * NMOL_PER_S_TO_MG_PER_DAY, rel=1e-5)
    write_tiny_fluxnet(tmp_path / "clean", SITES)
    assert main(["prepare", "sites", "--src", str(tmp_path / "clean"), "--out", str(tmp_path / "c")]) == 0
    assert "target QC: nothing masked" in capsys.readouterr().out


@pytest.mark.parametrize(("target", "lost"), [("FCH4_F", 2), ("xmw-fill", 1)])
def test_target_qc_counts_the_days_each_target_loses(tmp_path, capsys, target, lost):
    """Two impossible FCH4_F days: both are lost with ``--target FCH4_F``; ``xmw-fill`` refills the one whose
    FCH4_F_ANNOPTLM is there and loses only the other. The line says which."""
    frames = write_tiny_fluxnet(tmp_path / "flux", SITES)
    a = frames["XX-Aaa"]
    a.loc[a.TIMESTAMP.isin([20150501, 20150502]), "FCH4_F"] = -300.0
    a.loc[a.TIMESTAMP == 20150502, "FCH4_F_ANNOPTLM"] = -9999
    _rewrite(tmp_path / "flux", "XX-Aaa", a)
    capsys.readouterr()
    assert main(["prepare", "sites", "--src", str(tmp_path / "flux"), "--out", str(tmp_path / "s"),
                 "--drivers", "tower", "--target", target]) == 0
    assert (f"target QC: masked 2 impossible daily fluxes (FCH4_F 2; outside -50..10000 nmol m-2 s-1): {lost} target "
            f"days lost") in capsys.readouterr().out
    s = SiteStore.open(tmp_path / "s").samples(pc.field("site") == "XX-Aaa")
    years = list(s[schema.YEAR])
    kept = [np.isfinite(s[schema.TARGET][years.index(y), d]) for y, d in (_day(20150501), _day(20150502))]
    assert kept == ([False, False] if target == "FCH4_F" else [True, False])


def test_tower_climate_rules():
    """Percentile-range rule for the seasonal vars (a whole season is never foreign), whole wet years for P_F (a
    single storm is never judged), nothing judged on too short a record."""
    days = np.arange(3 * 365)
    ta = (-5.0 + 25.0 * np.sin(2 * np.pi * days / 365.0)).reshape(3, 365)  # -30..20 degC: a boreal tower
    assert not outside_tower_climate("TA_F", ta).any()
    ta[1, 200] = 58.0  # possible on Earth, not at all far outside a range this wide
    assert not outside_tower_climate("TA_F", ta).any()
    ta = (27.0 + 3.0 * np.sin(2 * np.pi * days / 365.0)).reshape(3, 365)  # 24..30 degC: a tropical tower
    ta[0, 150], ta[1, 200] = 8.0, 58.0  # a cold snap is its weather; 58 degC is not
    assert outside_tower_climate("TA_F", ta).sum() == 1 and outside_tower_climate("TA_F", ta)[1, 200]
    assert not outside_tower_climate("TA_F", ta[:, 190:290]).any()  # 300 days: climate not known, nothing judged
    rain = np.random.default_rng(0).exponential(2.0, (4, 365))  # ~730 mm a year
    rain[0, 10] = 400.0  # one extreme storm: kept
    assert not outside_tower_climate("P_F", rain).any()
    rain[2] *= 10.0  # a year ten times the tower's: a unit or processing fault
    assert outside_tower_climate("P_F", rain)[2].all() and not outside_tower_climate("P_F", rain)[[0, 1, 3]].any()
    assert not outside_tower_climate("P_F", rain[1:3]).any()  # two years: no climate to judge against
    cleaned, counts = qc_drivers({"TA_F": ta, "SW_IN_F": np.full((3, 365), 5000.0)})
    assert counts == {"TA_F": {"impossible": 0, "outside_tower_climate": 1}} and (cleaned["SW_IN_F"] == 5000).all()
    assert np.isnan(cleaned["TA_F"][1, 200]) and ta[1, 200] == 58.0  # the caller's array is not changed
    assert set(PHYSICAL_BOUNDS) == {*BASE, "GPP_DT"}  # every base var, and the xmw set's stand-in for GPP_NT



def test_tower_missing_from_the_sim_folder(tmp_path, capsys):
    write_tiny_fluxnet(tmp_path / "flux", SITES)
    simulate_sites(tmp_path / "flux", tmp_path / "sim", log=lambda msg: None)
    next((tmp_path / "sim" / "FLUXNET-CH4").glob("FLX_XX-Bbb_*.csv")).unlink()
    out = tmp_path / "store"
    _fails(capsys, ["prepare", "sites", "--src", str(tmp_path / "flux"), "--out", str(out), "--drivers", "tower",
                    "--sim-sites", str(tmp_path / "sim")],
           f"{tmp_path / 'sim'}: no simulated site file for tower XX-Bbb", out)


def test_options_that_do_not_apply_are_errors(tmp_path, capsys):
    write_tiny_fluxnet(tmp_path / "flux", SITES)
    out = tmp_path / "store"
    base = ["prepare", "sites", "--src", str(tmp_path / "flux"), "--out", str(out)]
    _fails(capsys, [*base, "--drivers", "tower", "--grid", str(tmp_path / "g")], "not meaningful with --drivers tower",
           out)
    _fails(capsys, [*base, "--sim-sites", str(tmp_path / "flux")], "only used with --drivers tower", out)


def test_xmw_drivers_stay_the_default(tmp_path, capsys):
    write_tiny_fluxnet(tmp_path / "flux", SITES)
    base = ["prepare", "sites", "--src", str(tmp_path / "flux")]
    assert main([*base, "--out", str(tmp_path / "default")]) == 0
    assert main([*base, "--out", str(tmp_path / "xmw"), "--drivers", "xmw"]) == 0
    default, xmw = SiteStore.open(tmp_path / "default"), SiteStore.open(tmp_path / "xmw")
    assert default.meta == xmw.meta
    for key, values in default.samples().items():
        np.testing.assert_array_equal(values, xmw.samples()[key], err_msg=key)
    assert default.dynamic_vars == DYNAMIC_VARS and default.meta["drivers"] == "xmw"
    assert np.isfinite(default.samples()[schema.DYNAMIC]).all()


def test_normstats_skip_nan_inputs(tmp_path):
    df = write_tiny_fluxnet(tmp_path / "flux", {"XX-Aaa": SITES["XX-Aaa"]})["XX-Aaa"]
    df.loc[df.TIMESTAMP.between(20150301, 20150320), "TA_F"] = -9999
    _rewrite(tmp_path / "flux", "XX-Aaa", df)
    prepare_sites(tmp_path / "flux", tmp_path / "store", drivers="tower")
    store = SiteStore.open(tmp_path / "store")
    stats = site_normstats(store, SplitSpec(train_years=(2015, 2015), test_years=(2016, 2016)))
    train = store.samples(pc.field("year") == 2015)[schema.DYNAMIC].reshape(-1, len(store.dynamic_vars))
    i = store.dynamic_vars.index("TA_F")
    assert stats.dynamic_mean[i] == pytest.approx(np.nanmean(train[:, i]), rel=1e-5)
    assert stats.dynamic_std[i] == pytest.approx(np.nanstd(train[:, i]), rel=1e-5)
    le = store.dynamic_vars.index("LE_F")  # all NaN: no count, neutral statistics
    assert stats.dynamic_mean[le] == 0.0 and stats.dynamic_std[le] == 1.0


def test_all_real_towers_keep_every_measured_day(fluxnet_dir, tmp_path, capsys):
    """Every measured day whose flux is physically possible is a target day; the impossible ones (``TARGET_BOUNDS``)
    are masked, and their number is the store's ``target_qc``."""
    from xmw_ray.data.tower_features import TARGET_BOUNDS

    assert main(["prepare", "sites", "--src", str(fluxnet_dir), "--out", str(tmp_path / "store"),
                 "--drivers", "tower"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("driver QC: ") for line in printed) == 1, printed  # checked and said, masked or not
    assert sum(line.startswith("target QC: ") for line in printed) == 1, printed
    store = SiteStore.open(tmp_path / "store")
    assert set(store.meta["driver_qc"]) == set(BASE)
    sources = find_site_sources(fluxnet_dir)
    expected_samples, impossible = 0, 0
    low, high = TARGET_BOUNDS["FCH4"]
    for site, path in sources.daily_paths.items():
        raw = pd.read_csv(path, usecols=["TIMESTAMP", "FCH4"])
        raw = raw[raw.TIMESTAMP % 10000 != 229]
        measured = raw[np.isfinite(raw.FCH4) & (raw.FCH4 != -9999)]
        possible = (measured.FCH4 >= low) & (measured.FCH4 <= high)
        impossible += int((~possible).sum())
        measured = measured[possible]
        want = {_day(t) for t in measured.TIMESTAMP}
        expected_samples += len({y for y, _ in want})
        s = store.samples(pc.field("site") == site)
        got = {(int(y), int(d)) for y, row in zip(s[schema.YEAR], s[schema.TARGET], strict=True)
               for d in np.flatnonzero(np.isfinite(row))}
        assert got == want, site
        assert len(s[schema.YEAR]) == len({y for y, _ in want}), site
    assert store.table().num_rows == expected_samples
    assert len(store.sites) == 15
    assert impossible > 0 and store.meta["target_qc"]["FCH4"] == impossible
    assert store.meta["target_qc"]["target_days_lost"] == impossible


def _bytes_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_simulate_sites_never_writes_over_real_tower_files(tmp_path, capsys):
    """The simulated files carry the release's own names: aimed at the forcing folder (directly or through its
    parent) or at a folder of someone else's files, the command refuses with one line and changes nothing."""
    real = tmp_path / "data" / "FLUXNET-CH4"
    write_tiny_fluxnet(real, SITES)
    before = _bytes_of(real)
    for out in (real, tmp_path / "data"):  # ``--out data`` writes into data/FLUXNET-CH4
        assert main(["simulate", "sites", "--forcing", str(real), "--out", str(out)]) == 2
        assert f"{real}: is the forcing folder itself" in capsys.readouterr().err
        assert _bytes_of(real) == before
    other = tmp_path / "theirs" / "FLUXNET-CH4"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    assert main(["simulate", "sites", "--forcing", str(real), "--out", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{other}: holds files that xmw simulate sites did not write" in err
    assert _bytes_of(other) == {"notes.txt": b"mine"}


def test_simulate_sites_writes_again_into_its_own_folder_also_after_an_interrupted_run(tmp_path):
    write_tiny_fluxnet(tmp_path / "flux", SITES)
    out = tmp_path / "sim"
    simulate_sites(tmp_path / "flux", out, log=lambda msg: None)
    first = _bytes_of(out / "FLUXNET-CH4")
    assert SIM_PENDING not in first and SIM_MARKER in first
    simulate_sites(tmp_path / "flux", out, log=lambda msg: None)  # a finished run of ours: rewritten
    assert _bytes_of(out / "FLUXNET-CH4") == first
    # a run killed after its first file: no finished-marker, but the pending one says the folder is ours
    (out / "FLUXNET-CH4" / SIM_MARKER).unlink()
    (out / "FLUXNET-CH4" / SIM_PENDING).write_text("{}")
    simulate_sites(tmp_path / "flux", out, log=lambda msg: None)
    assert _bytes_of(out / "FLUXNET-CH4") == first
