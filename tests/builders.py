"""Synthetic TEM-MDM files in the published layout, written through ``xmw_ray.data.layout``, for tests and benches.

The writer also returns the truth the readers must give back: which cells are valid (land, wetland, finite
drivers in every year) and every array it wrote, so tests compare cell by cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmw_ray.data import layout
from xmw_ray.data.contract import DAILY_VARS, STATIC_VARS, days_to_slots, grid_shape

_DAILY_RANGE = {"PREC": (0.0, 20.0), "SOLR": (0.0, 350.0), "TAIR": (-30.0, 30.0), "VAPR": (1.0, 30.0)}


def write_tiny_temmdm(
    root: Path,
    res: float = 10.0,
    years: tuple[int, ...] = (2000, 2001),
    seed: int = 0,
    land_fraction: float = 0.4,
    wetland_fraction: float = 0.5,
    spoil_cells: int = 1,
    keep_arrays: bool = True,
) -> dict:
    """Write a small TEM-MDM world under ``root/TEM-MDM``.

    Land cells get finite drivers; wetlands (``wetlandtype > 0``) are a share of land. ``spoil_cells`` wetland
    cells get one NaN driver day in the last year, so they must be invalid. Ocean cells are NaN everywhere except
    the static maps' own NaN. Returns ``{"res", "years", "valid" (nlat, nlon) bool, "static": {var: map},
    "daily": {(var, year): (nlat, nlon, 365)}, "npp": {year: (nlat, nlon, 12)}, "target": {year: (nlat, nlon, 365)},
    "annual": {var: (years, values)}}`` (arrays only when ``keep_arrays``).
    """
    rng = np.random.default_rng(seed)
    nlat, nlon = grid_shape(res)
    land = rng.random((nlat, nlon)) < land_fraction
    wet = land & (rng.random((nlat, nlon)) < wetland_fraction)
    out: dict = {"res": res, "years": tuple(years), "static": {}, "daily": {}, "npp": {}, "target": {}}

    for var in STATIC_VARS:
        if var == "wetlandtype":
            values = np.where(wet, rng.integers(1, 5, size=(nlat, nlon)), 0).astype(np.float32)
        else:
            values = rng.uniform(0.0, 10.0, size=(nlat, nlon)).astype(np.float32)
        values[~land] = np.nan
        layout.write_static(root, var, values, res)
        if keep_arrays:
            out["static"][var] = values

    wet_idx = np.flatnonzero(wet)
    spoiled = rng.choice(wet_idx, size=min(spoil_cells, len(wet_idx)), replace=False)
    for yi, year in enumerate(years):
        for var in DAILY_VARS:
            lo, hi = _DAILY_RANGE[var]
            days = rng.uniform(lo, hi, size=(nlat, nlon, 365)).astype(np.float32)
            days[~land] = np.nan
            if yi == len(years) - 1 and var == DAILY_VARS[0]:
                days.reshape(-1, 365)[spoiled, 100] = np.nan
            layout.write_daily(root, var, year, days_to_slots(days), res)
            if keep_arrays:
                out["daily"][(var, year)] = days
        npp = rng.uniform(0.0, 60.0, size=(nlat, nlon, 12)).astype(np.float32)
        npp[~land] = np.nan
        layout.write_npp(root, year, npp, res)
        target = rng.gamma(2.0, 20.0, size=(nlat, nlon, 365)).astype(np.float32)
        target[~land] = np.nan
        layout.write_target(root, year, days_to_slots(target), res)
        if keep_arrays:
            out["npp"][year] = npp
            out["target"][year] = target

    span = np.arange(min(years) - 1, max(years) + 2)
    annual = {"CH4": 1700.0 + 5.0 * (span - span[0]), "CO2": 360.0 + 2.0 * (span - span[0])}
    for var, values in annual.items():
        layout.write_annual(root, var, span, values)
    out["annual"] = {var: (span, values) for var, values in annual.items()}
    valid = wet.copy()
    valid.reshape(-1)[spoiled] = False
    out["valid"] = valid
    return out


def write_tiny_extent(root: Path, res: float = 10.0, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A WAD2M-like monthly wetland extent ``root/WAD2M/wetland_fraction.nc`` on the ``res`` grid (0-0.8, a
    different map each month); returns its path and the ``(12, nlat, nlon)`` fractions written."""
    rng = np.random.default_rng(seed)
    fraction = rng.uniform(0.0, 0.8, size=(12, *grid_shape(res))).astype(np.float32)
    return layout.write_wetland_extent(root, fraction, res), fraction


