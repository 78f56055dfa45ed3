"""Pseudo-observation towers: the built-in world as eddy-covariance towers would see it.

A tower stands on land (a random one of the cell's land points in Earth's mask, ``earth.land_points``) in a
wetland cell (cells drawn in proportion to their wetland area) and observes a few whole calendar years (1–6,
random start), like the real network. It sees:

- drivers: the cell's weather plus small local noise — air temperature + N(0, 0.5²) site offset + N(0, 0.5²)
  daily, precipitation × lognormal(0, 0.25), shortwave × U-clipped N(1, 0.05²) within ±15 %, vapour pressure
  × N(1, 0.05²) (VPD never negative); Feb 29 of leap years is the mean of Feb 28 and Mar 1;
- methane from the "true world": the same process model with ``TRUE_WORLD`` parameters (Q10 3 instead of 2,
  water-table e-folding depth 150 mm instead of 250 mm, substrate lag 60 d instead of 30 d), times a site random
  effect ``exp(N(0, 0.3²))`` (written to ``truth.json``);
- measurement noise: N(0, (0.15 |F| + 2 mg m⁻² d⁻¹)²) on each observed day;
- FLUXNET-like gaps: 60 % of towers shut down through winter (centred 15-day mean air temperature below −2 °C),
  ~3 multi-day gaps a year (1 + geometric(0.12) days), and 10 % single-day dropouts;
- gap-filling as in the release: ``FCH4_F_ANNOPTLM`` fills every gap and ``FCH4_F`` gaps up to 60 days, here with
  a look-up table of the tower's own observed flux by 2 °C bins of 7-day mean air temperature (nearest filled bin
  when a bin is empty).

Other columns: TS_1 and WTD are the true world's soil temperature and water table (m, positive above the surface)
with small noise, LE_F its evapotranspiration as latent heat, GPP_NT twice its NPP (as a daily mean in
µmol CO2 m⁻² s⁻¹, the unit the reader assumes for the release), PA_F the barometric pressure of
the site's elevation, WS_F a gamma-distributed wind (mean 3 m s⁻¹, used by no model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmw_ray.data import layout
from xmw_ray.data.contract import NMOL_PER_S_TO_MG_PER_DAY
from xmw_ray.data.fluxnet import UMOL_PER_S_TO_GC_PER_DAY
from xmw_ray.data.fluxnet import saturation_vapour_pressure_hpa as saturation_vapour_pressure
from xmw_ray.sim.earth import land_points
from xmw_ray.sim.fields import stream
from xmw_ray.sim.flx_files import write_combined, write_meta, write_site_file
from xmw_ray.sim.process import TRUE_WORLD
from xmw_ray.sim.site_model import run_site, site_forcing
from xmw_ray.sim.statics import StaticWorld
from xmw_ray.sim.weather import Weather

SITE_PREFIX = "XW-"
MAX_SITES = 999
MAX_TOWER_YEARS = 6
SITE_EFFECT_SD = 0.3
NOISE_REL, NOISE_ABS_MG = 0.15, 2.0
WINTER_SHUTDOWN_SHARE, WINTER_TA = 0.6, -2.0
GAPS_PER_YEAR, GAP_P, DROPOUT = 3.0, 0.12, 0.10
MAX_SHORT_GAP = 60
LEAP_INDEX = 59  # Feb 29 sits before no-leap day index 59 (Mar 1)


@dataclass(frozen=True)
class TowerPlan:
    site_ids: list[str]
    cell: np.ndarray  # index into the world's land cells
    lat: np.ndarray
    lon: np.ndarray
    elev: np.ndarray
    start: np.ndarray
    end: np.ndarray
    site_effect: np.ndarray

    def __len__(self) -> int:
        return len(self.site_ids)


def plan_towers(world: StaticWorld, n: int, years: tuple[int, int], seed: int) -> TowerPlan:
    """Place ``n`` towers at distinct wetland cells and draw their observation years and random effects."""
    rng = stream(seed, "towers")
    wet_area = world.wetland_fraction * world.area
    candidates = np.flatnonzero(wet_area > 0)
    if n > len(candidates):
        raise ValueError(f"{n} towers requested but the world has only {len(candidates)} wetland cells")
    cell = np.sort(rng.choice(candidates, size=n, replace=False, p=wet_area[candidates] / wet_area[candidates].sum()))
    lat, lon = np.empty(n), np.empty(n)
    for i, c in enumerate(cell):
        lats, lons = land_points(world.res, int(world.ilat[c]), int(world.ilon[c]))
        k = rng.integers(len(lats))
        lat[i], lon[i] = round(float(lats[k]), 5), round(float(lons[k]), 5)
    span = years[1] - years[0] + 1
    length = rng.integers(1, min(MAX_TOWER_YEARS, span) + 1, size=n)
    start = years[0] + (rng.random(n) * (span - length + 1)).astype(np.int64)
    return TowerPlan(
        site_ids=[f"{SITE_PREFIX}{i + 1:03d}" for i in range(n)], cell=cell, lat=lat, lon=lon,
        elev=np.round(np.maximum(world.elev[cell] + rng.normal(0.0, 20.0, n), 0.0), 1),
        start=start, end=start + length - 1, site_effect=np.exp(rng.normal(0.0, SITE_EFFECT_SD, n)),
    )


@dataclass
class TowerRecorder:
    """Keeps the towers' cell weather (365 × 4 per tower-year) while the world streams through the years."""

    plan: TowerPlan
    weather: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def collect(self, year: int, weather: Weather) -> None:
        active = np.flatnonzero((self.plan.start <= year) & (self.plan.end >= year))
        if len(active) == 0:
            return
        cells = self.plan.cell[active]
        block = np.stack([weather.tair[:, cells], weather.prec[:, cells], weather.solr[:, cells],
                          weather.vapr[:, cells]], axis=-1)  # (365, k, 4)
        for j, i in enumerate(active):
            self.weather[(int(i), year)] = block[:, j, :].copy()


