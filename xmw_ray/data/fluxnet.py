"""Readers of FLUXNET-CH4 daily tower data, and the tower → X-MethaneWet feature rules.

Two source formats are accepted in one folder (or its ``FLUXNET-CH4/`` sub-folder):

- the product's release: ``FLX_<SITE>_FLUXNET-CH4_DD_<years>_1-1.csv`` per tower plus
  ``FLX_AA-Flx_CH4-META_*.csv`` (SITE_ID, LAT, LON, SITE_CLASSIFICATION, IGBP, KOPPEN, TREE, ...; UTF-8 BOM);
- X-MethaneWet's combined files: ``FLUXNET_T1_DD.csv`` (all towers, a ``Site`` column) plus
  ``FLUXNET_CH4_2024.csv`` (SITE_ID, LOCATION_LAT, LOCATION_LONG, LOCATION_ELEV, IGBP, ...).

Cleaning: ``-9999``, ``inf`` and ``|x| > 1e30`` are missing (NaN). Dates go onto 365-day years (Feb 29 dropped).

Feature rules (documented constants below):

- target: ``FCH4`` (nmol m-2 s-1) × 1.3859 → mg CH4 m-2 d-1; or ``FCH4_F``; or ``xmw-fill`` (``FCH4_F``, then
  ``FCH4_F_ANNOPTLM`` where ``FCH4_F`` is missing), X-MethaneWet's fill.
- drivers: PREC ← P_F, TAIR ← TA_F, SOLR ← SW_IN_F, VAPR = e_s(TA_F) − VPD_F (hPa, clipped at 0) with the Magnus
  saturation formula of Alduchov & Eskridge (1996): e_s = 6.1094 exp(17.625 T / (T + 243.04)) hPa.
- NPP (when no Grid store is given): ``NPP_PER_GPP`` × monthly GPP, GPP_NT read as a daily mean in
  µmol CO2 m-2 s-1 (the product keeps half-hourly units in its daily means, as FCH4 shows) →
  × 12.011e-6 g C µmol-1 × 86 400 s d-1 × days in month = g C m-2 month-1. A month needs ``MIN_GPP_DAYS`` valid days;
  negative monthly GPP (partitioning noise) is clipped to 0. A missing GPP_NT day is taken from GPP_DT scaled to the
  tower's GPP_NT level (``gpp_days``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xmw_ray.data import layout
from xmw_ray.data.contract import (
    DAYS_IN_MONTH,
    DAYS_PER_YEAR,
    MONTH_OF_DAY,
    NMOL_PER_S_TO_MG_PER_DAY,
    STATIC_VARS,
)
from xmw_ray.data.features import Feature
from xmw_ray.data.options import TARGET_CHOICES
from xmw_ray.errors import XmwInputError

MISSING_VALUE = -9999.0
HUGE = 1e30
#: Feature ← FLUXNET-CH4 column, for the daily drivers taken as they are.
DRIVER_COLUMNS = {"PREC": "P_F", "SOLR": "SW_IN_F", "TAIR": "TA_F"}
VPD_COLUMN = "VPD_F"
GPP_COLUMN = "GPP_NT"
#: Where a day's GPP_NT is missing, NPP takes that day from GPP_DT, the daytime (light-response) partitioning of the
#: same NEE, scaled by the tower's own NT/DT ratio over the days both have (at least ``MIN_GPP_OVERLAP_DAYS``; else
#: unscaled): the two partitionings differ by tower (their ratio on the shared towers runs from 0.53 to 1.36, 0.91
#: overall), so an unscaled fill would step the NPP level within a year. Without a stand-in about half the shared
#: towers' site-years lack enough GPP_NT days in some month and are dropped (``npp_gap``).
GPP_FALLBACK_COLUMN = "GPP_DT"
MIN_GPP_OVERLAP_DAYS = 30
#: Carbon-use efficiency NPP/GPP (Waring et al. 1998, ~0.47 across biomes; 0.5 is the common round value).
NPP_PER_GPP = 0.5
#: µmol CO2 m-2 s-1 → g C m-2 d-1.
UMOL_PER_S_TO_GC_PER_DAY = 12.011e-6 * 86_400
MIN_GPP_DAYS = 7
#: ``SiteMeta`` attribute ← META file column, for the vegetation flags (NaN, unknown, when the column or value is
#: missing: a tower a user brings may not record them, and 0 would claim an absence nobody observed).
VEGETATION_FLAG_COLUMNS = {"moss_brown": "MOSS_BROWN", "moss_sphagnum": "MOSS_SPHAGNUM",
                           "aerenchymatous": "AERENCHYMATOUS", "eri_shrub": "ERI_SHRUB", "tree": "TREE"}
DAILY_FILE_RE = re.compile(r"FLX_(?P<site>[A-Za-z]{2}-[A-Za-z0-9]{3})_FLUXNET-CH4_DD_.*\.csv")
META_GLOB = "FLX_AA-Flx_CH4-META_*.csv"
_DATE_COLUMNS = ("TIMESTAMP", "DATE", "Date", "date")
_SITE_COLUMNS = ("Site", "SITE", "SITE_ID", "site")

# --- metadata encodings used for static slots when no Grid store is given -----------------------------------
IGBP_CLASSES = ("ENF", "EBF", "DNF", "DBF", "MF", "CSH", "OSH", "WSA", "SAV", "GRA", "WET", "CRO", "URB", "CVM",
                "SNO", "BSV", "WAT")
KOPPEN_CLASSES = ("Af", "Am", "Aw", "As", "BWh", "BWk", "BSh", "BSk", "Csa", "Csb", "Csc", "Cwa", "Cwb", "Cwc",
                  "Cfa", "Cfb", "Cfc", "Dsa", "Dsb", "Dsc", "Dsd", "Dwa", "Dwb", "Dwc", "Dwd", "Dfa", "Dfb", "Dfc",
                  "Dfd", "ET", "EF")
#: SITE_CLASSIFICATION → X-MethaneWet wetland class (1 forested bog, 2 unforested bog, 3 forested swamp,
#: 4 unforested swamp; 0 not a wetland). Peatland-like classes are bogs, flooded mineral ones swamps; TREE=1 →
#: forested. X-MethaneWet's own table (``configs/presets/xmw_site_wetland_type.csv``, ``--wetland-types xmw``) is
#: not a function of these two fields: it differs for 8 of its 43 towers (e.g. DE-SfN, a bog with trees, is 2
#: there and 1 here; BW-Nxr is 5, a class outside 1-4; ``tests/test_data_fluxnet.py`` lists them).
_WETLAND_CLASS = {"bog": 2, "fen": 2, "wet tundra": 2, "drained": 2, "swamp": 4, "marsh": 4, "salt marsh": 4,
                  "mangrove": 4}
#: What each static slot holds for a tower when no Grid store is given (slot names stay the grid's names).
SITE_STATIC_SOURCES = {
    "clelev": "site elevation m (metadata LOCATION_ELEV; 0 when not given)",
    "clfaotxt": "0 (soil texture not known at towers)",
    "cltveg": "IGBP class, 1-based index into IGBP_CLASSES (0 unknown)",
    "phh2o": "0 (soil pH not known at towers)",
    "topsoil_bulk_density": "0 (bulk density not known at towers)",
    "vegetation_type_11": "site latitude, degrees north",
    "wetlandtype": "wetland class 1-4 from SITE_CLASSIFICATION and TREE (or the --wetland-types override)",
    "climatetype": "Koppen class, 1-based index into KOPPEN_CLASSES (0 unknown)",
}
#: What those slots are, as feature descriptors (``features.py``): mostly NOT the Grid store's quantity of the same
#: name, so a model trained on the grid is refused these inputs.
SITE_STATIC_FEATURES: tuple[Feature, ...] = (
    Feature("clelev", "elevation", "metadata", "m"),
    Feature("clfaotxt", "soil_texture_class", "constant", "class"),
    Feature("cltveg", "igbp_class", "metadata", "IGBP class"),
    Feature("phh2o", "soil_ph", "constant", "pH"),
    Feature("topsoil_bulk_density", "soil_bulk_density", "constant", "kg dm-3"),
    Feature("vegetation_type_11", "latitude", "metadata", "degrees_north"),
    Feature("wetlandtype", "wetland_type", "metadata", "class"),
    Feature("climatetype", "koppen_class", "metadata", "Koppen class"),
)


@dataclass(frozen=True)
class SiteMeta:
    """One tower's metadata (what the feature rules need)."""

    site: str
    lat: float
    lon: float
    elev: float = float("nan")
    classification: str = ""
    igbp: str = ""
    koppen: str = ""
    tree: float = float("nan")  # vegetation flags: 1 present, 0 absent, NaN not recorded
    moss_brown: float = float("nan")
    moss_sphagnum: float = float("nan")
    aerenchymatous: float = float("nan")
    eri_shrub: float = float("nan")

    def wetland_class(self) -> int:
        base = _WETLAND_CLASS.get(self.classification.strip().lower(), 0)
        return base - 1 if base and self.tree == 1 else base

    def static_vector(self, wetland_type: int | None = None) -> np.ndarray:
        """The static slots (``STATIC_VARS`` order) as documented in ``SITE_STATIC_SOURCES``."""
        values = {
            "clelev": self.elev if np.isfinite(self.elev) else 0.0,
            "clfaotxt": 0.0,
            "cltveg": _class_index(self.igbp, IGBP_CLASSES),
            "phh2o": 0.0,
            "topsoil_bulk_density": 0.0,
            "vegetation_type_11": self.lat,
            "wetlandtype": float(self.wetland_class() if wetland_type is None else wetland_type),
            "climatetype": _class_index(self.koppen, KOPPEN_CLASSES),
        }
        return np.array([values[v] for v in STATIC_VARS], dtype=np.float32)


