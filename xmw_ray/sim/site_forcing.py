"""``xmw simulate sites``: the simulator at real towers' own daily forcing (the site-level simulation source).

For each tower of a FLUXNET-CH4 folder (the release's per-site files, or X-MethaneWet's combined file) the process
model runs with the simulator's parameters on TA_F, P_F, SW_IN_F and VPD_F, and the result is written as a site
file of the same format: FCH4 = FCH4_F = FCH4_F_ANNOPTLM = the simulated flux (nmol m⁻² s⁻¹), the forcing columns
copied, so the same reader and ``prepare sites`` path read it. This is what TEM-MDM would provide at the tower,
the source that sim-to-real transfer pretrains on. Last it writes ``xmw-simulated-sites.json`` (tool, version,
forcing folder, SHA-256 of each file written): ``prepare sites --sim-sites`` reads only a folder carrying it, so
observed flux never enters as the simulated driver (``tower_features.check_sim_marker``).

Days missing a forcing variable are bridged by linear interpolation to keep the model state going, and get no
flux (-9999): every site-day with complete forcing gets one. A tower's wetland comes from its metadata
(SITE_CLASSIFICATION and TREE → wetland type; pH, specific yield and fAPAR from ``CLASS_PROPERTIES``); towers
that are not wetlands are simulated as an open bog/fen, the intensity TEM-MDM reports per wetland area.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xmw_ray.data import layout
from xmw_ray.data.contract import NMOL_PER_S_TO_MG_PER_DAY
from xmw_ray.data.fluxnet import (
    HUGE,
    MISSING_VALUE,
    SiteMeta,
    find_site_sources,
    parse_dates,
    read_site_metadata,
    read_tower_csv,
)
from xmw_ray.data.tower_features import SIM_MARKER, sim_marker
from xmw_ray.errors import XmwInputError
from xmw_ray.sim.flx_files import SITE_COLUMNS, write_meta, write_site_file
from xmw_ray.sim.process import SIMULATOR, CellProps, ProcessParams, cell_props
from xmw_ray.sim.site_model import run_site, site_forcing
from xmw_ray.storage import write_text_atomic

FORCING_COLUMNS = ("TA_F", "P_F", "SW_IN_F", "VPD_F")
COPIED_COLUMNS = tuple(c for c in SITE_COLUMNS if c not in ("TIMESTAMP", "FCH4", "FCH4_F", "FCH4_F_ANNOPTLM"))
#: SITE_CLASSIFICATION (lower case) → (wetland type without trees, soil pH, specific yield, fAPAR).
CLASS_PROPERTIES = {
    "bog": (2, 4.5, 0.40, 0.6),
    "fen": (2, 6.0, 0.35, 0.7),
    "wet tundra": (2, 5.5, 0.35, 0.45),
    "swamp": (4, 6.0, 0.25, 0.85),
    "marsh": (4, 7.0, 0.25, 0.8),
    "salt marsh": (4, 7.0, 0.25, 0.8),
    "mangrove": (4, 7.0, 0.25, 0.85),
}
DEFAULT_PROPERTIES = (2, 6.0, 0.20, 0.7)
FOREST_FAPAR = 0.8


def site_props(meta: SiteMeta) -> CellProps:
    """Process properties of a tower from its metadata (a tree-covered bog or swamp is the forested type)."""
    wtype, ph, sy, fapar = CLASS_PROPERTIES.get(meta.classification.strip().lower(), DEFAULT_PROPERTIES)
    if meta.tree == 1 and wtype in (2, 4):
        wtype, fapar = wtype - 1, FOREST_FAPAR
    return cell_props(np.array([wtype]), np.array([ph]), np.array([sy]), np.array([fapar]))


def _numeric(values: pd.Series) -> np.ndarray:
    arr = np.array(pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))
    arr[(arr == MISSING_VALUE) | ~np.isfinite(arr) | (np.abs(arr) > HUGE)] = np.nan
    return arr


@dataclass(frozen=True)
class SiteDaily:
    """A tower's rows on a complete daily calendar (real dates, leap days kept); absent values NaN."""

    site: str
    dates: np.ndarray
    columns: dict[str, np.ndarray]


def parse_site_rows(site: str, df: pd.DataFrame, path: Path, extra: tuple[str, ...] = ()) -> SiteDaily:
    """TIMESTAMP (YYYYMMDD or ISO date) and the forcing, copied and ``extra`` columns, cleaned and placed on every
    day of the record."""
    if "TIMESTAMP" not in df.columns:
        raise XmwInputError(f"{path}: no TIMESTAMP column (site {site})")
    dates = parse_dates(df[["TIMESTAMP"]], path)
    days = dates.to_numpy().astype("datetime64[D]")
    if len(np.unique(days)) != len(days):
        raise XmwInputError(f"{path}: duplicated dates (site {site})")
    missing = [c for c in FORCING_COLUMNS if c not in df.columns]
    if missing:
        raise XmwInputError(f"{path}: forcing column {missing[0]} not found (site {site})")
    full = np.arange(days.min(), days.max() + 1, dtype="datetime64[D]")
    pos = (days - full[0]).astype(np.int64)
    columns = {}
    for col in (*FORCING_COLUMNS, *COPIED_COLUMNS, *extra):
        if col in df.columns:
            arr = np.full(len(full), np.nan)
            arr[pos] = _numeric(df[col])
            columns[col] = arr
    return SiteDaily(site=site, dates=full, columns=columns)


