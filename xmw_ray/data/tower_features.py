"""The "tower" driver set of the Site store: the towers' own daily columns, their trailing means, gap flags,
the solar season, the process model's simulated flux at the tower, and metadata descriptors.

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
- the season ``solar.SEASON_VARS`` from the tower's latitude and the day (doy 1..365 on the 365-day calendar):
  ``DAY_LENGTH`` (h), ``TOA_RAD`` (daily-mean top-of-atmosphere shortwave, W m-2) and ``SUN_TREND`` (+1 spring
  half-year, -1 autumn). Never the bare day of year: a southern tower's July is winter, and these say so.
- static ``TOWER_STATIC_VARS``: wetland class one-hot (``CLASS_OF_CLASSIFICATION``; a recorded class not listed →
  ``other``), ``abs_lat`` (|latitude|), ``igbp_wet`` (IGBP == WET), and the META file's vegetation flags
  (``fluxnet.VEGETATION_FLAG_COLUMNS``). Every slot is defined for any tower a user may bring: latitude is
  required; a class, IGBP code or flag the metadata does not give is NaN (unknown: models fill it with the training
  mean, ``unknown_descriptors`` counts it), never a silent 0. No CH4/CO2 annual values.
- driver quality control (``qc_drivers``, before any of the above): a base value outside ``PHYSICAL_BOUNDS`` is
  impossible; one far outside the tower's own climate (``outside_tower_climate``) is not that tower's weather.
  Both are masked to NaN and counted per var, and ``prepare sites`` prints the counts. The target columns get the
  physical rule alone (``qc_target``, ``TARGET_BOUNDS``): a real burst of emission is far outside a tower's usual
  range, so no tower-range rule is applied to them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from xmw_ray.data.contract import DAYS_PER_YEAR, FLUX_UNIT
from xmw_ray.data.features import Feature, FeatureSet, qualified
from xmw_ray.data.fluxnet import (
    VEGETATION_FLAG_COLUMNS,
    SiteMeta,
    SiteSources,
    SiteYears,
    find_site_sources,
    iter_site_years,
    target_days,
)
from xmw_ray.data.solar import SEASON_MEANINGS, SEASON_UNITS, SEASON_VARS, season_features
from xmw_ray.errors import XmwInputError

#: Base dynamic vars, each the FLUXNET-CH4 column of the same name (units of the product).
TOWER_BASE_VARS = ("TA_F", "P_F", "LE_F", "GPP_NT", "TS_1")
SIM_VAR = "SIM_FCH4"
TRAILING_WINDOWS = (7, 30)
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
    return (*base, *means, *(f"{v}_missing" for v in base), *SEASON_VARS)


def tower_units(with_sim: bool) -> dict[str, str]:
    """Unit of every dynamic and static var of the tower set."""
    units = {}
    for v in base_vars(with_sim):
        units[v] = BASE_UNITS[v]
        units.update({f"{v}_mean{w}": BASE_UNITS[v] for w in TRAILING_WINDOWS})
        units[f"{v}_missing"] = "1 (flag)"
    units.update(SEASON_UNITS)
    units.update({v: "1 (flag)" for v in TOWER_STATIC_VARS})
    units["abs_lat"] = "degrees"
    return units


#: Meaning and provenance of each base var (``features.py``).
BASE_FEATURES = {
    "TA_F": ("air_temperature", "tower"),
    "P_F": ("precipitation", "tower"),
    "LE_F": ("latent_heat_flux", "tower"),
    "GPP_NT": ("gross_primary_productivity", "tower"),
    "TS_1": ("soil_temperature", "tower"),
    SIM_VAR: ("ch4_flux", "simulated"),
}


def tower_features(with_sim: bool) -> FeatureSet:
    """Descriptors of every dynamic and static var of the tower set (units from ``tower_units``): base vars and
    their trailing means keep the base's meaning and provenance; gap flags and the solar season are ``derived``;
    the static slots come from the site ``metadata``."""
    units = tower_units(with_sim)
    dynamic = []
    for v in base_vars(with_sim):
        meaning, provenance = BASE_FEATURES[v]
        dynamic.append(Feature(v, meaning, provenance, units[v]))
    for v in base_vars(with_sim):
        meaning, provenance = BASE_FEATURES[v]
        dynamic += [Feature(f"{v}_mean{w}", qualified(meaning, f"trailing_mean_{w}d"), provenance, units[v])
                    for w in TRAILING_WINDOWS]
    dynamic += [Feature(f"{v}_missing", qualified(BASE_FEATURES[v][0], "gap_flag"), "derived", units[f"{v}_missing"])
                for v in base_vars(with_sim)]
    dynamic += [Feature(v, SEASON_MEANINGS[v], "derived", units[v]) for v in SEASON_VARS]
    static = [Feature(f"class_{c}", qualified("wetland_class", f"is_{c}"), "metadata", units[f"class_{c}"])
              for c in WETLAND_CLASSES]
    static += [Feature("abs_lat", "absolute_latitude", "metadata", units["abs_lat"]),
               Feature("igbp_wet", qualified("igbp_class", "is_wet"), "metadata", units["igbp_wet"])]
    static += [Feature(flag, qualified("vegetation_presence", f"is_{flag}"), "metadata", units[flag])
               for flag in VEGETATION_FLAG_COLUMNS]
    features = FeatureSet(tuple(dynamic), tuple(static))
    assert features.names("dynamic") == tower_dynamic_vars(with_sim) and features.names("static") == TOWER_STATIC_VARS
    return features


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


def on_span(years: np.ndarray, rows: np.ndarray, span: np.ndarray) -> np.ndarray:
    """``(len(span), 365)``: ``rows`` (one per year of ``years``) placed on consecutive ``span`` years, NaN elsewhere."""
    out = np.full((len(span), DAYS_PER_YEAR), np.nan)
    out[np.searchsorted(span, years)] = rows
    return out


def tower_dynamic(years: np.ndarray, base: dict[str, tuple[np.ndarray, np.ndarray]], with_sim: bool,
                  lat: float) -> np.ndarray:
    """``(len(years), 365, D)`` dynamic features for the store years ``years`` of a tower at latitude ``lat``.

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
    season = np.broadcast_to(season_features(lat), (len(years), DAYS_PER_YEAR, len(SEASON_VARS)))
    return np.concatenate([np.stack([*values, *means, *missing], axis=-1), season], axis=-1)