def write_fraction_nc(path: Path, fraction: np.ndarray, res: float, units: str | None = "1",
                      north_to_south: bool = False, lon_0_360: bool = False) -> Path:
    """A global wetland-fraction NetCDF ``Fw (lat, lon)`` or ``Fw (time, lat, lon)`` at ``res`` degrees, stored as
    given (row 0 south, column 0 at -180) or flipped north→south / rolled to 0..360 longitudes."""
    import xarray as xr

    lat = -90.0 + res * (np.arange(fraction.shape[-2]) + 0.5)
    lon = -180.0 + res * (np.arange(fraction.shape[-1]) + 0.5)
    data = np.asarray(fraction, dtype=np.float32)
    if north_to_south:
        lat, data = lat[::-1], data[..., ::-1, :]
    if lon_0_360:
        half = len(lon) // 2
        lon, data = np.roll(lon, -half) % 360.0, np.roll(data, -half, axis=-1)
    dims = ("lat", "lon") if data.ndim == 2 else ("time", "lat", "lon")
    coords = {"lat": lat, "lon": lon}
    if data.ndim == 3:
        coords["time"] = np.arange(data.shape[0])
    ds = xr.Dataset({"Fw": (dims, data)}, coords=coords)
    if data.ndim == 3:
        ds["time"].attrs["units"] = "months since 2000-01-01"
    if units is not None:
        ds["Fw"].attrs["units"] = units
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


FLUX_COLUMNS = ("FCH4", "FCH4_F", "FCH4_F_ANNOPTLM", "P_F", "TA_F", "SW_IN_F", "VPD_F", "GPP_NT")
META_HEADER = "SITE_ID,SITE_NAME,LAT,LON,SITE_CLASSIFICATION,IGBP,KOPPEN,TREE"


def write_tiny_fluxnet(folder: Path, sites: dict[str, tuple[float, float]], start: str = "2015-01-01",
                       end: str = "2016-12-31", seed: int = 0) -> dict:
    """FLUXNET-CH4 release-format files (one DD file per tower + a BOM-headed META file) with random values.

    Returns ``site → pandas.DataFrame`` of what was written (``-9999`` already in place of missing values).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    dates = pd.date_range(start, end, freq="D")
    out = {}
    for site in sites:
        df = pd.DataFrame({"TIMESTAMP": dates.strftime("%Y%m%d").astype(int)})
        for col in FLUX_COLUMNS:
            df[col] = rng.uniform(1.0, 20.0, len(dates))
        df.loc[rng.random(len(dates)) < 0.2, "FCH4"] = -9999
        years = f"{dates[0].year}-{dates[-1].year}"
        df.to_csv(folder / f"FLX_{site}_FLUXNET-CH4_DD_{years}_1-1.csv", index=False)
        out[site] = df
    rows = [f"{s},{s} name,{lat},{lon},Bog,WET,Dfb,0" for s, (lat, lon) in sites.items()]
    (folder / "FLX_AA-Flx_CH4-META_1.csv").write_text("\ufeff" + "\n".join([META_HEADER, *rows]) + "\n",
                                                       encoding="utf-8")
    return out


def write_fluxnet_meta(folder: Path, rows: list[dict[str, object]]) -> Path:
    """Replace the tiny FLUXNET-CH4 folder's META file (BOM header) by ``rows``; columns are the union of the rows'
    keys in first-seen order, an absent key an empty field (as in the release)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "FLX_AA-Flx_CH4-META_1.csv"
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    return path
