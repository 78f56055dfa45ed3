"""The data contract every room shares: feature names, units, the 365-day calendar and the site→grid rule.

One module so that a unit or a calendar rule is written exactly once (DESIGN.md, "Data contract").
"""

from __future__ import annotations

import numpy as np

# --- units -------------------------------------------------------------------------------------------------
FLUX_UNIT = "mg CH4 m-2 d-1"
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

# --- calendar ------------------------------------------------------------------------------------------------
DAYS_PER_YEAR = 365
DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
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