def calendar(year: int) -> np.ndarray:
    """All real dates of ``year`` (366 in leap years)."""
    return np.arange(np.datetime64(f"{year}-01-01"), np.datetime64(f"{year + 1}-01-01"), dtype="datetime64[D]")


def with_leap_day(days365: np.ndarray, year: int) -> np.ndarray:
    """A no-leap ``(365, ...)`` series on the real calendar (Feb 29 = mean of Feb 28 and Mar 1)."""
    if len(calendar(year)) == 365:
        return days365
    leap = 0.5 * (days365[LEAP_INDEX - 1] + days365[LEAP_INDEX])
    return np.concatenate([days365[:LEAP_INDEX], leap[None], days365[LEAP_INDEX:]])


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean (edges use the available days)."""
    kernel = np.ones(window)
    return np.convolve(x, kernel, "same") / np.convolve(np.ones_like(x), kernel, "same")


def lut_gap_fill(flux: np.ndarray, ta: np.ndarray) -> np.ndarray:
    """Fill NaN days with the mean observed flux of the same 2 °C bin of 7-day mean air temperature."""
    out = flux.copy()
    obs = np.isfinite(flux)
    if obs.all() or not obs.any():
        return out
    bins = np.floor(running_mean(ta, 7) / 2.0).astype(np.int64)
    lo = bins.min()
    b = bins - lo
    counts = np.bincount(b[obs], minlength=b.max() + 1)
    sums = np.bincount(b[obs], weights=flux[obs], minlength=b.max() + 1)
    filled = np.flatnonzero(counts > 0)
    nearest = filled[np.abs(np.arange(len(counts))[:, None] - filled[None, :]).argmin(axis=1)]
    means = sums[nearest] / counts[nearest]
    out[~obs] = means[b[~obs]]
    return out


def _short_gaps(missing: np.ndarray, max_len: int) -> np.ndarray:
    """Mask of missing days that belong to runs of at most ``max_len`` days."""
    out = np.zeros_like(missing)
    idx = np.flatnonzero(np.diff(np.concatenate([[0], missing.astype(np.int8), [0]])))
    for a, b in zip(idx[::2], idx[1::2], strict=True):
        if b - a <= max_len:
            out[a:b] = True
    return out


def observation_gaps(rng: np.random.Generator, ta: np.ndarray, n_years: int) -> np.ndarray:
    """Missing-day mask of one tower record (winter shutdown, multi-day gaps, dropouts)."""
    n = len(ta)
    missing = rng.random(n) < DROPOUT
    if rng.random() < WINTER_SHUTDOWN_SHARE:
        missing |= running_mean(ta, 15) < WINTER_TA
    for _ in range(rng.poisson(GAPS_PER_YEAR * n_years)):
        start = rng.integers(0, n)
        missing[start:start + 1 + rng.geometric(GAP_P)] = True
    return missing


def _classification(world: StaticWorld, cell: int) -> tuple[str, int]:
    """FLUXNET-CH4 SITE_CLASSIFICATION and TREE of a tower's wetland."""
    wtype = int(world.wet_class[cell])
    if wtype == 1:
        return "Bog", 1
    if wtype == 2:
        if world.maps["climatetype"][cell] == 5:
            return "Wet tundra", 0
        return ("Bog" if world.maps["phh2o"][cell] < 5.5 else "Fen"), 0
    if wtype == 3:
        return "Swamp", 1
    if wtype == 4:
        return "Marsh", 0
    return "Swamp", 0