def tower_static(meta: SiteMeta) -> np.ndarray:
    """The ``TOWER_STATIC_VARS`` of a tower, from its metadata; NaN where the metadata does not say (an empty
    SITE_CLASSIFICATION makes the whole class one-hot NaN, an empty IGBP ``igbp_wet``, an absent flag the flag)."""
    classification = meta.classification.strip().lower()
    if classification:
        cls = CLASS_OF_CLASSIFICATION.get(classification, "other")
        onehot = [1.0 if c == cls else 0.0 for c in WETLAND_CLASSES]
    else:
        onehot = [np.nan] * len(WETLAND_CLASSES)
    igbp = meta.igbp.strip().upper()
    return np.array([*onehot, abs(meta.lat), float(igbp == "WET") if igbp else np.nan,
                     *(float(getattr(meta, flag)) for flag in VEGETATION_FLAG_COLUMNS)], dtype=np.float32)


def unknown_descriptors(static: np.ndarray) -> list[str]:
    """Names of the descriptors a tower's ``tower_static`` vector leaves unknown (NaN); the class one-hot counts
    once, as ``class``."""
    names = ["class" if v.startswith("class_") else v for v, x in zip(TOWER_STATIC_VARS, static, strict=True)
             if np.isnan(x)]
    return list(dict.fromkeys(names))


#: Physically possible daily values of each base var and GPP_DT (inclusive; the product's units). A value outside is a
#: sensor, processing or unit fault, never weather. Bounds come from records and energy limits, not from skill:
#: TA_F: the air-temperature records -89.2 °C (Vostok) and 56.7 °C (Death Valley); TS_1: frozen polar ground to
#: sun-baked bare soil; P_F: the 24-hour rainfall record, 1825 mm (Foc-Foc, La Réunion, 1966); LE_F: the daily-mean
#: top-of-atmosphere shortwave never exceeds ~560 W m-2 (``solar.toa_insolation``), so evaporation, even fed by
#: advected heat, stays below ~1000, and condensation is small; GPP_NT (daily mean, umol CO2 m-2 s-1): the most
#: productive ecosystems reach ~40 (≈ 40 g C m-2 d-1), and negative values are partitioning noise of a few units;
#: GPP_DT (read only by the ``xmw`` set, as the stand-in for missing GPP_NT days): the same.
PHYSICAL_BOUNDS = {
    "TA_F": (-90.0, 60.0),
    "TS_1": (-60.0, 80.0),
    "P_F": (0.0, 2000.0),
    "LE_F": (-200.0, 1000.0),
    "GPP_NT": (-10.0, 100.0),
    "GPP_DT": (-10.0, 100.0),
}
#: Tower-climate rule for the non-precipitation vars: a value beyond the tower's own 1st..99th percentile range
#: widened by ``CLIMATE_RANGE_FACTOR`` times that range on each side. Percentiles span the seasonal cycle (a
#: median ± k·MAD of a two-season series does not) and ignore up to 1% of bad values; three ranges keep a rare
#: real cold snap of a tropical tower (a Pantanal friagem: 30 °C → 10 °C) as weather. Judged only on at least
#: ``MIN_CLIMATE_DAYS`` valid days (with fewer the tower's climate is not known).
CLIMATE_RANGE_FACTOR = 3.0
MIN_CLIMATE_DAYS = 365
#: Precipitation is zero-inflated and heavy-tailed, so a single storm is never judged: a year (at least
#: ``MIN_PRECIP_YEAR_DAYS`` valid days, total scaled to 365 days) whose total exceeds ``PRECIP_YEAR_FACTOR`` times
#: the median of the tower's such years (at least ``MIN_PRECIP_YEARS`` of them) is not that tower's climate (wettest
#: years rarely reach twice the median); its P_F is masked.
PRECIP_VAR = "P_F"
PRECIP_YEAR_FACTOR = 4.0
MIN_PRECIP_YEAR_DAYS = 300
MIN_PRECIP_YEARS = 3
QC_KINDS = ("impossible", "outside_tower_climate")


