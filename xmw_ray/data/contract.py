"""The data contract every room shares: feature names, units, the 365-day calendar and the site→grid rule.

One module so that a unit or a calendar rule is written exactly once (DESIGN.md, "Data contract").
"""

from __future__ import annotations

import re

import numpy as np

# --- units -------------------------------------------------------------------------------------------------
FLUX_UNIT = "mg CH4 m-2 d-1"
#: ``FLUX_UNIT`` as UDUNITS parses it, for CF files: the species is not part of a unit, so it goes in long_name.
FLUX_UNIT_CF = "mg m-2 d-1"
#: nmol CH4 m-2 s-1 → mg CH4 m-2 d-1: 86 400 s d-1 × 16.04 g mol-1 × 1e-9 mol nmol-1 × 1e3 mg g-1.
NMOL_PER_S_TO_MG_PER_DAY = 1.3859

# --- features (X-MethaneWet order and naming) ----------------------------------------------------------------
STATIC_VARS: tuple[str, ...] = (
    "clelev",
    "clfaotxt",
    "cltveg",
    "phh2o",
    "topsoil_bulk_density",
    "vegetation_type_11",
    "wetlandtype",
    "climatetype",
)
ANNUAL_VARS: tuple[str, ...] = ("CH4", "CO2")
DAILY_VARS: tuple[str, ...] = ("PREC", "SOLR", "TAIR", "VAPR")
MONTHLY_VARS: tuple[str, ...] = ("NPP",)
#: Dynamic (per-day) model inputs: daily weather plus monthly NPP held for each day of its month.
DYNAMIC_VARS: tuple[str, ...] = DAILY_VARS + MONTHLY_VARS
TARGET_VAR = "CH4_emission"

UNITS: dict[str, str] = {
    "clelev": "m",
    "clfaotxt": "class",
    "cltveg": "class",
    "phh2o": "pH",
    "topsoil_bulk_density": "kg dm-3",
    "vegetation_type_11": "class",
    "wetlandtype": "class",
    "climatetype": "class",
    "CH4": "ppb",
    "CO2": "ppm",
    "PREC": "mm d-1",
    "SOLR": "W m-2",
    "TAIR": "degC",
    "VAPR": "hPa",
    "NPP": "g C m-2 month-1",
    TARGET_VAR: FLUX_UNIT,
}

#: Canonical units that carry no physical dimension: any of these spellings (or no ``units`` attribute) is accepted.
DIMENSIONLESS_UNITS = {"class": {"", "1", "-", "class", "classes", "category", "categorical", "code", "index", "none"},
                       "pH": {"", "1", "-", "pH", "pH units", "none"}}
#: Unit symbols: symbol → (dimension, factor to that dimension's base unit: g, m, s, Pa, W, mol).
_UNIT_SYMBOLS: dict[str, tuple[str, float]] = {
    "ug": ("mass", 1e-6), "µg": ("mass", 1e-6), "mg": ("mass", 1e-3), "g": ("mass", 1.0), "kg": ("mass", 1e3),
    "nmol": ("amount", 1e-9), "umol": ("amount", 1e-6), "µmol": ("amount", 1e-6), "mmol": ("amount", 1e-3),
    "mol": ("amount", 1.0),
    "mm": ("length", 1e-3), "cm": ("length", 1e-2), "dm": ("length", 0.1), "m": ("length", 1.0),
    "km": ("length", 1e3),
    "s": ("time", 1.0), "sec": ("time", 1.0), "min": ("time", 60.0), "h": ("time", 3600.0), "hr": ("time", 3600.0),
    "d": ("time", 86400.0), "day": ("time", 86400.0),
    "month": ("month", 1.0), "mon": ("month", 1.0),  # calendar months differ in length: never converted to days
    "Pa": ("pressure", 1.0), "hPa": ("pressure", 100.0), "kPa": ("pressure", 1e3), "mbar": ("pressure", 100.0),
    "mb": ("pressure", 100.0), "W": ("power", 1.0),
}
#: Chemical species a unit may name (mass of CH4 is not mass of C); mol of CH4 becomes mass by its molar mass.
_SPECIES = {"CH4", "C", "CO2"}
_MOLAR_MASS_G = {"CH4": 16.04, "C": 12.011, "CO2": 44.009}
_CELSIUS = {"degC", "°C", "deg C", "C", "celsius", "Celsius", "degree_Celsius", "degrees_Celsius", "degrees C"}
_KELVIN = {"K", "kelvin", "Kelvin", "degK", "degree_Kelvin", "degrees_Kelvin"}
#: Spellings of precipitation as a water mass flux (1 kg m-2 of water is 1 mm).
_WATER_MASS_AS_DEPTH = {"kg m-2": "mm"}
_TOKEN = re.compile(r"^([A-Za-zµ]+?)(?:\^|\*\*)?(-?\d+)?$")