def koppen(world: StaticWorld, cell: int) -> str:
    """A Köppen code consistent with the cell's generated climate."""
    c = world.clim
    group = int(world.maps["climatetype"][cell])
    t, warm, p = c.t_mean[cell], c.warmest[cell], c.p_ann[cell]
    if group == 1:
        return "Af" if p > 1800 else "Aw"
    if group == 2:
        return ("BW" if p < 10 * t + 70 else "BS") + ("h" if t >= 18 else "k")
    if group == 3:
        return "Cfa" if warm >= 22 else "Cfb"
    if group == 4:
        return "Dfa" if warm >= 22 else ("Dfb" if t > 2 else "Dfc")
    return "ET" if warm >= 0 else "EF"


def _tower_record(world: StaticWorld, plan: TowerPlan, i: int, recorder: TowerRecorder, seed: int) -> tuple:
    """Dates and all written columns of tower ``i`` (fluxes in nmol m⁻² s⁻¹)."""
    rng = stream(seed, "tower", i)
    years = range(int(plan.start[i]), int(plan.end[i]) + 1)
    dates = np.concatenate([calendar(y) for y in years])
    cell_wx = np.concatenate([with_leap_day(recorder.weather[(i, y)], y) for y in years]).astype(np.float64)
    year_of_day = dates.astype("datetime64[Y]").astype(int) + 1970
    n = len(dates)
    ta = cell_wx[:, 0] + rng.normal(0.0, 0.5) + rng.normal(0.0, 0.5, n)
    p = cell_wx[:, 1] * rng.lognormal(0.0, 0.25, n)
    sw = cell_wx[:, 2] * np.clip(rng.normal(1.0, 0.05, n), 0.85, 1.15)
    vpd = np.maximum(saturation_vapour_pressure(ta) - cell_wx[:, 3] * rng.normal(1.0, 0.05, n), 0.0)
    ta, p, sw, vpd = (np.round(x, 4) for x in (ta, p, sw, vpd))  # what the file holds is what the truth saw
    cell = int(plan.cell[i])
    props = world.props(np.array([cell]), site_effect=np.array([plan.site_effect[i]]))
    truth = run_site(site_forcing(year_of_day, ta, p, sw, vpd), props, TRUE_WORLD)
    true_flux = truth.ch4.astype(np.float64)
    observed = true_flux + rng.normal(0.0, 1.0, n) * (NOISE_REL * np.abs(true_flux) + NOISE_ABS_MG)
    missing = observation_gaps(rng, ta, len(years))
    fch4 = np.where(missing, np.nan, observed) / NMOL_PER_S_TO_MG_PER_DAY
    ann = lut_gap_fill(fch4, ta)
    fch4_f = np.where(missing & ~_short_gaps(missing, MAX_SHORT_GAP), np.nan, ann)
    columns = {
        "FCH4": fch4, "FCH4_F": fch4_f, "FCH4_F_ANNOPTLM": ann, "TA_F": ta, "P_F": p, "SW_IN_F": sw, "VPD_F": vpd,
        "PA_F": 101.325 * np.exp(-plan.elev[i] / 8434.0) + rng.normal(0.0, 0.2, n),
        "WS_F": rng.gamma(2.0, 1.5, n), "LE_F": truth.et * (2.45e6 / 86400.0), "GPP_NT": 2.0 * truth.npp / UMOL_PER_S_TO_GC_PER_DAY,
        "TS_1": truth.soil_temp + rng.normal(0.0, 0.3, n), "WTD": truth.water_table / 1000.0 + rng.normal(0.0, 0.01, n),
    }
    return dates, columns