def outside_tower_climate(var: str, values: np.ndarray) -> np.ndarray:
    """Boolean mask (shape of ``values``, ``(n_years, 365)``) of values far outside the tower's own climate for
    ``var`` (rules above); NaN values are never flagged."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros(values.shape, dtype=bool)
    valid = np.isfinite(values)
    if var == PRECIP_VAR:
        days = valid.sum(axis=1)
        full = days >= MIN_PRECIP_YEAR_DAYS
        if full.sum() < MIN_PRECIP_YEARS:
            return out
        totals = np.nansum(values, axis=1) / np.maximum(days, 1) * DAYS_PER_YEAR
        wet = full & (totals > PRECIP_YEAR_FACTOR * np.median(totals[full]))
        out[wet] = valid[wet]
        return out
    if valid.sum() < MIN_CLIMATE_DAYS:
        return out
    low, high = np.percentile(values[valid], [1.0, 99.0])
    spread = CLIMATE_RANGE_FACTOR * (high - low)
    out[valid] = (values[valid] < low - spread) | (values[valid] > high + spread)
    return out


def _mask_outside(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """(a float64 copy of ``values`` with those outside ``low..high`` set to NaN, the mask of those values)."""
    values = np.array(values, dtype=np.float64)
    outside = np.isfinite(values) & ((values < low) | (values > high))
    values[outside] = np.nan
    return values, outside


def qc_drivers(columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """``columns`` (var → a tower's ``(n_years, 365)`` record) with impossible values (``PHYSICAL_BOUNDS``), then
    values far outside the tower's own climate (``outside_tower_climate``, judged on the possible ones), set to NaN;
    and ``{var: {"impossible": n, "outside_tower_climate": n}}`` for the vars checked. Vars without bounds pass."""
    cleaned, counts = dict(columns), {}
    for var, (low, high) in PHYSICAL_BOUNDS.items():
        if var not in columns:
            continue
        values, impossible = _mask_outside(columns[var], low, high)
        foreign = outside_tower_climate(var, values)
        values[foreign] = np.nan
        cleaned[var] = values
        counts[var] = {"impossible": int(impossible.sum()), "outside_tower_climate": int(foreign.sum())}
    return cleaned, counts


#: Physically possible daily-mean CH4 fluxes of a wetland tower (nmol CH4 m-2 s-1, the release's unit), for every
#: target column. Net uptake by the most active upland soils is about 1 nmol m-2 s-1 (0.1-0.5 g CH4 m-2 yr-1), so a
#: day's mean below -50 is a measurement fault (e.g. a mean over a few noisy half-hours), never a flux. Emission has
#: no such sharp limit: a rewetted fen's daily mean reaches 2,000-3,000 in the release (DE-Hte), and a fault of that
#: size cannot be told from a burst by its value alone, so the ceiling only catches what no ecosystem comes near
#: (10,000: 14 g CH4 m-2 d-1). Set from these limits, not from any skill score. Masking the low faults but keeping
#: high noise of the same size leans the target up a little (20 of about 11,000 days at the shared towers).
TARGET_BOUNDS = {column: (-50.0, 10000.0) for column in ("FCH4", "FCH4_F", "FCH4_F_ANNOPTLM")}
#: ``target_qc``'s key for the target days the QC removed (after ``xmw-fill`` refilled what it could).
TARGET_DAYS_LOST = "target_days_lost"


def qc_target(columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """``columns`` with target values outside ``TARGET_BOUNDS`` set to NaN, and ``{column: n masked}`` for the
    target columns present. Whether a masked value costs a target day depends on ``--target`` (``xmw-fill`` refills
    a masked FCH4_F day from FCH4_F_ANNOPTLM): :func:`target_days_lost` counts that."""
    cleaned, counts = dict(columns), {}
    for column, (low, high) in TARGET_BOUNDS.items():
        if column not in columns:
            continue
        cleaned[column], impossible = _mask_outside(columns[column], low, high)
        counts[column] = int(impossible.sum())
    return cleaned, counts


def target_days_lost(before: np.ndarray, after: np.ndarray) -> int:
    """Target days (``fluxnet.target_days`` of one tower) present before the QC and missing after it."""
    return int((np.isfinite(before) & ~np.isfinite(after)).sum())


def target_qc_line(counts: dict[str, int]) -> str:
    """One line for ``prepare sites``' output: the impossible daily fluxes masked per column, and the target days
    that cost (fewer than the values masked with ``xmw-fill``, which refills FCH4_F from FCH4_F_ANNOPTLM)."""
    lo, hi = next(iter(TARGET_BOUNDS.values()))
    parts = [f"{c} {counts[c]}" for c in TARGET_BOUNDS if counts.get(c)]
    if not parts:
        return f"target QC: nothing masked (daily means outside {lo:g}..{hi:g} nmol m-2 s-1 are impossible)"
    masked = sum(counts[c] for c in TARGET_BOUNDS if counts.get(c))
    return (f"target QC: masked {masked} impossible daily fluxes ({', '.join(parts)}; outside {lo:g}..{hi:g} "
            f"nmol m-2 s-1): {counts.get(TARGET_DAYS_LOST, 0)} target days lost")


def qc_line(counts: dict[str, dict[str, int]]) -> str:
    """One line for ``prepare sites``' output: what driver QC masked, per var and kind."""
    parts = [f"{var} {n} {kind.replace('_', ' ')}" for var, kinds in counts.items() for kind, n in kinds.items() if n]
    total = sum(n for kinds in counts.values() for n in kinds.values())
    return f"driver QC: masked {total} values ({', '.join(parts)})" if total else "driver QC: nothing masked"


#: The file ``xmw simulate sites`` writes last beside its site files: its claim that the folder is its own output,
#: with the SHA-256 of every file it wrote, so observations (or edited files) are never read as ``SIM_FCH4``.
SIM_MARKER = "xmw-simulated-sites.json"
SIM_MARKER_FORMAT = "xmw-simulated-sites-v1"
SIM_TOOL = "xmw simulate sites"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sim_marker(forcing: str | Path, files: list[Path]) -> dict:
    """The marker's content for ``files`` simulated at ``forcing``'s towers."""
    from xmw_ray import __version__

    return {"format": SIM_MARKER_FORMAT, "tool": SIM_TOOL, "version": __version__,
            "forcing": str(Path(forcing).resolve()), "files": {p.name: file_sha256(p) for p in sorted(files)}}


def check_sim_marker(sources: SiteSources, given: str | Path) -> None:
    """Refuse a ``--sim-sites`` folder that ``xmw simulate sites`` did not mark as its own, or whose files differ
    from what it wrote (one line naming the folder)."""
    folder = sources.meta_path.parent
    path = folder / SIM_MARKER
    flag = f"--sim-sites {given}"
    if not path.is_file():
        raise XmwInputError(f"{flag}: not output of {SIM_TOOL} (no {SIM_MARKER} in {folder}; older xmw did "
                            "not write it: simulate again); observed flux is never a driver")
    try:
        marker = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise XmwInputError(f"{flag}: {path.name} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(marker, dict) or marker.get("format") != SIM_MARKER_FORMAT or marker.get("tool") != SIM_TOOL \
            or not isinstance(marker.get("files"), dict):
        raise XmwInputError(f"{flag}: {path.name} is not a well-formed {SIM_TOOL} marker "
                            f"(needs format {SIM_MARKER_FORMAT!r}, tool {SIM_TOOL!r} and files)")
    used = [*sources.daily_paths.values(), sources.meta_path,
            *([sources.combined_path] if sources.combined_path is not None else [])]
    for file in sorted(used):
        if marker["files"].get(file.name) != file_sha256(file):
            raise XmwInputError(f"{flag}: {file.name} is not a file {SIM_TOOL} wrote there (not listed in "
                                f"{SIM_MARKER}, or changed since)")


class SimulatedFlux:
    """FCH4 of ``xmw simulate sites``' files (either FLUXNET-CH4 format) per tower, in mg CH4 m-2 d-1; only a
    folder carrying that command's marker (``check_sim_marker``) is read."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.sources = find_site_sources(self.folder)
        check_sim_marker(self.sources, self.folder)
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