def _unit_terms(text: str) -> tuple[dict[str, int], float, str | None] | None:
    """``units`` text → (dimension exponents, factor to base units, species), or None when not understood."""
    text = " ".join(text.replace("·", " ").replace(".", " ").split())
    for water, depth in _WATER_MASS_AS_DEPTH.items():
        text = text.replace(water, depth)
    dims: dict[str, int] = {}
    factor, species = 1.0, None
    for i, part in enumerate(text.split("/")):
        for token in part.split():
            if token in _SPECIES:
                if species is not None:
                    return None
                species = token
                continue
            m = _TOKEN.match(token)
            if m is None or m.group(1) not in _UNIT_SYMBOLS:
                return None
            power = int(m.group(2) or 1) * (-1 if i > 0 else 1)
            dim, scale = _UNIT_SYMBOLS[m.group(1)]
            dims[dim] = dims.get(dim, 0) + power
            factor *= scale**power
    if species is not None and dims.get("amount"):  # mol of a species → its mass
        factor *= _MOLAR_MASS_G[species] ** dims["amount"]
        dims["mass"] = dims.get("mass", 0) + dims.pop("amount")
    return {k: v for k, v in dims.items() if v}, factor, species


#: Variables whose file holds one total per time step (a day's precipitation, a month's NPP): a unit without a time
#: dimension (``mm``, ``g C m-2``) is that step's total, i.e. per day / per month.
PER_STEP_TOTALS = {"PREC": "d-1", "NPP": "month-1"}


def unit_conversion(units: str | None, canonical: str, per_step: str | None = None) -> tuple[float, float] | None:
    """``(scale, offset)`` taking values in ``units`` to ``canonical`` (``x * scale + offset``), or None when
    ``units`` is not a known equivalent. Only exact equivalents: prefixes, per-second to per-day, K to °C, mol
    of a named species to its mass; a dimension that differs (e.g. per day vs per month) is not converted. A unit
    naming no species is taken as the variable's own (``mg m-2 d-1`` of CH4 emission); ``per_step`` is the time
    step of a total (``PER_STEP_TOTALS``)."""
    if canonical in DIMENSIONLESS_UNITS:
        return (1.0, 0.0) if (units or "").strip() in DIMENSIONLESS_UNITS[canonical] else None
    if units is None:
        return None
    units = units.strip()
    if canonical == "degC":
        if units in _CELSIUS:
            return 1.0, 0.0
        return (1.0, -273.15) if units in _KELVIN else None
    have, want = _unit_terms(units), _unit_terms(canonical)
    if have is not None and per_step is not None and not {"time", "month"} & set(have[0]):
        have = _unit_terms(f"{units} {per_step}")
    if have is None or want is None or have[0] != want[0] or have[2] not in (None, want[2]):
        return None
    return have[1] / want[1], 0.0