def _class_index(code: str, classes: tuple[str, ...]) -> float:
    lower = [c.lower() for c in classes]
    code = code.strip().lower()
    return float(lower.index(code) + 1) if code in lower else 0.0


def _first(columns, names) -> str | None:
    return next((n for n in names if n in columns), None)


def _flag(text: str) -> float:
    """A 0/1 metadata flag; NaN (not recorded) when empty or not numeric."""
    value = pd.to_numeric(text, errors="coerce")
    return float(value) if pd.notna(value) else float("nan")


def read_site_metadata(path: str | Path) -> dict[str, SiteMeta]:
    """``site → SiteMeta`` from the product's META file or X-MethaneWet's ``FLUXNET_CH4_2024.csv``."""
    path = Path(path)
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    except Exception as exc:
        raise XmwInputError(f"{path}: cannot be read as CSV ({type(exc).__name__})") from exc
    cols = set(df.columns)
    site_col = _first(cols, ("SITE_ID", "Site", "SITE"))
    lat_col = _first(cols, ("LAT", "LOCATION_LAT"))
    lon_col = _first(cols, ("LON", "LOCATION_LONG", "LOCATION_LON"))
    if site_col is None or lat_col is None or lon_col is None:
        raise XmwInputError(f"{path}: site metadata needs SITE_ID and LAT/LOCATION_LAT and LON/LOCATION_LONG columns")
    elev_col = _first(cols, ("LOCATION_ELEV", "ELEV", "ELEVATION"))
    out: dict[str, SiteMeta] = {}
    for i, row in df.iterrows():
        site = row[site_col].strip()
        try:
            lat, lon = float(row[lat_col]), float(row[lon_col])
        except ValueError:
            raise XmwInputError(f"{path}: row {i + 2} ({site}): latitude/longitude is not numeric") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 360):
            raise XmwInputError(f"{path}: row {i + 2} ({site}): coordinates out of range ({lat}, {lon})")
        elev = pd.to_numeric(row[elev_col], errors="coerce") if elev_col else np.nan
        flags = {attr: _flag(row.get(col, "")) for attr, col in VEGETATION_FLAG_COLUMNS.items()}
        out[site] = SiteMeta(
            site=site, lat=lat, lon=lon, elev=float(elev) if pd.notna(elev) else float("nan"),
            classification=str(row.get("SITE_CLASSIFICATION", "")), igbp=str(row.get("IGBP", "")),
            koppen=str(row.get(_first(cols, ("KOPPEN", "CLIMATE_KOEPPEN")) or "KOPPEN", "")),
            **flags,
        )
    return out


