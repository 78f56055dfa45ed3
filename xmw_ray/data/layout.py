"""File names and writers of the published X-MethaneWet layout (``TEM-MDM/`` and ``FLUXNET-CH4/``).

The built-in simulator and the tests write through these functions; the readers in ``temmdm.py`` and
``fluxnet.py`` are the only way those files come back in. Every writer writes to a temporary name and renames,
so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xmw_ray.data.contract import ANNUAL_VARS, DAILY_VARS, STATIC_VARS, TARGET_VAR, grid_coords

TEM_DIR = "TEM-MDM"
FLUX_DIR = "FLUXNET-CH4"
ANNUAL_FILES = {"CH4": "ch4-1979-2018.txt", "CO2": "kco21979-2018.txt"}
SITE_META_FILE = "FLUXNET_CH4_2024.csv"
SITE_DAILY_FILE = "FLUXNET_T1_DD.csv"


def static_path(root: Path, var: str) -> Path:
    return Path(root) / TEM_DIR / f"{var}.nc"


def daily_path(root: Path, var: str, year: int) -> Path:
    return Path(root) / TEM_DIR / f"daily_ecmwf_{var}_{year}.nc"


def npp_path(root: Path, year: int) -> Path:
    return Path(root) / TEM_DIR / f"monthly_NPP_{year}.nc"


def target_path(root: Path, year: int) -> Path:
    return Path(root) / TEM_DIR / f"CH4_emission_intensity_{year}.nc"


def annual_path(root: Path, var: str) -> Path:
    return Path(root) / TEM_DIR / ANNUAL_FILES[var]


def _atomic_nc(path: Path, var: str, data: np.ndarray, dims: tuple[str, ...], res: float, units: str) -> None:
    import xarray as xr

    lat, lon = grid_coords(res)
    coords: dict[str, np.ndarray] = {"lat": lat, "lon": lon}
    if "month" in dims:
        coords["month"] = np.arange(1, 13)
    if "day" in dims:
        coords["day"] = np.arange(1, 32)
    ds = xr.Dataset({var: (dims, data)}, coords=coords)
    ds[var].attrs["units"] = units
    ds["lat"].attrs.update(units="degrees_north", standard_name="latitude")
    ds["lon"].attrs.update(units="degrees_east", standard_name="longitude")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ds.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, path)


def write_static(root: Path, var: str, data: np.ndarray, res: float, units: str = "") -> None:
    """One static map ``(nlat, nlon)``, variable named as the file stem."""
    if var not in STATIC_VARS:
        raise ValueError(f"unknown static variable {var!r}")
    _atomic_nc(static_path(root, var), var, data.astype(np.float32), ("lat", "lon"), res, units)


#: Extra maps beyond the published layout (the simulator writes them; the grid store uses the wetland area).
EXTRA_STATIC_VARS: tuple[str, ...] = ("landmask", "wetland_fraction")


def write_extra_static(root: Path, var: str, data: np.ndarray, res: float, units: str = "") -> None:
    """One extra map ``(nlat, nlon)`` (``TEM-MDM/landmask.nc``, ``TEM-MDM/wetland_fraction.nc``), named as the stem."""
    if var not in EXTRA_STATIC_VARS:
        raise ValueError(f"unknown extra static variable {var!r}")
    _atomic_nc(static_path(root, var), var, data.astype(np.float32), ("lat", "lon"), res, units)


def write_daily(root: Path, var: str, year: int, slots: np.ndarray, res: float, units: str = "") -> None:
    """One year of a daily driver as ``(nlat, nlon, 12, 31)`` month×day slots (invalid slots NaN)."""
    if var not in DAILY_VARS:
        raise ValueError(f"unknown daily variable {var!r}")
    _atomic_nc(daily_path(root, var, year), var, slots.astype(np.float32), ("lat", "lon", "month", "day"), res, units)


def write_npp(root: Path, year: int, monthly: np.ndarray, res: float) -> None:
    """One year of monthly NPP ``(nlat, nlon, 12)``."""
    _atomic_nc(npp_path(root, year), "NPP", monthly.astype(np.float32), ("lat", "lon", "month"), res, "g C m-2 month-1")


def write_target(root: Path, year: int, slots: np.ndarray, res: float) -> None:
    """One year of simulated CH4 emission ``(nlat, nlon, 12, 31)`` in mg CH4 m-2 d-1."""
    _atomic_nc(target_path(root, year), TARGET_VAR, slots.astype(np.float32), ("lat", "lon", "month", "day"), res,
               "mg CH4 m-2 d-1")


def write_annual(root: Path, var: str, years: np.ndarray, values: np.ndarray) -> None:
    """The ``year value`` text file of an annual atmospheric concentration (CH4 ppb or CO2 ppm)."""
    if var not in ANNUAL_VARS:
        raise ValueError(f"unknown annual variable {var!r}")
    path = annual_path(root, var)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{int(y)} {float(v):.3f}\n" for y, v in zip(years, values, strict=True)))
    os.replace(tmp, path)