def _remove_stale(flux_dir: Path, keep: set[str]) -> None:
    """Drop simulator-written site and metadata files of an earlier run that this run does not rewrite."""
    pattern = re.compile(rf"FLX_{re.escape(SITE_PREFIX)}.*_FLUXNET-CH4_DD_.*\.csv|FLX_AA-Flx_CH4-META_\d+\.csv")
    if flux_dir.is_dir():
        for path in flux_dir.iterdir():
            if pattern.fullmatch(path.name) and path.name not in keep:
                path.unlink()


def write_towers(root: Path, world: StaticWorld, plan: TowerPlan, recorder: TowerRecorder, seed: int) -> dict:
    """Write every tower's site file, the metadata table and the combined files; returns the per-site truth."""
    flux_dir = Path(root) / layout.FLUX_DIR
    frames, meta_rows, info_rows, truth = [], [], [], {}
    written = set()
    for i, site in enumerate(plan.site_ids):
        dates, columns = _tower_record(world, plan, i, recorder, seed)
        written.add(write_site_file(flux_dir, site, dates, columns).name)
        frames.append((site, dates, columns))
        cell = int(plan.cell[i])
        cls, tree = _classification(world, cell)
        bog = cls == "Bog"
        meta_rows.append({
            "SITE_ID": site, "SITE_NAME": f"Simulated {cls.lower()} {i + 1}", "SITE_PERSONNEL": "xmw simulate",
            "COUNTRY": "Simulated world", "LAT": plan.lat[i], "LON": plan.lon[i], "SITE_CLASSIFICATION": cls,
            "IGBP": "WET", "KOPPEN": koppen(world, cell), "ORIGINAL_DATA_SOURCE": "xmw simulate",
            "FLUXNET-CH4_DATA_POLICY": "CCBY4.0", "YEAR_START": int(plan.start[i]), "YEAR_END": int(plan.end[i]),
            "UTC_OFFSET": int(np.round(plan.lon[i] / 15.0)), "SOIL_TEMP_PROBE_DEPTHS": "TS_1 = -0.05cm;",
            "MOSS_BROWN": 0, "MOSS_SPHAGNUM": int(bog), "AERENCHYMATOUS": int(not bog), "ERI_SHRUB": int(bog),
            "TREE": tree, "DOM_VEG": "tree" if tree else ("moss_sphagnum" if bog else "aerenchymatous"),
        })
        info_rows.append({
            "SITE_ID": site, "SITE_NAME": meta_rows[-1]["SITE_NAME"], "LOCATION_LAT": plan.lat[i],
            "LOCATION_LONG": plan.lon[i], "LOCATION_ELEV": plan.elev[i], "IGBP": "WET",
            "MAT": round(float(np.mean(columns["TA_F"])), 2),
            "MAP": round(float(np.sum(columns["P_F"]) / (plan.end[i] - plan.start[i] + 1)), 1),
        })
        truth[site] = {"site_effect": float(plan.site_effect[i]), "cell": [int(world.ilat[cell]), int(world.ilon[cell])],
                       "wetlandtype": int(world.wet_class[cell]), "years": [int(plan.start[i]), int(plan.end[i])]}
    stamp = f"{int(plan.end.max()) if len(plan) else 0:04d}1231000000{seed % 1_000_000:06d}"
    written.add(write_meta(flux_dir, meta_rows, stamp).name)
    write_combined(root, frames, info_rows)
    _remove_stale(flux_dir, written)
    return {"noise": {"relative": NOISE_REL, "absolute_mg_m2_d": NOISE_ABS_MG}, "site_effect_log_sd": SITE_EFFECT_SD,
            "sites": truth}
