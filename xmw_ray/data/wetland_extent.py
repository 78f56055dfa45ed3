"""Wetland extent: the fraction of each cell under wetland, from a NetCDF map (WAD2M-like), on the store's grid.

``CH4_emission_intensity`` is flux per unit wetland area, so a budget needs each cell's wetland area; the published
TEM-MDM layout has no such map, so the user supplies one (``xmw prepare grid --wetland-area FILE``).

Accepted: one variable (``Fw`` as in WAD2M, ``wetland_fraction``, or the file's only ``(…, lat, lon)`` variable)
on a global regular grid, static ``(lat, lon)`` or with one time axis ``(time, lat, lon)``: 12 steps are the months
January..December; a longer monthly series (WAD2M: 2000-2020) is averaged by calendar month into a climatology,
since its years need not be the TEM-MDM years. A finer grid whose cells nest in the store's cells (0.25° in 0.5°) is
averaged with cell-area weights; the same grid passes through; anything else is refused. NaN counts as no wetland
(counted); values below 0 or above 1 are refused. Read one time step at a time, so memory is one map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmw_ray.data.contract import cell_area_m2, grid_shape
from xmw_ray.data.temmdm import _coord, _open_dataset
from xmw_ray.errors import XmwInputError

#: Variable names tried first (WAD2M's ``Fw``), before "the only (lat, lon) variable".
EXTENT_VARS = ("Fw", "wetland_fraction")
_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "longitude")
#: ``units`` of a fraction → factor to a 0-1 fraction.
FRACTION_UNITS = {"": 1.0, "1": 1.0, "-": 1.0, "fraction": 1.0, "unitless": 1.0, "none": 1.0, "0-1": 1.0,
                  "m2 m-2": 1.0, "m2/m2": 1.0, "km2 km-2": 1.0, "%": 0.01, "percent": 0.01}
_MONTHS_SINCE = re.compile(r"^\s*months?\s+since\s+(\d{1,4})-(\d{1,2})")


@dataclass(frozen=True)
class WetlandExtent:
    """Monthly wetland fraction ``(12, nlat, nlon)`` on a ``res``-degree grid (row 0 south), and its provenance."""

    monthly: np.ndarray
    source: str
    variable: str
    time_steps: int  # 0: a static map
    nan_values: int  # NaN values in the file, counted as no wetland

    def attrs(self) -> dict:
        kind = ("static map (the same every month)" if self.time_steps == 0 else "12 months" if self.time_steps == 12
                else f"{self.time_steps} monthly steps averaged by calendar month")
        return {"source": self.source, "variable": self.variable, "time": kind,
                "nan_values_set_to_zero": self.nan_values}


def _months_of_steps(ds, dim: str, n: int, path: Path) -> np.ndarray:
    """Calendar month (0-11) of each step of the time axis ``dim``."""
    if n == 12:
        return np.arange(12)
    if dim not in ds.variables or "units" not in ds[dim].attrs:
        raise XmwInputError(f"{path}: time axis {dim!r} has {n} steps (not 12) and no units to date them")
    values = np.asarray(ds[dim].values, dtype=np.float64)
    units = str(ds[dim].attrs["units"])
    m = _MONTHS_SINCE.match(units)
    if m:  # "months since" is not a fixed length of time: count calendar months
        return ((int(m.group(2)) - 1 + np.floor(values + 1e-6).astype(np.int64)) % 12).astype(np.int64)
    import cftime

    try:
        dates = cftime.num2date(values, units, calendar=str(ds[dim].attrs.get("calendar", "standard")))
    except Exception as exc:
        raise XmwInputError(f"{path}: time axis {dim!r} units {units!r} cannot be decoded ({exc})") from None
    return np.array([d.month - 1 for d in np.atleast_1d(dates)], dtype=np.int64)


def _pick_variable(ds, path: Path) -> str:
    for name in EXTENT_VARS:
        if name in ds.data_vars:
            return name
    spatial = [str(v) for v in ds.data_vars if {d for d in ds[v].dims} & set(_LAT_NAMES)
               and {d for d in ds[v].dims} & set(_LON_NAMES)]
    if len(spatial) != 1:
        raise XmwInputError(f"{path}: no wetland fraction variable ({' or '.join(EXTENT_VARS)}, or a single "
                            f"(lat, lon) variable; has: {', '.join(map(str, ds.data_vars)) or 'none'})")
    return spatial[0]


def _regular_step(coord: np.ndarray, span: float, name: str, path: Path) -> float:
    step = span / len(coord)
    if len(coord) < 1 or not np.allclose(np.abs(np.diff(coord)), step, atol=step * 1e-3):
        raise XmwInputError(f"{path}: {name} is not a global regular grid ({len(coord)} values over {span:g} degrees)")
    return step


def read_wetland_extent(path: str | Path, res: float) -> WetlandExtent:
    """The extent in ``path`` as monthly fractions on the ``res``-degree grid of a Grid store."""
    path = Path(path)
    ds = _open_dataset(path)
    try:
        var = _pick_variable(ds, path)
        da = ds[var]
        if not np.issubdtype(da.dtype, np.number):
            raise XmwInputError(f"{path}: variable {var!r} is not numeric ({da.dtype})")
        units = str(da.attrs.get("units", "")).strip()
        if units not in FRACTION_UNITS:
            raise XmwInputError(f"{path}: variable {var!r} has units {units!r}, not a fraction (1) or percent (%)")
        scale = FRACTION_UNITS[units]
        lat_dim = next((d for d in da.dims if d in _LAT_NAMES), None)
        lon_dim = next((d for d in da.dims if d in _LON_NAMES), None)
        lat, lon = _coord(ds, (lat_dim,)) if lat_dim else None, _coord(ds, (lon_dim,)) if lon_dim else None
        if lat is None or lon is None:
            raise XmwInputError(f"{path}: variable {var!r} has no lat/lon coordinates (dims {tuple(da.dims)})")
        step = _regular_step(lat, 180.0, "latitude", path)
        if not np.isclose(_regular_step(lon, 360.0, "longitude", path), step, rtol=1e-6):
            raise XmwInputError(f"{path}: latitude and longitude spacing differ")
        other = [d for d in da.dims if d not in (lat_dim, lon_dim)]
        if len(other) > 1:
            raise XmwInputError(f"{path}: variable {var!r} has dims {tuple(da.dims)}; expected (lat, lon) or "
                                "(time, lat, lon)")
        ratio = res / step
        if step > res * (1 + 1e-6) or abs(ratio - round(ratio)) > 1e-6:
            raise XmwInputError(f"{path}: a {step:g} degree grid does not nest in the store's {res:g} degree cells "
                                f"(regrid it to {res:g} degrees or a finer grid that divides it)")
        k = int(round(ratio))
        lat_flip = lat[0] > lat[-1]
        south = (lat[::-1] if lat_flip else lat)[0] - step / 2
        west = lon.min() - step / 2
        if abs(south + 90.0) > step * 1e-3 or abs(round(west / step) * step - west) > step * 1e-3:
            raise XmwInputError(f"{path}: grid cells do not start at -90 latitude and a multiple of {step:g} "
                                "longitude")
        lon_order = np.argsort(((lon + 180.0) % 360.0) - 180.0)  # 0..360 or -180..180, stored west → east
        nlat, nlon = grid_shape(res)
        weights = cell_area_m2(-90.0 + step * (np.arange(nlat * k) + 0.5), step).reshape(nlat, k)
        weights = (weights / weights.sum(axis=1, keepdims=True) / k)[:, :, None, None]

        steps = da.sizes[other[0]] if other else 0
        months = _months_of_steps(ds, other[0], steps, path) if other else np.zeros(1, dtype=np.int64)
        sums = np.zeros((12, nlat, nlon), dtype=np.float64)
        counts = np.zeros(12, dtype=np.int64)
        nan_values = 0
        for t in range(max(steps, 1)):
            layer = da.isel({other[0]: t}) if other else da
            fine = np.asarray(layer.transpose(lat_dim, lon_dim).values, dtype=np.float64)
            fine = fine[::-1] if lat_flip else fine
            fine = fine[:, lon_order] * scale
            nan = np.isnan(fine)
            nan_values += int(nan.sum())
            fine[nan] = 0.0
            if fine.min(initial=0.0) < -1e-6 or fine.max(initial=0.0) > 1.0 + 1e-6:
                where = "below 0" if fine.min() < -1e-6 else "above 1"
                raise XmwInputError(f"{path}: variable {var!r} has fractions {where} (min {fine.min():g}, max "
                                    f"{fine.max():g}{', after % to fraction' if scale != 1.0 else ''})")
            coarse = (fine.reshape(nlat, k, nlon, k) * weights).sum(axis=(1, 3))
            sums[months[t]] += np.clip(coarse, 0.0, 1.0)
            counts[months[t]] += 1
    finally:
        ds.close()
    if steps == 0:
        monthly = np.repeat(sums[:1], 12, axis=0)
    else:
        if (counts == 0).any():
            raise XmwInputError(f"{path}: no time step falls in month(s) "
                                f"{', '.join(str(m + 1) for m in np.flatnonzero(counts == 0))}")
        monthly = sums / counts[:, None, None]
    return WetlandExtent(monthly=monthly.astype(np.float32), source=str(path), variable=var, time_steps=steps,
                         nan_values=nan_values)
