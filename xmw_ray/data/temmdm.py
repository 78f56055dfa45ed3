"""Reader of the published TEM-MDM files (X-MethaneWet layout, any regular global resolution).

Every file is checked when opened (variable present, numeric, shape, lat/lon coordinates against the grid that
the static maps define) and read in bands of latitude rows, so memory stays bounded by one band of one variable.
Month×day slots become 365-day years (``contract.slots_to_days``). Row 0 is the southern edge: a file stored
north→south is flipped on read. Each variable's ``units`` attribute is read and converted to the contract's unit
(``contract.unit_conversion``: g→mg, per second→per day, K→°C, …); an unknown unit, or a missing one on a physical
quantity, is refused naming the file and variable (class maps may carry none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmw_ray.data import layout
from xmw_ray.data.contract import (
    ANNUAL_VARS,
    DAILY_VARS,
    PER_STEP_TOTALS,
    STATIC_VARS,
    TARGET_VAR,
    UNITS,
    grid_coords,
    slots_to_days,
    unit_conversion,
)
from xmw_ray.errors import XmwInputError

_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "longitude")


def _open_dataset(path: Path):
    import xarray as xr

    if not path.is_file():
        raise XmwInputError(f"{path}: file not found")
    try:
        return xr.open_dataset(path, decode_times=False, mask_and_scale=True)
    except Exception as exc:  # unreadable or not netCDF
        raise XmwInputError(f"{path}: cannot be read as netCDF ({type(exc).__name__})") from exc


def _coord(ds, names: tuple[str, ...]) -> np.ndarray | None:
    for name in names:
        if name in ds.variables:
            return np.asarray(ds[name].values, dtype=np.float64)
    return None


class VarReader:
    """One variable of one open file, validated, readable by latitude rows (south→north)."""

    def __init__(self, path: Path, var: str, trailing: tuple[int, ...], res: float):
        self.path = path
        self._ds = _open_dataset(path)
        if var not in self._ds.data_vars:
            have = ", ".join(map(str, self._ds.data_vars)) or "none"
            self._ds.close()
            raise XmwInputError(f"{path}: variable {var!r} not found (has: {have})")
        self._da = self._ds[var]
        if not np.issubdtype(self._da.dtype, np.number):
            raise XmwInputError(f"{path}: variable {var!r} is not numeric ({self._da.dtype})")
        units = self._da.attrs.get("units")
        conversion = unit_conversion(None if units is None else str(units), UNITS[var], PER_STEP_TOTALS.get(var))
        if conversion is None:
            self._ds.close()
            have = "has no units attribute" if units is None else f"has units {str(units)!r}"
            raise XmwInputError(f"{path}: variable {var!r} {have}; expected {UNITS[var]!r} or a known equivalent")
        self._scale, self._offset = conversion
        lat, lon = grid_coords(res)
        expected = (len(lat), len(lon), *trailing)
        if tuple(self._da.shape) != expected:
            raise XmwInputError(f"{path}: variable {var!r} has shape {tuple(self._da.shape)}, expected {expected}")
        self.flipped = False
        file_lat = _coord(self._ds, _LAT_NAMES)
        file_lon = _coord(self._ds, _LON_NAMES)
        tol = res * 1e-3
        if file_lat is not None:
            if file_lat.shape == lat.shape and np.allclose(file_lat[::-1], lat, atol=tol) and len(lat) > 1:
                self.flipped = True
            elif file_lat.shape != lat.shape or not np.allclose(file_lat, lat, atol=tol):
                raise XmwInputError(f"{path}: latitude coordinates do not match a {res} degree grid from -90")
        if file_lon is not None and (file_lon.shape != lon.shape or not np.allclose(file_lon, lon, atol=tol)):
            raise XmwInputError(f"{path}: longitude coordinates do not match a {res} degree grid from -180")
        self.nlat = len(lat)

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` (south→north), float32 with missing values as NaN."""
        if self.flipped:
            block = self._da[self.nlat - r1 : self.nlat - r0].values[::-1]
        else:
            block = self._da[r0:r1].values
        if (self._scale, self._offset) != (1.0, 0.0):  # the file's units → the contract's (``UNITS``)
            block = np.asarray(block, dtype=np.float64) * self._scale + self._offset
        return np.ascontiguousarray(block, dtype=np.float32)

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> VarReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DailyReader:
    """A ``(nlat, nlon, 12, 31)`` slot file read as ``(rows, nlon, 365)`` days."""

    def __init__(self, path: Path, var: str, res: float):
        self._r = VarReader(path, var, (12, 31), res)
        self.path = path

    def rows(self, r0: int, r1: int) -> np.ndarray:
        return slots_to_days(self._r.rows(r0, r1))

    def close(self) -> None:
        self._r.close()


