"""File names and writers of the published X-MethaneWet layout (``TEM-MDM/`` and ``FLUXNET-CH4/``).

The built-in simulator and the tests write through these functions; the readers in ``temmdm.py`` and
``fluxnet.py`` are the only way those files come back in. Every writer writes to a temporary name and renames,
so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmw_ray.data.contract import (
    ANNUAL_VARS,
    DAILY_VARS,
    MONTH_STARTS,
    STATIC_VARS,
    TARGET_VAR,
    UNITS,
    grid_coords,
)
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import file_aside, write_text_atomic

TEM_DIR = "TEM-MDM"
FLUX_DIR = "FLUXNET-CH4"
ANNUAL_FILES = {"CH4": "ch4-1979-2018.txt", "CO2": "kco21979-2018.txt"}
SITE_META_FILE = "FLUXNET_CH4_2024.csv"
SITE_DAILY_FILE = "FLUXNET_T1_DD.csv"
#: The built-in world's summary (``xmw simulate``), written last: a world folder without it is unfinished.
TRUTH_FILE = "truth.json"
#: Written first into a built-in world's folder, so that a run killed before ``truth.json`` is still known as one.
WORLD_MARKER = ".xmw-world"


def refuse_unfinished_world(src: Path) -> None:
    """Refuse (one line) a built-in world that ``xmw simulate`` has not finished (stopped, killed or being rerun):
    its years may be fewer than asked or from two seeds, and preparing it would quietly train on that."""
    src = src.resolve()  # ``--src .`` inside FLUXNET-CH4 has no name to look at
    root = src.parent if src.name in (TEM_DIR, FLUX_DIR) else src
    if (root / WORLD_MARKER).is_file() and not (root / TRUTH_FILE).is_file():
        raise XmwInputError(f"{root}: an unfinished xmw simulate (no {TRUTH_FILE}; stopped or still running): "
                            "rerun it to the end first")


def static_path(root: Path, var: str) -> Path:
    return Path(root) / TEM_DIR / f"{var}.nc"


def daily_path(root: Path, var: str, year: int) -> Path:
    return Path(root) / TEM_DIR / f"daily_ecmwf_{var}_{year}.nc"


def npp_path(root: Path, year: int) -> Path:
    return Path(root) / TEM_DIR / f"monthly_NPP_{year}.nc"


def target_path(root: Path, year: int) -> Path:
    return Path(root) / TEM_DIR / f"CH4_emission_intensity_{year}.nc"


#: The built-in world's true flux (the "true world" parameters over every land cell; not part of the published
#: layout): ``TRUE_DIR/CH4_emission_intensity_<year>.nc``, the same form as the TEM-MDM target.
TRUE_DIR = "TRUE-WORLD"


def true_target_path(root: Path, year: int) -> Path:
    return Path(root) / TRUE_DIR / f"CH4_emission_intensity_{year}.nc"


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
    with file_aside(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def write_static(root: Path, var: str, data: np.ndarray, res: float, units: str | None = None) -> None:
    """One static map ``(nlat, nlon)``, variable named as the file stem (``units`` default: the contract's)."""
    if var not in STATIC_VARS:
        raise ValueError(f"unknown static variable {var!r}")
    _atomic_nc(static_path(root, var), var, data.astype(np.float32), ("lat", "lon"), res,
               UNITS[var] if units is None else units)


#: Extra maps beyond the published layout (the simulator writes them).
EXTRA_STATIC_VARS: tuple[str, ...] = ("landmask",)
#: The built-in world's wetland extent, in WAD2M's form (variable ``Fw``, monthly): ``prepare grid --wetland-area``.
WETLAND_EXTENT_FILE = "WAD2M/wetland_fraction.nc"


def write_extra_static(root: Path, var: str, data: np.ndarray, res: float, units: str = "") -> None:
    """One extra map ``(nlat, nlon)`` (``TEM-MDM/landmask.nc``), named as the stem."""
    if var not in EXTRA_STATIC_VARS:
        raise ValueError(f"unknown extra static variable {var!r}")
    _atomic_nc(static_path(root, var), var, data.astype(np.float32), ("lat", "lon"), res, units)


def write_daily(root: Path, var: str, year: int, slots: np.ndarray, res: float, units: str | None = None) -> None:
    """One year of a daily driver as ``(nlat, nlon, 12, 31)`` month×day slots (invalid slots NaN)."""
    if var not in DAILY_VARS:
        raise ValueError(f"unknown daily variable {var!r}")
    _atomic_nc(daily_path(root, var, year), var, slots.astype(np.float32), ("lat", "lon", "month", "day"), res,
               UNITS[var] if units is None else units)


def write_wetland_extent(root: Path, monthly: np.ndarray, res: float) -> Path:
    """A WAD2M-like wetland extent ``root/WAD2M/wetland_fraction.nc``: ``Fw (time, lat, lon)``, 12 months, 0-1."""
    import xarray as xr

    lat, lon = grid_coords(res)
    ds = xr.Dataset({"Fw": (("time", "lat", "lon"), monthly.astype(np.float32))},
                    coords={"time": MONTH_STARTS.astype(np.int32), "lat": lat, "lon": lon})
    ds["Fw"].attrs.update(units="1", long_name="fraction of the cell under wetland")
    ds["time"].attrs.update(units="days since 2000-01-01", calendar="noleap")  # month starts: decodable by xarray
    path = Path(root) / WETLAND_EXTENT_FILE
    with file_aside(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return path


def write_npp(root: Path, year: int, monthly: np.ndarray, res: float) -> None:
    """One year of monthly NPP ``(nlat, nlon, 12)``."""
    _atomic_nc(npp_path(root, year), "NPP", monthly.astype(np.float32), ("lat", "lon", "month"), res, "g C m-2 month-1")


def write_target(root: Path, year: int, slots: np.ndarray, res: float, true_world: bool = False) -> None:
    """One year of simulated CH4 emission ``(nlat, nlon, 12, 31)`` in mg CH4 m-2 d-1 (``true_world``: the built-in
    world's true flux, ``true_target_path``)."""
    _atomic_nc((true_target_path if true_world else target_path)(root, year), TARGET_VAR, slots.astype(np.float32), ("lat", "lon", "month", "day"), res,
               "mg CH4 m-2 d-1")


def write_annual(root: Path, var: str, years: np.ndarray, values: np.ndarray) -> None:
    """The ``year value`` text file of an annual atmospheric concentration (CH4 ppb or CO2 ppm)."""
    if var not in ANNUAL_VARS:
        raise ValueError(f"unknown annual variable {var!r}")
    path = annual_path(root, var)
    write_text_atomic(path, "".join(f"{int(y)} {float(v):.3f}\n" for y, v in zip(years, values, strict=True)))