# --- calendar ------------------------------------------------------------------------------------------------
DAYS_PER_YEAR = 365
DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
#: First day (0-based) of each month in a no-leap year.
MONTH_STARTS = np.concatenate([[0], np.cumsum(DAYS_IN_MONTH)[:-1]])
#: Month (0-based) of each of the 365 days of a no-leap year.
MONTH_OF_DAY = np.repeat(np.arange(12), DAYS_IN_MONTH)
#: Day-of-month (0-based) of each of the 365 days.
DAY_OF_MONTH = np.concatenate([np.arange(n) for n in DAYS_IN_MONTH])
#: Flat index into a (12, 31) month×day slot array for each of the 365 valid days (Feb 29–31 etc. dropped).
SLOT_INDEX = MONTH_OF_DAY * 31 + DAY_OF_MONTH


def slots_to_days(arr: np.ndarray) -> np.ndarray:
    """(..., 12, 31) month×day slots → (..., 365) no-leap days; invalid slots (Feb 29-31, Apr 31...) dropped."""
    if arr.shape[-2:] != (12, 31):
        raise ValueError(f"expected trailing (12, 31) month x day slots, got {arr.shape}")
    flat = arr.reshape(*arr.shape[:-2], 12 * 31)
    return flat[..., SLOT_INDEX]


def days_to_slots(arr: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """(..., 365) days → (..., 12, 31) month×day slots, invalid slots set to ``fill`` (the published layout)."""
    if arr.shape[-1] != DAYS_PER_YEAR:
        raise ValueError(f"expected trailing 365 days, got {arr.shape}")
    out = np.full((*arr.shape[:-1], 12 * 31), fill, dtype=arr.dtype)
    out[..., SLOT_INDEX] = arr
    return out.reshape(*arr.shape[:-1], 12, 31)


def monthly_to_days(arr: np.ndarray) -> np.ndarray:
    """(..., 12) monthly values → (..., 365): each month's value held for each of its days."""
    if arr.shape[-1] != 12:
        raise ValueError(f"expected trailing 12 months, got {arr.shape}")
    return arr[..., MONTH_OF_DAY]


# --- grid ----------------------------------------------------------------------------------------------------
def grid_shape(res: float) -> tuple[int, int]:
    """(n_lat, n_lon) of a global regular grid at ``res`` degrees; row 0 is the southern edge, column 0 is -180°."""
    nlat, nlon = 180.0 / res, 360.0 / res
    if abs(nlat - round(nlat)) > 1e-9 or abs(nlon - round(nlon)) > 1e-9:
        raise ValueError(f"resolution {res} does not divide 180 and 360 degrees")
    return int(round(nlat)), int(round(nlon))


def grid_coords(res: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre latitudes (south→north) and longitudes (west→east)."""
    nlat, nlon = grid_shape(res)
    lat = -90.0 + res * (np.arange(nlat) + 0.5)
    lon = -180.0 + res * (np.arange(nlon) + 0.5)
    return lat, lon


def site_cell(lat: float | np.ndarray, lon: float | np.ndarray, res: float) -> tuple[np.ndarray, np.ndarray]:
    """The one site→grid rule: the cell containing the site, ``floor((lat+90)/res)``, ``floor((lon+180)/res)``."""
    nlat, nlon = grid_shape(res)
    ilat = np.clip(np.floor((np.asarray(lat) + 90.0) / res).astype(np.int64), 0, nlat - 1)
    ilon = np.floor((np.asarray(lon) + 180.0) / res).astype(np.int64) % nlon
    return ilat, ilon


def cell_area_m2(lat: np.ndarray, res: float) -> np.ndarray:
    """Area (m²) of a ``res``-degree cell centred at each latitude on a sphere of radius 6 371 km."""
    r = 6_371_000.0
    lat = np.asarray(lat, dtype=np.float64)
    south = np.deg2rad(lat - res / 2)
    north = np.deg2rad(lat + res / 2)
    return r * r * np.deg2rad(res) * (np.sin(north) - np.sin(south))
