"""`xmw prepare` / `xmw inspect` through the CLI: bad input gives one line naming the file, exit 2, no store."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from builders import write_tiny_fluxnet, write_tiny_temmdm

from xmw_ray.cli import main
from xmw_ray.data import layout


def _fails(capsys, argv, needle, out) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # progress lines may come first
    err = lines[-1]
    assert err.startswith("xmw: error: ") and sum(line.startswith("xmw:") for line in lines) == 1, lines
    assert needle in err, err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


@pytest.fixture
def tem(tmp_path):
    write_tiny_temmdm(tmp_path / "src", res=10.0, years=(2000, 2001), seed=5)
    return tmp_path / "src"


@pytest.fixture
def flux(tmp_path):
    write_tiny_fluxnet(tmp_path / "flux", {"XX-Aaa": (50.0, 10.0), "XX-Bbb": (60.0, 20.0)})
    return tmp_path / "flux"


def _rewrite(path, fn):
    ds = xr.open_dataset(path).load()
    ds.close()
    fn(ds).to_netcdf(path, engine="h5netcdf")


def test_grid_missing_file(tem, tmp_path, capsys):
    path = layout.daily_path(tem, "PREC", 2001)
    path.unlink()
    _fails(capsys, ["prepare", "grid", "--src", str(tem), "--out", str(tmp_path / "g"), "--years", "2000-2001"],
           str(path), tmp_path / "g")


def test_grid_missing_variable(tem, tmp_path, capsys):
    path = layout.static_path(tem, "phh2o")
    _rewrite(path, lambda ds: ds.rename({"phh2o": "ph"}))
    _fails(capsys, ["prepare", "grid", "--src", str(tem), "--out", str(tmp_path / "g")],
           f"{path}: variable 'phh2o' not found", tmp_path / "g")


def test_grid_wrong_dimensions(tem, tmp_path, capsys):
    path = layout.target_path(tem, 2000)
    _rewrite(path, lambda ds: ds.isel(day=slice(0, 30)))
    _fails(capsys, ["prepare", "grid", "--src", str(tem), "--out", str(tmp_path / "g")],
           f"{path}: variable 'CH4_emission' has shape (18, 36, 12, 30)", tmp_path / "g")


def test_grid_coordinates_not_matching(tem, tmp_path, capsys):
    path = layout.daily_path(tem, "TAIR", 2000)
    _rewrite(path, lambda ds: ds.assign_coords(lon=ds.lon + 5.0))
    _fails(capsys, ["prepare", "grid", "--src", str(tem), "--out", str(tmp_path / "g")],
           f"{path}: longitude coordinates do not match", tmp_path / "g")


def test_empty_directories(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["prepare", "sites", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "s")],
           f"{tmp_path / 'empty'}: directory is empty", tmp_path / "s")
    (tmp_path / "e2" / "TEM-MDM").mkdir(parents=True)
    _fails(capsys, ["prepare", "grid", "--src", str(tmp_path / "e2"), "--out", str(tmp_path / "g")],
           "TEM-MDM: directory is empty", tmp_path / "g")


def test_sites_non_numeric_column(flux, tmp_path, capsys):
    path = next(flux.glob("FLX_XX-Bbb_*.csv"))
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[10].split(",")
    row[header.index("TA_F")] = "warm"
    lines[10] = ",".join(row)
    path.write_text("\n".join(lines) + "\n")
    _fails(capsys, ["prepare", "sites", "--src", str(flux), "--out", str(tmp_path / "s")],
           f"{path}: column TA_F has a non-numeric value 'warm' (line 11)", tmp_path / "s")


def test_sites_duplicated_dates(flux, tmp_path, capsys):
    path = next(flux.glob("FLX_XX-Aaa_*.csv"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + [lines[4]] + lines[5:]) + "\n")
    _fails(capsys, ["prepare", "sites", "--src", str(flux), "--out", str(tmp_path / "s")],
           f"{path}: duplicated date 2015-01-04", tmp_path / "s")


def test_sites_site_missing_from_metadata(flux, tmp_path, capsys):
    meta = flux / "FLX_AA-Flx_CH4-META_1.csv"
    meta.write_text("\n".join(line for line in meta.read_text(encoding="utf-8").splitlines()
                              if not line.startswith("XX-Bbb")) + "\n", encoding="utf-8")
    _fails(capsys, ["prepare", "sites", "--src", str(flux), "--out", str(tmp_path / "s")],
           f"{meta}: site XX-Bbb is missing from the metadata", tmp_path / "s")


def test_failed_rerun_keeps_the_previous_store(flux, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["prepare", "sites", "--src", str(flux), "--out", str(out)]) == 0
    before = sorted(p.name for p in out.rglob("*"))
    next(flux.glob("FLX_XX-Aaa_*.csv")).write_text("TIMESTAMP,FCH4\n20150101,x\n")
    assert main(["prepare", "sites", "--src", str(flux), "--out", str(out)]) == 2
    assert sorted(p.name for p in out.rglob("*")) == before


def test_inspect_describes_both_stores(tem, flux, tmp_path, capsys):
    assert main(["prepare", "grid", "--src", str(tem), "--out", str(tmp_path / "g.zarr")]) == 0
    assert main(["prepare", "sites", "--src", str(flux), "--out", str(tmp_path / "s"), "--wetland-types", "xmw"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "g.zarr")]) == 0
    text = capsys.readouterr().out
    assert "Grid store" in text and "years: 2000-2001 (2)" in text
    assert "TAIR" in text and "degC" in text and "target missing fraction: 0.0000" in text
    assert main(["inspect", str(tmp_path / "s")]) == 0
    text = capsys.readouterr().out
    assert "Site store" in text and "XX-Aaa: 2015, 2016" in text
    frac = float(text.split("target missing fraction: ")[1].split()[0])
    assert 0.1 < frac < 0.3  # the writer blanks ~20 % of FCH4 days with -9999
    _fails(capsys, ["inspect", str(tmp_path / "nothing")], "nothing: no such store", tmp_path / "nothing")
    assert np.isfinite(frac)