def _iter_sites(src: Path, metas: dict[str, SiteMeta]):
    sources = find_site_sources(src)
    for site, path in sorted(sources.daily_paths.items()):
        yield parse_site_rows(site, read_tower_csv(path), path), path
    if sources.combined_path is not None:
        path = sources.combined_path
        df = read_tower_csv(path)
        if "Site" not in df.columns:
            raise XmwInputError(f"{path}: no Site column")
        for name, group in df.groupby(df["Site"].astype(str).str.strip(), sort=True):
            site = name if name in metas else name.replace(".", "-")  # X-MethaneWet writes US.Atq for US-Atq
            yield parse_site_rows(site, group.reset_index(drop=True), path), path


def simulate_site(daily: SiteDaily, props: CellProps, params: ProcessParams = SIMULATOR) -> np.ndarray:
    """Simulated flux (nmol m⁻² s⁻¹) for each day; NaN on days without complete forcing."""
    forcing = np.stack([daily.columns[c] for c in FORCING_COLUMNS])
    ok = np.all(np.isfinite(forcing), axis=0)
    if not ok.any():
        return np.full(len(daily.dates), np.nan)
    x = np.arange(len(daily.dates))
    bridged = [np.interp(x, x[ok], row[ok]) for row in forcing]
    years = daily.dates.astype("datetime64[Y]").astype(np.int64) + 1970
    run = run_site(site_forcing(years, *bridged), props, params)
    return np.where(ok, run.ch4 / NMOL_PER_S_TO_MG_PER_DAY, np.nan)


def simulate_sites(forcing_dir: str | Path, out: str | Path, log: Callable[[str], None] = print) -> dict[str, int]:
    """Simulate every tower in ``forcing_dir``; write site files and metadata to ``out``; ``site → flux days``."""
    src = Path(forcing_dir)
    sources = find_site_sources(src)
    metas = read_site_metadata(sources.meta_path)
    out = Path(out)
    out_dir = out / layout.FLUX_DIR if out.name != layout.FLUX_DIR else out
    check_sites_out(out_dir, sources.meta_path.parent)
    done: dict[str, int] = {}
    meta_rows = []
    written: list[Path] = []
    for daily, path in _iter_sites(src, metas):
        if daily.site not in metas:
            raise XmwInputError(f"{sources.meta_path}: site {daily.site} is missing from the metadata (data in {path.name})")
        meta = metas[daily.site]
        flux = simulate_site(daily, site_props(meta))
        n_ok = int(np.isfinite(flux).sum())
        if n_ok == 0:
            log(f"{daily.site}: no day with complete forcing ({', '.join(FORCING_COLUMNS)}), skipped")
            continue
        columns = {"FCH4": flux, "FCH4_F": flux, "FCH4_F_ANNOPTLM": flux, **daily.columns}
        if not written:  # before the first file (bad input found earlier leaves nothing behind)
            _claim(out_dir, src)
        written.append(write_site_file(out_dir, daily.site, daily.dates, columns))
        years = daily.dates.astype("datetime64[Y]").astype(np.int64) + 1970
        meta_rows.append({"SITE_ID": meta.site, "LAT": meta.lat, "LON": meta.lon,
                          "SITE_CLASSIFICATION": meta.classification, "IGBP": meta.igbp, "KOPPEN": meta.koppen,
                          "TREE": None if np.isnan(meta.tree) else int(meta.tree), "ORIGINAL_DATA_SOURCE": f"xmw simulate sites ({path.name})",
                          "YEAR_START": int(years.min()), "YEAR_END": int(years.max())})
        done[daily.site] = n_ok
        log(f"{daily.site}: {n_ok} simulated days")
    if not done:
        raise XmwInputError(f"{src}: no tower with complete forcing ({', '.join(FORCING_COLUMNS)})")
    stamp = sources.meta_path.stem.rsplit("_", 1)[-1]
    meta_path = write_meta(out_dir, meta_rows,
                           stamp if stamp.isdigit() else f"{max(r['YEAR_END'] for r in meta_rows)}1231000000000000")
    # written last: the marker that lets ``prepare sites --sim-sites`` read this folder (``check_sim_marker``)
    write_text_atomic(out_dir / SIM_MARKER, json.dumps(sim_marker(src, [*written, meta_path]), indent=1))
    (out_dir / SIM_PENDING).unlink(missing_ok=True)
    return done


def _claim(out_dir: Path, src: Path) -> None:
    """Ours from here on, also if interrupted (a rerun may write here again); the finished-marker goes, so a
    rerun's half-written folder never passes as finished."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / SIM_PENDING, json.dumps({"tool": "xmw simulate sites", "forcing": str(src.resolve())}))
    (out_dir / SIM_MARKER).unlink(missing_ok=True)


#: Written before the first simulated file and removed after the finished-marker (``SIM_MARKER``): a folder that
#: holds either is ours to write again.
SIM_PENDING = "xmw-simulated-sites.pending"


def check_sites_out(out_dir: Path, forcing_dir: Path) -> None:
    """Refuse an output folder that holds files ``simulate sites`` did not write: its files carry the release's
    own names (``FLX_<site>_FLUXNET-CH4_DD_…``, the metadata table), so writing into a folder of real tower files,
    e.g. the forcing folder itself, would replace the observations with simulations."""
    if out_dir.resolve() == forcing_dir.resolve():
        raise XmwInputError(f"{out_dir}: is the forcing folder itself; simulated files would replace its towers' "
                            "files (same names): choose another --out")
    if not out_dir.is_dir() or (out_dir / SIM_MARKER).is_file() or (out_dir / SIM_PENDING).is_file():
        return
    foreign = sorted(p.name for p in out_dir.iterdir())
    if foreign:
        raise XmwInputError(f"{out_dir}: holds files that xmw simulate sites did not write ({foreign[0]}"
                            f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}; no {SIM_MARKER}): "
                            "choose a new or empty folder, real tower files are never overwritten")