@dataclass(frozen=True)
class TemMdmSource:
    """A TEM-MDM directory: its grid (derived from the static maps) and the years that have every file."""

    root: Path  # the dataset root holding ``TEM-MDM/``
    res: float
    nlat: int
    nlon: int
    years: tuple[int, ...]

    @property
    def tem_dir(self) -> Path:
        return self.root / layout.TEM_DIR

    def static(self, var: str) -> VarReader:
        return VarReader(layout.static_path(self.root, var), var, (), self.res)

    def daily(self, var: str, year: int) -> DailyReader:
        return DailyReader(layout.daily_path(self.root, var, year), var, self.res)

    def npp(self, year: int) -> VarReader:
        return VarReader(layout.npp_path(self.root, year), "NPP", (12,), self.res)

    def target(self, year: int) -> DailyReader:
        return DailyReader(layout.target_path(self.root, year), TARGET_VAR, self.res)

    def annual(self, var: str) -> dict[int, float]:
        """``year → value`` from the ``year value`` text file of ``var`` (CH4 ppb or CO2 ppm)."""
        if var not in ANNUAL_VARS:
            raise ValueError(var)
        path = layout.annual_path(self.root, var)
        if not path.is_file():
            raise XmwInputError(f"{path}: file not found")
        out: dict[int, float] = {}
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                year, value = int(float(parts[0])), float(parts[1])
            except (ValueError, IndexError):
                raise XmwInputError(f"{path}: line {n} is not 'year value': {line.strip()!r}") from None
            out[year] = value
        return out

    def annual_values(self, years: tuple[int, ...]) -> np.ndarray:
        """``(len(years), len(ANNUAL_VARS))`` float32; a missing year is an input error."""
        out = np.empty((len(years), len(ANNUAL_VARS)), dtype=np.float32)
        for j, var in enumerate(ANNUAL_VARS):
            table = self.annual(var)
            for i, year in enumerate(years):
                if year not in table:
                    raise XmwInputError(f"{layout.annual_path(self.root, var)}: no value for year {year}")
                out[i, j] = table[year]
        return out


def _year_files(root: Path, year: int) -> list[Path]:
    return [layout.daily_path(root, v, year) for v in DAILY_VARS] + [
        layout.npp_path(root, year),
        layout.target_path(root, year),
    ]


def _grid_from_static(root: Path) -> tuple[float, int, int]:
    path = layout.static_path(root, STATIC_VARS[0])
    ds = _open_dataset(path)
    try:
        if STATIC_VARS[0] not in ds.data_vars:
            raise XmwInputError(f"{path}: variable {STATIC_VARS[0]!r} not found")
        shape = ds[STATIC_VARS[0]].shape
    finally:
        ds.close()
    if len(shape) != 2:
        raise XmwInputError(f"{path}: expected a 2-D (lat, lon) map, got shape {tuple(shape)}")
    nlat, nlon = int(shape[0]), int(shape[1])
    res = 180.0 / nlat
    if nlon != 2 * nlat:
        raise XmwInputError(f"{path}: shape {tuple(shape)} is not a global regular grid (nlon must be 2 x nlat)")
    return res, nlat, nlon


def open_temmdm(src: str | Path, years: tuple[int, int] | None = None) -> TemMdmSource:
    """Locate and check a TEM-MDM source (``src`` is the dataset root or its ``TEM-MDM`` folder)."""
    src = Path(src)
    if not src.is_dir():
        raise XmwInputError(f"{src}: not a directory")
    layout.refuse_unfinished_world(src)
    if (src / layout.TEM_DIR).is_dir():
        root = src
    elif src.name == layout.TEM_DIR:
        root = src.parent
    else:
        raise XmwInputError(f"{src}: no {layout.TEM_DIR}/ folder (expected the X-MethaneWet layout)")
    tem = root / layout.TEM_DIR
    if not any(tem.iterdir()):
        raise XmwInputError(f"{tem}: directory is empty")
    for var in STATIC_VARS:
        if not layout.static_path(root, var).is_file():
            raise XmwInputError(f"{layout.static_path(root, var)}: file not found (static map {var})")
    res, nlat, nlon = _grid_from_static(root)
    if years is None:
        found = sorted(
            int(m.group(1))
            for p in tem.glob(f"daily_ecmwf_{DAILY_VARS[0]}_*.nc")
            if (m := re.fullmatch(rf"daily_ecmwf_{DAILY_VARS[0]}_(\d{{4}})\.nc", p.name))
        )
        if not found:
            raise XmwInputError(f"{tem}: no daily_ecmwf_{DAILY_VARS[0]}_<year>.nc files")
        year_list = tuple(found)
    else:
        if years[1] < years[0]:
            raise XmwInputError(f"--years {years[0]}-{years[1]}: end year before start year")
        year_list = tuple(range(years[0], years[1] + 1))
    for year in year_list:
        for path in _year_files(root, year):
            if not path.is_file():
                raise XmwInputError(f"{path}: file not found (year {year})")
    source = TemMdmSource(root=root, res=res, nlat=nlat, nlon=nlon, years=year_list)
    _check_every_file(source)
    return source


def _check_every_file(src: TemMdmSource) -> None:
    """Open every file once (variable, shape, coordinates, units) so that a bad one is refused before any work."""
    readers = [lambda v=v: src.static(v) for v in STATIC_VARS]
    for year in src.years:
        readers += [lambda v=v, y=year: src.daily(v, y) for v in DAILY_VARS]
        readers += [lambda y=year: src.npp(y), lambda y=year: src.target(y)]
    for open_reader in readers:
        open_reader().close()
