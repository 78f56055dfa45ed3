"""The wetland extent (``prepare grid --wetland-area``: read, area-weighted onto the store grid, stored monthly) and
the ``units`` of TEM-MDM files (read, converted when a known equivalent, refused otherwise naming file and variable).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from builders import write_fraction_nc, write_tiny_temmdm

from xmw_ray.cli import main
from xmw_ray.data import layout
from xmw_ray.data.contract import TARGET_VAR, unit_conversion
from xmw_ray.data.grid_store import GridStore
from xmw_ray.data.temmdm import open_temmdm
from xmw_ray.data.wetland_extent import read_wetland_extent
from xmw_ray.errors import XmwInputError

R = 6_371_000.0


def _rewrite(path: Path, var: str, fn, units: str | None) -> None:
    """Rewrite ``var`` of ``path`` as ``fn(values)`` with ``units`` (None: no units attribute)."""
    ds = xr.open_dataset(path).load()
    ds.close()
    ds[var] = fn(ds[var]).astype(np.float32)
    ds[var].attrs.pop("units", None)
    if units is not None:
        ds[var].attrs["units"] = units
    ds.to_netcdf(path, engine="h5netcdf")


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xmw: error:") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _zone_weights(lat_centres: np.ndarray, res: float) -> np.ndarray:
    """Area of a cell on each latitude row, up to a constant: R² Δλ (sin φN − sin φS)."""
    return R * R * (np.sin(np.deg2rad(lat_centres + res / 2)) - np.sin(np.deg2rad(lat_centres - res / 2)))


# --- units ---------------------------------------------------------------------------------------------------
def test_known_units_are_converted_to_the_contract(tmp_path):
    truth = write_tiny_temmdm(tmp_path, res=10.0, years=(2000,), seed=5, spoil_cells=0)
    _rewrite(layout.daily_path(tmp_path, "TAIR", 2000), "TAIR", lambda v: v + 273.15, "K")
    _rewrite(layout.daily_path(tmp_path, "PREC", 2000), "PREC", lambda v: v / 86400.0, "kg m-2 s-1")
    _rewrite(layout.target_path(tmp_path, 2000), TARGET_VAR, lambda v: v / 1000.0, "g CH4 m-2 d-1")
    _rewrite(layout.static_path(tmp_path, "wetlandtype"), "wetlandtype", lambda v: v, None)  # a class map: no units
    src = open_temmdm(tmp_path)
    land = np.isfinite(truth["daily"][("TAIR", 2000)])
    tair = src.daily("TAIR", 2000).rows(0, src.nlat)
    np.testing.assert_allclose(tair[land], truth["daily"][("TAIR", 2000)][land], rtol=0, atol=1e-4)  # K → °C
    prec = src.daily("PREC", 2000).rows(0, src.nlat)
    np.testing.assert_allclose(prec[land], truth["daily"][("PREC", 2000)][land], rtol=1e-6)  # per s → per day
    ch4 = src.target(2000).rows(0, src.nlat)
    np.testing.assert_allclose(ch4[land], truth["target"][2000][land], rtol=1e-6)  # g → mg
    with src.static("wetlandtype") as r:
        np.testing.assert_array_equal(r.rows(0, src.nlat), truth["static"]["wetlandtype"])


def test_the_conversion_table_holds_only_exact_equivalents():
    assert unit_conversion("K", "degC") == (1.0, -273.15)
    assert unit_conversion("g CH4 m-2 d-1", "mg CH4 m-2 d-1") == (1000.0, 0.0)
    assert unit_conversion("mg/m2/day", "mg CH4 m-2 d-1") == (1.0, 0.0)
    assert unit_conversion("nmol CH4 m-2 s-1", "mg CH4 m-2 d-1")[0] == pytest.approx(86400 * 16.04e-9 * 1e3)
    assert unit_conversion("Pa", "hPa") == (0.01, 0.0)
    assert unit_conversion("mm", "mm d-1", "d-1") == (1.0, 0.0)  # a daily file's total
    for wrong, canonical in (("mg C m-2 d-1", "mg CH4 m-2 d-1"), ("g C m-2 d-1", "g C m-2 month-1"),
                             ("mm", "mm d-1"), ("furlongs", "m"), ("F", "degC"), (None, "W m-2")):
        assert unit_conversion(wrong, canonical) is None, (wrong, canonical)


def test_an_unknown_or_missing_unit_is_refused_naming_file_and_variable(tmp_path, capsys):
    write_tiny_temmdm(tmp_path, res=10.0, years=(2000,), seed=6, spoil_cells=0)
    tair = layout.daily_path(tmp_path, "TAIR", 2000)
    _rewrite(tair, "TAIR", lambda v: v, "degF")
    out = tmp_path / "grid.zarr"
    _one_line_error(capsys, ["prepare", "grid", "--src", str(tmp_path), "--out", str(out)],
                    str(tair), "'TAIR'", "'degF'", "'degC'")
    _rewrite(tair, "TAIR", lambda v: v, "degC")
    prec = layout.daily_path(tmp_path, "PREC", 2000)
    _rewrite(prec, "PREC", lambda v: v, None)
    _one_line_error(capsys, ["prepare", "grid", "--src", str(tmp_path), "--out", str(out)],
                    str(prec), "'PREC'", "no units attribute")
    assert not out.exists()


# --- wetland extent ------------------------------------------------------------------------------------------
def test_quarter_degree_extent_is_area_weighted_onto_half_degree_cells(tmp_path):
    fine = np.zeros((720, 1440), dtype=np.float32)
    fine[600:602, 200:202] = [[0.2, 0.4], [0.6, 1.0]]  # the four 0.25° cells of the 0.5° cell (300, 100)
    fine[10, 7] = np.nan  # counted, and no wetland
    path = write_fraction_nc(tmp_path / "wad.nc", fine, 0.25, north_to_south=True, lon_0_360=True)
    extent = read_wetland_extent(path, 0.5)
    assert extent.monthly.shape == (12, 360, 720) and extent.time_steps == 0 and extent.nan_values == 1
    w = _zone_weights(-90.0 + 0.25 * (np.array([600, 601]) + 0.5), 0.25)  # south row, north row
    hand = (w[0] * (0.2 + 0.4) + w[1] * (0.6 + 1.0)) / (2 * (w[0] + w[1]))
    assert extent.monthly[0, 300, 100] == pytest.approx(hand, rel=1e-6)
    assert hand != pytest.approx((0.2 + 0.4 + 0.6 + 1.0) / 4, rel=1e-6)  # the weights matter
    assert np.count_nonzero(extent.monthly[0]) == 1
    np.testing.assert_array_equal(extent.monthly, np.broadcast_to(extent.monthly[0], extent.monthly.shape))


def test_a_multi_year_monthly_extent_becomes_a_monthly_climatology(tmp_path):
    rng = np.random.default_rng(0)
    series = rng.uniform(0.0, 1.0, size=(24, 18, 36)).astype(np.float32)  # Jan 2000 .. Dec 2001, WAD2M-like
    extent = read_wetland_extent(write_fraction_nc(tmp_path / "wad.nc", series, 10.0), 10.0)
    assert extent.time_steps == 24
    np.testing.assert_allclose(extent.monthly, (series[:12].astype(np.float64) + series[12:]) / 2, rtol=1e-6)


def test_bad_extents_are_refused(tmp_path):
    ones = np.ones((18, 36), dtype=np.float32)
    with pytest.raises(XmwInputError, match="does not nest"):
        read_wetland_extent(write_fraction_nc(tmp_path / "coarse.nc", np.ones((9, 18)), 20.0), 10.0)
    with pytest.raises(XmwInputError, match="does not nest"):
        read_wetland_extent(write_fraction_nc(tmp_path / "odd.nc", np.ones((24, 48)), 7.5), 10.0)
    with pytest.raises(XmwInputError, match="above 1"):
        read_wetland_extent(write_fraction_nc(tmp_path / "big.nc", ones * 1.5, 10.0), 10.0)
    with pytest.raises(XmwInputError, match="'Fw' has units 'm2'"):
        read_wetland_extent(write_fraction_nc(tmp_path / "m2.nc", ones, 10.0, units="m2"), 10.0)
    half = read_wetland_extent(write_fraction_nc(tmp_path / "pct.nc", ones * 50.0, 10.0, units="%"), 10.0)
    np.testing.assert_allclose(half.monthly, 0.5)


def test_prepare_grid_stores_the_monthly_extent(tmp_path, capsys):
    write_tiny_temmdm(tmp_path / "src", res=10.0, years=(2000,), seed=7, spoil_cells=0, keep_arrays=False)
    rng = np.random.default_rng(1)
    monthly = rng.uniform(0.0, 1.0, size=(12, 36, 72)).astype(np.float32)  # 5° cells, four to a 10° cell
    path = write_fraction_nc(tmp_path / "wad2m.nc", monthly, 5.0)
    assert main(["prepare", "grid", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "g.zarr"),
                 "--wetland-area", str(path)]) == 0
    g = GridStore.open(tmp_path / "g.zarr")
    assert g.attrs["wetland_extent"]["source"] == str(path) and g.attrs["wetland_extent"]["variable"] == "Fw"
    w = _zone_weights(-90.0 + 5.0 * (np.arange(36) + 0.5), 5.0).reshape(18, 2)
    blocks = monthly.astype(np.float64).reshape(12, 18, 2, 36, 2)
    hand = (blocks * w[None, :, :, None, None]).sum(axis=(2, 4)) / (2 * w.sum(axis=1))[None, :, None]
    assert g.wetland_fraction.shape == (12, g.n_cells)
    np.testing.assert_allclose(g.wetland_fraction, hand[:, g.cell_ilat, g.cell_ilon], rtol=1e-6)

    capsys.readouterr()
    assert main(["prepare", "grid", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "bare.zarr")]) == 0
    assert "no wetland extent" in capsys.readouterr().err
    assert GridStore.open(tmp_path / "bare.zarr").wetland_fraction is None
    _one_line_error(capsys, ["prepare", "grid", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "x.zarr"),
                             "--wetland-area", str(tmp_path / "none.nc")], "none.nc", "file not found")
    assert not (tmp_path / "x.zarr").exists()
