"""Writers of FLUXNET-CH4 files: the release's per-site daily files and metadata, and X-MethaneWet's combined
``FLUXNET_T1_DD.csv`` / ``FLUXNET_CH4_2024.csv``.

Formats follow the real files: ``FLX_<SITE>_FLUXNET-CH4_DD_<y0>-<y1>_1-1.csv`` with TIMESTAMP as YYYYMMDD and
-9999 for missing values; ``FLX_AA-Flx_CH4-META_<stamp>.csv`` with a UTF-8 byte-order mark and the release's 22
columns. X-MethaneWet's combined daily file names sites with dots (``US.Atq``: its code maps ``SITE_ID`` with
``replace('-', '.')``), has ISO dates and leaves missing values empty; its last five columns are
``TA_F, VPD_F, P_F, TS_1, WTD`` because the published code slices TA_F/VPD_F/P_F by position.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from xmw_ray.data import layout
from xmw_ray.storage import file_aside

MISSING = -9999
SITE_COLUMNS: tuple[str, ...] = ("TIMESTAMP", "FCH4", "FCH4_F", "FCH4_F_ANNOPTLM", "TA_F", "P_F", "SW_IN_F", "VPD_F",
                                 "PA_F", "WS_F", "LE_F", "GPP_NT", "TS_1", "WTD")
META_COLUMNS: tuple[str, ...] = (
    "SITE_ID", "SITE_NAME", "SITE_PERSONNEL", "COUNTRY", "LAT", "LON", "SITE_CLASSIFICATION", "UPLAND_CLASS", "IGBP",
    "KOPPEN", "ORIGINAL_DATA_SOURCE", "FLUXNET-CH4_DATA_POLICY", "YEAR_START", "YEAR_END", "UTC_OFFSET",
    "SOIL_TEMP_PROBE_DEPTHS", "MOSS_BROWN", "MOSS_SPHAGNUM", "AERENCHYMATOUS", "ERI_SHRUB", "TREE", "DOM_VEG",
)
COMBINED_COLUMNS: tuple[str, ...] = ("Site", "TIMESTAMP", "FCH4", "FCH4_F", "FCH4_F_ANNOPTLM", "SW_IN_F", "PA_F",
                                     "WS_F", "LE_F", "GPP_NT", "TA_F", "VPD_F", "P_F", "TS_1", "WTD")
SITE_INFO_COLUMNS: tuple[str, ...] = ("SITE_ID", "SITE_NAME", "LOCATION_LAT", "LOCATION_LONG", "LOCATION_ELEV", "IGBP",
                                      "MAT", "MAP")


def site_file_name(site: str, y0: int, y1: int) -> str:
    return f"FLX_{site}_FLUXNET-CH4_DD_{y0}-{y1}_1-1.csv"


def meta_file_name(stamp: str) -> str:
    return f"FLX_AA-Flx_CH4-META_{stamp}.csv"


def write_site_file(directory: Path, site: str, dates: np.ndarray, columns: dict[str, np.ndarray]) -> Path:
    """One daily site file; ``dates`` are ``datetime64[D]``; NaN (and absent columns) become -9999."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    years = dates.astype("datetime64[Y]").astype(int) + 1970
    frame = pd.DataFrame({"TIMESTAMP": pd.DatetimeIndex(dates).strftime("%Y%m%d").astype(np.int64)})
    for col in SITE_COLUMNS[1:]:
        frame[col] = np.asarray(columns[col], dtype=np.float64) if col in columns else np.nan
    path = Path(directory) / site_file_name(site, int(years.min()), int(years.max()))
    with file_aside(path) as tmp:
        frame.to_csv(tmp, index=False, na_rep=str(MISSING), float_format="%.6g", lineterminator="\n")
    return path


def write_meta(directory: Path, rows: Sequence[dict], stamp: str) -> Path:
    """The metadata table (UTF-8 BOM header, the release's columns; absent fields empty)."""
    path = Path(directory) / meta_file_name(stamp)
    with file_aside(path) as tmp, open(tmp, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(META_COLUMNS)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in META_COLUMNS])
    return path


def write_combined(root: Path, frames: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray]]],
                   info_rows: Sequence[dict]) -> tuple[Path, Path]:
    """X-MethaneWet's ``FLUXNET-CH4/FLUXNET_T1_DD.csv`` and ``FLUXNET-CH4/FLUXNET_CH4_2024.csv``."""
    flux_dir = Path(root) / layout.FLUX_DIR
    parts = []
    for site, dates, columns in frames:
        frame = pd.DataFrame({"Site": site.replace("-", "."),
                              "TIMESTAMP": pd.DatetimeIndex(np.asarray(dates, dtype="datetime64[D]")).strftime("%Y-%m-%d")})
        for col in COMBINED_COLUMNS[2:]:
            frame[col] = np.asarray(columns[col], dtype=np.float64) if col in columns else np.nan
        parts.append(frame)
    daily = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(COMBINED_COLUMNS))
    daily_path = flux_dir / layout.SITE_DAILY_FILE
    with file_aside(daily_path) as tmp:
        daily.to_csv(tmp, index=False, na_rep="", float_format="%.6g", lineterminator="\n")
    info = pd.DataFrame([{c: row.get(c) for c in SITE_INFO_COLUMNS} for row in info_rows], columns=list(SITE_INFO_COLUMNS))
    info_path = flux_dir / layout.SITE_META_FILE
    with file_aside(info_path) as tmp:
        info.to_csv(tmp, index=False, lineterminator="\n")
    return daily_path, info_path
