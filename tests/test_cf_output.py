"""The flux maps `xmw infer` writes pass a CF checker: the IOOS compliance checker (CF-1.8, its bundled standard name
table, offline) finds no error and no warning in the NetCDF copy (``--netcdf``); units parse in UDUNITS and convert to
the standard name's canonical units; bounds, ``history`` and provenance without absolute machine paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_infer import YEARS, mapped, world  # noqa: F401  (module fixtures: one small infer run)

from xmw_ray.cli import main
from xmw_ray.infer.maps import ANNUAL_VAR, FLUX_STANDARD_NAME, FLUX_VAR, MONTHLY_VAR

cc_runner = pytest.importorskip("compliance_checker.runner", reason="the dev extra installs compliance-checker")
cf_units = pytest.importorskip("cf_units")


@pytest.fixture(scope="module")
def netcdf(mapped, world) -> Path:  # noqa: F811
    """The NetCDF copy written by the same `xmw infer` command (a rerun: every year is done, nothing recomputed)."""
    nc = world["root"] / "maps.nc"
    argv = ["infer", "--checkpoint", str(world["ckpt"]), "--grid", str(world["grid"]), "--out", str(mapped["out"]),
            "--years", f"{YEARS[0]}-{YEARS[-1]}", "--netcdf", str(nc)]
    assert main(argv) == 0
    return nc


def checker_findings(path: Path, tmp_path: Path) -> dict[str, list[str]]:
    """The compliance checker's CF-1.8 findings by priority (``high``: errors, ``medium``: warnings)."""
    cc_runner.CheckSuite.load_all_available_checkers()
    report = tmp_path / "cf.json"
    cc_runner.ComplianceChecker.run_checker(str(path), ["cf:1.8"], 0, "normal", output_filename=str(report),
                                            output_format="json")
    result = json.loads(report.read_text())["cf:1.8"]
    return {level: [f"{item['name']}: {msg}" for item in result[f"{level}_priorities"] for msg in item["msgs"]]
            for level in ("high", "medium")}


def test_cf_checker_finds_no_error_or_warning(netcdf, tmp_path):
    found = checker_findings(netcdf, tmp_path)
    assert found == {"high": [], "medium": []}


def test_checker_does_flag_what_the_maps_used_to_have(netcdf, tmp_path):
    """The same file with the old unit, no standard name and no history: the checker is not blind to them."""
    import netCDF4

    bad = tmp_path / "old.nc"
    bad.write_bytes(netcdf.read_bytes())
    with netCDF4.Dataset(bad, "a") as ds:
        ds[FLUX_VAR].units = "mg CH4 m-2 d-1"
        ds.delncattr("history")
    found = checker_findings(bad, tmp_path)
    assert any("not recognized by UDUNITS" in m for m in found["high"])
    assert any("history" in m for m in found["medium"])


def test_units_standard_names_bounds_history_and_provenance(netcdf, mapped, world):  # noqa: F811
    ds = xr.open_dataset(netcdf, decode_times=False)
    for var in (FLUX_VAR, MONTHLY_VAR, ANNUAL_VAR):
        unit = cf_units.Unit(ds[var].attrs["units"])  # UDUNITS parses it
        assert unit.is_convertible(cf_units.Unit("kg m-2 s-1"))  # the standard name's canonical units
        assert abs(unit.convert(1.0, "kg m-2 s-1") - 1e-6 / 86400) < 1e-18
        assert ds[var].attrs["standard_name"] == FLUX_STANDARD_NAME and "CH4" in ds[var].attrs["long_name"]
    for coord, bounds in (("lat", "lat_bnds"), ("lon", "lon_bnds"), ("time", "time_bnds")):
        assert ds[coord].attrs["bounds"] == bounds
        edges = ds[bounds].values
        assert (edges[:, 0] < ds[coord].values).all() and (ds[coord].values < edges[:, 1]).all() \
            if coord != "time" else (edges[:, 0] == ds[coord].values).all() and (np.diff(edges) == 1).all()
    assert ds.attrs["Conventions"] == "CF-1.8" and "xmw infer" in ds.attrs["history"]
    assert ds.attrs["source_checkpoint"] == "ckpt" and ds.attrs["source_grid_store"] == "grid.zarr"
    machine = str(world["root"].resolve())
    texts = {**ds.attrs, **{f"{v}.{k}": a for v in ds.variables for k, a in ds[v].attrs.items()}}
    leaked = [k for k, v in texts.items() if isinstance(v, str) and (machine in v or v.startswith("/"))]
    assert leaked == []


def test_netcdf_target_that_is_not_ours_is_refused(mapped, world, tmp_path, capsys):  # noqa: F811
    mine = tmp_path / "thesis.nc"
    mine.write_text("my own file")
    argv = ["infer", "--checkpoint", str(world["ckpt"]), "--grid", str(world["grid"]), "--out", str(mapped["out"]),
            "--years", f"{YEARS[0]}-{YEARS[-1]}", "--netcdf", str(mine)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "thesis.nc: exists and is not a NetCDF copy of flux maps" in err
    assert mine.read_text() == "my own file"