@dataclass(frozen=True)
class SiteSources:
    """Where a FLUXNET-CH4 source keeps its metadata and daily rows."""

    meta_path: Path
    daily_paths: dict[str, Path]  # per-tower release files (empty for the combined format)
    combined_path: Path | None = None


def find_site_sources(src: str | Path) -> SiteSources:
    """Detect the source format in ``src`` (or ``src/FLUXNET-CH4``)."""
    src = Path(src)
    if not src.is_dir():
        raise XmwInputError(f"{src}: not a directory")
    layout.refuse_unfinished_world(src)
    folder = src / layout.FLUX_DIR if (src / layout.FLUX_DIR).is_dir() else src
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise XmwInputError(f"{folder}: directory is empty")
    daily = {m.group("site"): p for p in files if (m := DAILY_FILE_RE.fullmatch(p.name))}
    metas = sorted(folder.glob(META_GLOB))
    combined = folder / layout.SITE_DAILY_FILE
    if daily:
        meta = metas[-1] if metas else folder / layout.SITE_META_FILE
        if not meta.is_file():
            raise XmwInputError(f"{folder}: no site metadata file ({META_GLOB} or {layout.SITE_META_FILE})")
        return SiteSources(meta_path=meta, daily_paths=daily)
    if combined.is_file():
        meta = folder / layout.SITE_META_FILE
        if not meta.is_file():
            meta = metas[-1] if metas else meta
        if not meta.is_file():
            raise XmwInputError(f"{meta}: file not found (site metadata for {combined.name})")
        return SiteSources(meta_path=meta, daily_paths={}, combined_path=combined)
    raise XmwInputError(f"{folder}: no FLUXNET-CH4 daily files (FLX_<SITE>_FLUXNET-CH4_DD_*.csv or {layout.SITE_DAILY_FILE})")


