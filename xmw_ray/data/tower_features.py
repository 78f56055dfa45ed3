"""The "tower" driver set of the Site store: the towers' own daily columns, their trailing means, gap flags,
a seasonal clock, the process model's simulated flux at the tower, and metadata descriptors.

Why: on the real towers a sequence model beats gradient-boosted trees only with the towers' own drivers, the
simulated flux at the tower as an input, and these descriptors. Gaps are kept as NaN (the model fills them, the
``<v>_missing`` flags tell it where), so no site-year is dropped for an input gap.

Rules (``prepare sites --drivers tower``):

- base vars ``TOWER_BASE_VARS`` (FLUXNET-CH4 columns as they are, in the product's units), then ``SIM_FCH4``
  when a simulated-site folder is given: the FCH4 of ``xmw simulate sites``' file for the same tower and date,
  × 1.3859 → mg CH4 m-2 d-1 (``fluxnet.target_days``, the target's own conversion);
- ``<v>_mean<w>`` for each base v and each w of ``TRAILING_WINDOWS``: the mean of the valid days t-w+1..t of the
  tower's continuous record on the 365-day calendar (Feb 29 dropped, as everywhere in the store; a window reaches
  into the previous year when that year is in the file); NaN when the window holds no valid day;
- ``<v>_missing``: 1.0 where base v is NaN, else 0.0 (a column absent at a tower is all NaN, its flag all 1);
- ``DOY_SIN``/``DOY_COS``: sin/cos(2π·doy/365), doy = 1..365 on the 365-day calendar.
- static ``TOWER_STATIC_VARS``: wetland class one-hot (``CLASS_OF_CLASSIFICATION``; anything else → ``other``),
  ``abs_lat`` (|latitude|), ``igbp_wet`` (IGBP == WET), and the META file's vegetation flags
  (``fluxnet.VEGETATION_FLAG_COLUMNS``; 0 when absent). No CH4/CO2 annual values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmw_ray.data.contract import DAYS_PER_YEAR, FLUX_UNIT
from xmw_ray.data.fluxnet import (
    VEGETATION_FLAG_COLUMNS,
    SiteMeta,
    SiteSources,
    SiteYears,
    find_site_sources,
    iter_site_years,
    target_days,
)
from xmw_ray.errors import XmwInputError

DRIVER_SETS = ("xmw", "tower")
#: Base dynamic vars, each the FLUXNET-CH4 column of the same name (units of the product).
TOWER_BASE_VARS = ("TA_F", "P_F", "LE_F", "GPP_NT", "TS_1")
SIM_VAR = "SIM_FCH4"
TRAILING_WINDOWS = (7, 30)
DOY_VARS = ("DOY_SIN", "DOY_COS")
BASE_UNITS = {
    "TA_F": "degC",
    "P_F": "mm d-1",
    "LE_F": "W m-2",
    "GPP_NT": "umol CO2 m-2 s-1",
    "TS_1": "degC",
    SIM_VAR: FLUX_UNIT,
}
#: Wetland classes of the one-hot, in slot order (``class_<name>``).
WETLAND_CLASSES = ("bog", "fen", "tundra", "swamp", "marsh", "other")
#: SITE_CLASSIFICATION (lower case, stripped) → wetland class; any other value → ``other``.
CLASS_OF_CLASSIFICATION = {"bog": "bog", "fen": "fen", "wet tundra": "tundra", "drained": "tundra",
                           "swamp": "swamp", "marsh": "marsh", "salt marsh": "marsh"}
#: Static slots: class one-hot, |latitude|, IGBP == WET, then the vegetation flags named as ``SiteMeta`` attributes
#: (``fluxnet.VEGETATION_FLAG_COLUMNS``: moss_brown, moss_sphagnum, aerenchymatous, eri_shrub, tree).
TOWER_STATIC_VARS = (*(f"class_{c}" for c in WETLAND_CLASSES), "abs_lat", "igbp_wet", *VEGETATION_FLAG_COLUMNS)


def base_vars(with_sim: bool) -> tuple[str, ...]:
    return (*TOWER_BASE_VARS, SIM_VAR) if with_sim else TOWER_BASE_VARS


def tower_dynamic_vars(with_sim: bool) -> tuple[str, ...]:
    """Dynamic var names in store order (see the module docstring)."""
    base = base_vars(with_sim)
    means = tuple(f"{v}_mean{w}" for v in base for w in TRAILING_WINDOWS)
    return (*base, *means, *(f"{v}_missing" for v in base), *DOY_VARS)


def tower_units(with_sim: bool) -> dict[str, str]:
    """Unit of every dynamic and static var of the tower set."""
    units = {}
    for v in base_vars(with_sim):
        units[v] = BASE_UNITS[v]
        units.update({f"{v}_mean{w}": BASE_UNITS[v] for w in TRAILING_WINDOWS})
        units[f"{v}_missing"] = "1 (flag)"
    units.update({v: "1" for v in DOY_VARS})
    units.update({v: "1 (flag)" for v in TOWER_STATIC_VARS})
    units["abs_lat"] = "degrees"
    return units


def trailing_mean(values: np.ndarray, window: int, axis: int = 0) -> np.ndarray:
    """NaN-aware mean of days t-window+1..t along the day ``axis`` of ``values``: NaN where the window has no
    valid day; days before the record, and non-finite days, count as missing.

    The one trailing mean of the project (the tower store's ``<v>_mean<w>`` and the trees' memory features), so
    a gap costs only the windows that hold it. Running sums of the valid values and of their count keep the
    memory that of the input whatever the window."""
    days = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    valid = np.isfinite(days)
    sums = np.cumsum(np.where(valid, days, 0.0), axis=0)
    counts = np.cumsum(valid, axis=0)
    sums[window:] = sums[window:] - sums[:-window]
    counts[window:] = counts[window:] - counts[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return np.moveaxis(means, 0, axis)


def doy_features() -> np.ndarray:
    """``(365, 2)`` sin and cos of 2π·doy/365, doy = 1..365."""
    angle = 2.0 * np.pi * np.arange(1, DAYS_PER_YEAR + 1) / DAYS_PER_YEAR
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def on_span(years: np.ndarray, rows: np.ndarray, span: np.ndarray) -> np.ndarray:
    """``(len(span), 365)``: ``rows`` (one per year of ``years``) placed on consecutive ``span`` years, NaN elsewhere."""
    out = np.full((len(span), DAYS_PER_YEAR), np.nan)
    out[np.searchsorted(span, years)] = rows
    return out


def tower_dynamic(years: np.ndarray, base: dict[str, tuple[np.ndarray, np.ndarray]], with_sim: bool) -> np.ndarray:
    """``(len(years), 365, D)`` dynamic features for the store years ``years``.

    ``base[v] = (v_years, (n_v, 365) values)``: each base var on its own years (the file's years); an absent v
    is all NaN. Trailing means run over the continuous record spanning every year any var has.
    """
    names = base_vars(with_sim)
    all_years = np.concatenate([np.asarray(years), *(np.asarray(base[v][0]) for v in names if v in base)])
    span = np.arange(all_years.min(), all_years.max() + 1)
    pick = np.searchsorted(span, years)
    values, means = [], []
    for v in names:
        full = on_span(*base[v], span) if v in base else np.full((len(span), DAYS_PER_YEAR), np.nan)
        values.append(full[pick])
        flat = full.reshape(-1)
        for w in TRAILING_WINDOWS:
            means.append(trailing_mean(flat, w).reshape(full.shape)[pick])
    missing = [np.isnan(x).astype(np.float64) for x in values]
    doy = np.broadcast_to(doy_features(), (len(years), DAYS_PER_YEAR, len(DOY_VARS)))
    return np.concatenate([np.stack([*values, *means, *missing], axis=-1), doy], axis=-1)


def tower_static(meta: SiteMeta) -> np.ndarray:
    """The ``TOWER_STATIC_VARS`` of a tower, from its metadata."""
    cls = CLASS_OF_CLASSIFICATION.get(meta.classification.strip().lower(), "other")
    onehot = [1.0 if c == cls else 0.0 for c in WETLAND_CLASSES]
    return np.array([*onehot, abs(meta.lat), float(meta.igbp.strip().upper() == "WET"),
                     *(float(getattr(meta, flag)) for flag in VEGETATION_FLAG_COLUMNS)], dtype=np.float32)


class SimulatedFlux:
    """FCH4 of ``xmw simulate sites``' files (either FLUXNET-CH4 format) per tower, in mg CH4 m-2 d-1."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.sources = find_site_sources(self.folder)
        self._combined: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def days(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """``(years, (n_years, 365))`` simulated flux of ``site``; a tower not in the folder is an input error."""
        if site in self.sources.daily_paths:
            one = SiteSources(self.sources.meta_path, {site: self.sources.daily_paths[site]})
            return self._flux(next(iter_site_years(one, ["FCH4"])))
        if self.sources.combined_path is not None:
            if self._combined is None:  # one small file with every tower: read it once
                only = SiteSources(self.sources.meta_path, {}, self.sources.combined_path)
                self._combined = {sy.site: self._flux(sy) for sy in iter_site_years(only, ["FCH4"])}
            if site in self._combined:
                return self._combined[site]
        raise XmwInputError(f"{self.folder}: no simulated site file for tower {site} (--sim-sites)")

    @staticmethod
    def _flux(sy: SiteYears) -> tuple[np.ndarray, np.ndarray]:
        return sy.years, target_days(sy, "FCH4")