def _clean(df: pd.DataFrame, path: Path, columns: list[str]) -> pd.DataFrame:
    """Numeric columns with every missing marker as NaN; a non-numeric value is an input error."""
    out = {}
    for col in columns:
        if col not in df.columns:
            continue
        values = df[col]
        if not pd.api.types.is_numeric_dtype(values):
            num = pd.to_numeric(values, errors="coerce")
            bad = values[num.isna() & values.notna() & (values.astype(str).str.strip() != "")]
            if len(bad):
                raise XmwInputError(f"{path}: column {col} has a non-numeric value {bad.iloc[0]!r} "
                                    f"(line {bad.index[0] + 2})")
            values = num
        arr = np.array(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        arr[(arr == MISSING_VALUE) | ~np.isfinite(arr) | (np.abs(arr) > HUGE)] = np.nan
        out[col] = arr
    return pd.DataFrame(out, index=df.index)


def parse_dates(df: pd.DataFrame, path: Path) -> pd.DatetimeIndex:
    """The date column (TIMESTAMP YYYYMMDD, or ISO dates); an unreadable date names the file and line."""
    col = _first(df.columns, _DATE_COLUMNS)
    if col is None:
        raise XmwInputError(f"{path}: no date column (expected TIMESTAMP as YYYYMMDD)")
    raw = df[col].astype(str).str.strip().str.replace(r"\.0$", "", regex=True)
    # The first row sets the format, and every row must have it whole: strptime would read a YYYYMMDD cut to
    # "201612" as 2016-01-02.
    fmt = "%Y%m%d" if len(raw) and re.fullmatch(r"\d{8}", raw.iloc[0]) else None
    dates = pd.to_datetime(raw, format=fmt, errors="coerce")
    if fmt is not None:
        dates = dates.where(raw.str.fullmatch(r"\d{8}"))
    if dates.isna().any():
        i = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise XmwInputError(f"{path}: column {col} has an unreadable date {raw.iloc[i]!r} (line {i + 2})")
    return pd.DatetimeIndex(dates)


@dataclass
class SiteYears:
    """One tower's cleaned columns on 365-day years: ``columns[name]`` is ``(n_years, 365)``."""

    site: str
    path: Path
    years: np.ndarray
    columns: dict[str, np.ndarray]

    def has(self, column: str) -> bool:
        return column in self.columns


def to_site_years(site: str, df: pd.DataFrame, path: Path, columns: list[str]) -> SiteYears:
    """Clean one tower's daily rows and place them on 365-day years (Feb 29 dropped; duplicate dates rejected)."""
    dates = parse_dates(df, path)
    dup = dates.duplicated()
    if dup.any():
        raise XmwInputError(f"{path}: duplicated date {dates[dup][0].date()} for site {site}")
    clean = _clean(df, path, columns)
    keep = ~((dates.month == 2) & (dates.day == 29))
    dates, clean = dates[keep], clean[np.asarray(keep)]
    month0 = dates.month.to_numpy() - 1
    doy = np.concatenate([[0], np.cumsum(DAYS_IN_MONTH)[:-1]])[month0] + dates.day.to_numpy() - 1
    years, yi = np.unique(dates.year.to_numpy(), return_inverse=True)
    out = {}
    for col in clean.columns:
        arr = np.full((len(years), DAYS_PER_YEAR), np.nan, dtype=np.float64)
        arr[yi, doy] = clean[col].to_numpy()
        out[col] = arr
    return SiteYears(site=site, path=path, years=years.astype(np.int64), columns=out)


def iter_site_years(sources: SiteSources, columns: list[str]) -> Iterator[SiteYears]:
    """Each tower's :class:`SiteYears`, one tower in memory at a time for the per-tower release."""
    wanted = set(columns) | set(_DATE_COLUMNS) | set(_SITE_COLUMNS)
    for site, path in sorted(sources.daily_paths.items()):
        df = read_tower_csv(path, wanted)
        yield to_site_years(site, df, path, columns)
    if sources.combined_path is not None:
        path = sources.combined_path
        df = read_tower_csv(path, wanted)
        site_col = _first(df.columns, _SITE_COLUMNS)
        if site_col is None:
            raise XmwInputError(f"{path}: no Site column")
        # X-MethaneWet writes ids as ``SITE_ID.replace('-', '.')`` (``US.Atq``); FLUXNET ids always use a dash.
        ids = df[site_col].astype(str).str.strip().str.replace(".", "-", regex=False)
        for site, group in df.groupby(ids, sort=True):
            yield to_site_years(str(site), group.reset_index(drop=True), path, columns)


def check_complete_csv(path: str | Path) -> None:
    """Refuse a daily CSV whose end was cut off (an interrupted download or copy), naming the file and line.

    pandas reads such a file without complaint: a last row cut mid-value keeps the half number, one cut mid-row
    fills the missing columns with NaN. Every writer of these files ends each row with a newline, so a missing
    final newline, or a last row with fewer fields than the header, means the file is incomplete."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read()
    text = data.decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise XmwInputError(f"{path}: file is empty")
    lines = text.split("\n")
    if lines[-1] != "":
        raise XmwInputError(f"{path}: line {len(lines)}: no final newline (file cut short?)")
    last_no = len(lines) - 1
    header, last = next(csv.reader([lines[0].rstrip("\r")])), next(csv.reader([lines[-2].rstrip("\r")]), [])
    if last_no > 1 and len(last) != len(header):
        raise XmwInputError(f"{path}: line {last_no}: {len(last)} fields, the header has {len(header)} "
                            "(file cut short?)")


def read_tower_csv(path: str | Path, wanted: set[str] | None = None) -> pd.DataFrame:
    """One FLUXNET-CH4 daily CSV (optionally only the ``wanted`` columns), refused when truncated."""
    path = Path(path)
    check_complete_csv(path)
    usecols = None if wanted is None else (lambda c: c in wanted)
    try:
        return pd.read_csv(path, usecols=usecols, encoding="utf-8-sig", low_memory=False)
    except Exception as exc:
        raise XmwInputError(f"{path}: cannot be read as CSV ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc


# --- feature rules -------------------------------------------------------------------------------------------
def saturation_vapour_pressure_hpa(ta_c: np.ndarray) -> np.ndarray:
    """Magnus formula (Alduchov & Eskridge 1996) over water, hPa."""
    ta_c = np.asarray(ta_c, dtype=np.float64)
    return 6.1094 * np.exp(17.625 * ta_c / (ta_c + 243.04))


def vapour_pressure_hpa(ta_c: np.ndarray, vpd_hpa: np.ndarray) -> np.ndarray:
    """Actual vapour pressure e = e_s(T) − VPD, clipped at 0 (hPa)."""
    return np.maximum(saturation_vapour_pressure_hpa(ta_c) - np.asarray(vpd_hpa, dtype=np.float64), 0.0)


def target_days(sy: SiteYears, choice: str) -> np.ndarray:
    """``(n_years, 365)`` target in mg CH4 m-2 d-1 (NaN where not observed)."""
    if choice not in TARGET_CHOICES:
        raise XmwInputError(f"--target {choice}: expected one of {', '.join(TARGET_CHOICES)}")
    need = "FCH4" if choice == "FCH4" else "FCH4_F"
    if not sy.has(need):
        raise XmwInputError(f"{sy.path}: column {need} not found (site {sy.site})")
    nmol = sy.columns[need].copy()
    if choice == "xmw-fill" and sy.has("FCH4_F_ANNOPTLM"):
        nmol = np.where(np.isnan(nmol), sy.columns["FCH4_F_ANNOPTLM"], nmol)
    return nmol * NMOL_PER_S_TO_MG_PER_DAY


def gpp_days(sy: SiteYears) -> tuple[np.ndarray | None, np.ndarray]:
    """A tower's daily GPP (µmol CO2 m-2 s-1, ``(n, 365)``): GPP_NT with its missing days taken from GPP_DT where
    that is present (scaled as ``GPP_FALLBACK_COLUMN`` says), and how many days of each year came from GPP_DT
    (``(n,)``); ``None`` for the GPP when the tower has neither column."""
    nt = sy.columns.get(GPP_COLUMN)
    dt = sy.columns.get(GPP_FALLBACK_COLUMN)
    none = np.zeros(len(sy.years), dtype=np.int64)
    if dt is None:
        return nt, none
    if nt is None:
        return dt, np.isfinite(dt).sum(axis=1)
    both = np.isfinite(nt) & np.isfinite(dt)
    scale = 1.0
    if both.sum() >= MIN_GPP_OVERLAP_DAYS:
        ratio = nt[both].sum() / dt[both].sum()
        scale = ratio if np.isfinite(ratio) and ratio > 0 else 1.0
    take = ~np.isfinite(nt) & np.isfinite(dt)
    return np.where(take, scale * dt, nt), take.sum(axis=1)


def npp_from_gpp(gpp_umol: np.ndarray) -> np.ndarray:
    """``(n, 365)`` daily GPP (µmol CO2 m-2 s-1) → ``(n, 12)`` NPP g C m-2 month-1 (NaN: too few GPP days)."""
    valid = np.isfinite(gpp_umol)
    sums = np.zeros((gpp_umol.shape[0], 12))
    counts = np.zeros((gpp_umol.shape[0], 12))
    np.add.at(sums.T, MONTH_OF_DAY, np.where(valid, gpp_umol, 0.0).T)
    np.add.at(counts.T, MONTH_OF_DAY, valid.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.maximum(sums / counts, 0.0)
    npp = NPP_PER_GPP * mean * UMOL_PER_S_TO_GC_PER_DAY * DAYS_IN_MONTH
    return np.where(counts >= MIN_GPP_DAYS, npp, np.nan)


def fill_short_gaps(days: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill runs of at most ``max_gap`` missing days by linear interpolation (held flat at a year's edges)."""
    out = days.copy()
    if max_gap <= 0:
        return out
    x = np.arange(days.shape[-1])
    for row in out.reshape(-1, days.shape[-1]):
        miss = np.isnan(row)
        if not miss.any() or miss.all():
            continue
        edges = np.diff(np.concatenate([[0], miss.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        short = np.zeros_like(miss)
        for s, e in zip(starts, ends, strict=True):
            if e - s <= max_gap:
                short[s:e] = True
        if short.any():
            row[short] = np.interp(x[short], x[~miss], row[~miss])
    return out
