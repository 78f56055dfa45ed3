"""Skill of flux maps against the built-in world's true flux (``xmw score-maps``).

The built-in world knows its truth: ``xmw simulate`` writes the true world's flux over every land cell
(``TRUE-WORLD/CH4_emission_intensity_<year>.nc``; the process model with the towers' parameters, without their
site effects). Maps are scored on the cells of the flux-map store (the Grid store's cells), day by day:

- per group (global, each latitude band of the budget, each wetland type): ``NSE = 1 − Σ(p − t)² / Σ(t − t̄)²``
  over every cell-day of the group (t̄ its mean), the bias ``mean(p − t)`` (mg CH4 m⁻² d⁻¹) and the relative
  bias ``Σp / Σt − 1``;
- the global budget of each year from the predicted and from the true flux with the same wetland area (the map
  store's ``wetland_area``), its error (Tg CH4 yr⁻¹), the mean error over the years, and the error of the linear
  trend (least-squares slope of the yearly budgets, Tg CH4 yr⁻²).

Everything streams: one year and one band of latitude rows (the map store's daily chunk) at a time, each
group's five running sums in float64; the whole grid is never in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmw_ray.data import layout
from xmw_ray.data.contract import (
    DAYS_PER_YEAR,
    FLUX_UNIT,
    MONTH_STARTS,
    grid_coords,
    grid_shape,
    slots_to_days,
)
from xmw_ray.errors import XmwInputError
from xmw_ray.infer.budget import BAND_NAMES, BUDGET_UNIT, MG_PER_TG, band_of_lat

SKILL_JSON = "skill.json"
SKILL_CSV = "skill.csv"
SKILL_BUDGET_CSV = "skill_budget.csv"
#: Wetland types of X-MethaneWet's coding (``wetlandtype``), the groups of the breakdown.
WETLAND_TYPES = {1: "forested bog", 2: "open bog/fen/wet tundra", 3: "forested swamp", 4: "open swamp/marsh",
                 5: "semi-arid floodplain swamp"}
#: Group names in table order: global, latitude bands south to north, wetland types.
GROUPS = ("global", *(f"lat {b}" for b in BAND_NAMES), *(f"type {t} {n}" for t, n in WETLAND_TYPES.items()))
_N_GROUPS = len(GROUPS)
_TYPE_OFFSET = 1 + len(BAND_NAMES)


class SkillSums:
    """Running sums per group: count, Σt, Σt², Σp, Σ(p − t)² (float64), enough for NSE and bias."""

    def __init__(self, n_groups: int = _N_GROUPS):
        self._sums = np.zeros((n_groups, 5), dtype=np.float64)

    def add(self, group: np.ndarray, pred: np.ndarray, true: np.ndarray) -> None:
        """Add values ``pred``/``true`` (same shape) whose group index is ``group`` (broadcast to their shape)."""
        pred = np.asarray(pred, dtype=np.float64).ravel()
        true = np.asarray(true, dtype=np.float64).ravel()
        group = np.broadcast_to(group, np.shape(pred) if np.ndim(group) == 0 else np.shape(group)).ravel()
        n = self._sums.shape[0]
        for col, weights in enumerate((None, true, true * true, pred, (pred - true) ** 2)):
            self._sums[:, col] += np.bincount(group, weights=weights, minlength=n)

    def merge(self, other: SkillSums) -> None:
        self._sums += other._sums

    def scores(self) -> list[dict[str, float]]:
        """Per group: ``n``, ``nse``, ``bias`` (mean p − t), ``relative_bias`` (Σp/Σt − 1); NaN where undefined."""
        out = []
        for n, st, stt, sp, sse in self._sums:
            if n == 0:
                out.append({"n": 0, "nse": float("nan"), "bias": float("nan"), "relative_bias": float("nan")})
                continue
            variance_sum = stt - st * st / n  # Σ(t − t̄)²
            out.append({
                "n": int(n),
                "nse": float(1.0 - sse / variance_sum) if variance_sum > 0 else float("nan"),
                "bias": float((sp - st) / n),
                "relative_bias": float(sp / st - 1.0) if st != 0 else float("nan"),
            })
        return out


def trend(years: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against ``years`` (per year); NaN with fewer than two years."""
    x = np.asarray(years, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def budget_skill(predicted: Mapping[int, float], true: Mapping[int, float]) -> dict:
    """Budget errors: per year (predicted − true, Tg CH4 yr-1), their mean, and the trends and trend error
    (Tg CH4 yr-2). ``predicted`` and ``true`` must hold the same years."""
    years = sorted(true)
    if sorted(predicted) != years:
        raise ValueError("predicted and true budgets cover different years")
    p = [float(predicted[y]) for y in years]
    t = [float(true[y]) for y in years]
    tp, tt = trend(years, p), trend(years, t)
    return {
        "years": {int(y): {"predicted": a, "true": b, "error": a - b} for y, a, b in zip(years, p, t, strict=True)},
        "mean_predicted": float(np.mean(p)), "mean_true": float(np.mean(t)),
        "mean_error": float(np.mean(p) - np.mean(t)),
        "trend_predicted": tp, "trend_true": tt, "trend_error": tp - tt,
    }


# --- the world's truth and the predictions, a band of rows at a time ----------------------------------------
@dataclass(frozen=True)
class TruthWorld:
    """A built-in world folder that holds its true flux."""

    root: Path
    res: float
    years: tuple[int, ...]
    wetland_type: np.ndarray  # (nlat, nlon), 0 without wetland


def open_truth(world: str | Path, years: Sequence[int] | None = None) -> TruthWorld:
    """The world at ``world``, checked up front: one ``XmwInputError`` line for a folder that is not a built-in
    world, a world written before the true flux was kept, or one without a true flux for ``years``."""
    import xarray as xr

    from xmw_ray.data.layout import TRUTH_FILE

    root = Path(world)
    summary_path = root / TRUTH_FILE
    if not summary_path.is_file():
        raise XmwInputError(f"--truth {world}: not a built-in world (no {TRUTH_FILE}; write one with xmw simulate)")
    try:
        summary = json.loads(summary_path.read_text())
        res = float(summary["res"])
        y0, y1 = (int(y) for y in summary["years"])
    except (ValueError, KeyError, TypeError):
        raise XmwInputError(f"--truth {world}: {TRUTH_FILE} is unreadable") from None
    if "true_flux" not in summary:
        raise XmwInputError(f"--truth {world}: this world holds no true flux ({layout.TRUE_DIR}/; it was written "
                            "by an older xmw simulate): simulate it again")
    wanted = list(range(y0, y1 + 1)) if years is None else [int(y) for y in years]
    missing = [y for y in wanted if not layout.true_target_path(root, y).is_file()]
    if missing:
        raise XmwInputError(f"--truth {world}: no true flux for {missing[0]}"
                            f"{f' and {len(missing) - 1} more years' if len(missing) > 1 else ''} "
                            f"({layout.true_target_path(root, missing[0]).name}; the world covers {y0}-{y1})")
    with xr.open_dataset(layout.static_path(root, "wetlandtype"), engine="h5netcdf") as ds:
        wtype = np.nan_to_num(np.asarray(ds["wetlandtype"].values, dtype=np.float64)).astype(np.int64)
    if wtype.shape != grid_shape(res):
        raise XmwInputError(f"--truth {world}: wetlandtype.nc is not on the world's {res}-degree grid")
    return TruthWorld(root=root, res=res, years=tuple(wanted), wetland_type=wtype)


def _true_band(world: TruthWorld, year: int, r0: int, r1: int, simulator: bool = False) -> np.ndarray:
    """``(rows, nlon, 365)`` float32 true flux (or, with ``simulator``, the simulator's) of rows ``r0:r1``."""
    import xarray as xr

    path = (layout.target_path if simulator else layout.true_target_path)(world.root, year)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        slots = np.asarray(ds[layout.TARGET_VAR].isel(lat=slice(r0, r1)).values, dtype=np.float32)
    return slots_to_days(slots)


class _MapsReader:
    """Daily bands, wetland area and cell mask of a finished flux-map store."""

    def __init__(self, path: str):
        import zarr

        from xmw_ray.infer.maps import AREA_VAR, FLUX_VAR, MAPS_FORMAT

        self.path = path
        try:
            self.root = zarr.open_group(store=path, mode="r")
            attrs = self.root.attrs.asdict()
        except Exception:  # any unreadable store is the same one-line input error
            attrs = {}
        if attrs.get("xmw_format") != MAPS_FORMAT:
            raise XmwInputError(f"{path}: not a flux-map store (xmw infer --out)")
        lacking = [a for a in ("grid_resolution_deg", "years") if a not in attrs] or \
            [a for a in (FLUX_VAR, AREA_VAR) if a not in self.root]
        if lacking:  # a copy cut short: one line, not a KeyError
            raise XmwInputError(f"{path}: flux-map store lacks {lacking[0]!r} (damaged or partly copied)")
        self.res = float(attrs["grid_resolution_deg"])
        self.years = tuple(int(y) for y in attrs["years"])
        self.daily = self.root[FLUX_VAR]
        self.band = int(self.daily.chunks[1])
        self.area = np.asarray(self.root[AREA_VAR][:], dtype=np.float64)  # (12, nlat, nlon) m²
        self.cells = np.isfinite(self.area[0])  # the Grid store's cells

    def done_years(self) -> list[int]:
        from xmw_ray.infer.maps import DONE_DIR, get_bytes, join

        return [y for y in self.years if get_bytes(join(self.path, DONE_DIR, f"{y}.json")) is not None]

    def pred_band(self, year: int, r0: int, r1: int) -> np.ndarray:
        """``(rows, nlon, 365)`` predicted flux of rows ``r0:r1``."""
        t0 = self.years.index(year) * DAYS_PER_YEAR
        return np.moveaxis(np.asarray(self.daily[t0:t0 + DAYS_PER_YEAR, r0:r1, :]), 0, -1)


def open_maps(path: str | Path) -> _MapsReader:
    """A flux-map store with every year done, checked up front."""
    reader = _MapsReader(str(path))
    if not reader.cells.any():
        raise XmwInputError(f"{path}: no wetland area (its Grid store was prepared without --wetland-area): "
                            "nothing to score")
    done = set(reader.done_years())
    missing = [y for y in reader.years if y not in done]
    if missing:
        raise XmwInputError(f"{path}: year {missing[0]} not done (rerun the xmw infer command that wrote it)")
    return reader


@dataclass
class MapSkill:
    """What scoring one source of maps against the truth gave."""

    name: str
    groups: list[dict[str, float]] = field(default_factory=list)  # GROUPS order, each with its ``group`` name
    budget: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "flux_unit": FLUX_UNIT, "budget_unit": BUDGET_UNIT, "groups": self.groups,
                "budget": self.budget}

    def group(self, name: str) -> dict[str, float]:
        return next(g for g in self.groups if g["group"] == name)


def _band_groups(world: TruthWorld, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitude-band group and wetland-type group (or -1) of each cell of rows ``r0:r1``."""
    lat, _ = grid_coords(world.res)
    nlon = world.wetland_type.shape[1]
    lat_group = np.broadcast_to((1 + band_of_lat(lat[r0:r1]))[:, None], (r1 - r0, nlon))
    wtype = world.wetland_type[r0:r1]
    type_group = np.where((wtype >= 1) & (wtype <= len(WETLAND_TYPES)), _TYPE_OFFSET + wtype - 1, -1)
    return lat_group, type_group


def _monthly_tg(flux: np.ndarray, area: np.ndarray) -> float:
    """Σ over cells and days of ``flux (cells, 365)`` × the month's wetland ``area (12, cells)``, in Tg."""
    monthly = np.add.reduceat(flux.astype(np.float64), MONTH_STARTS, axis=1)  # (cells, 12) mg m-2
    return float((monthly * area.T).sum()) / MG_PER_TG


def score_sources(maps: Sequence[tuple[str, _MapsReader | None]], world: TruthWorld,
                  on_year: Callable[[int], None] | None = None) -> list[MapSkill]:
    """Score each ``(name, reader)`` against the truth; a ``None`` reader stands for the world's own simulator
    output (the process model that made the training data), scored on the cells of the first map store."""
    readers = [r for _, r in maps if r is not None]
    if not readers:
        raise ValueError("score_sources needs at least one flux-map store")
    ref = readers[0]
    for r in readers:
        if r.res != world.res:
            raise XmwInputError(f"{r.path}: maps at {r.res} degrees, the world at {world.res}")
        if not np.array_equal(r.cells, ref.cells):
            raise XmwInputError(f"{r.path}: maps of other cells than {ref.path} (another Grid store)")
    years = list(ref.years)
    for r in readers[1:]:
        if r.years != ref.years:
            raise XmwInputError(f"{r.path}: years {r.years[0]}-{r.years[-1]}, {ref.path} has "
                                f"{ref.years[0]}-{ref.years[-1]}")
    if ref.cells.shape != world.wetland_type.shape or (world.wetland_type[ref.cells] <= 0).any():
        raise XmwInputError(f"{ref.path}: maps cells without wetland in --truth {world.root}: the maps come from "
                            "another world")
    bad = [y for y in years if y not in world.years]
    if bad:
        raise XmwInputError(f"--truth {world.root}: no true flux for {bad[0]}")
    nlat = world.wetland_type.shape[0]
    sums = [SkillSums() for _ in maps]
    pred_tg = [dict.fromkeys(years, 0.0) for _ in maps]
    true_tg = dict.fromkeys(years, 0.0)
    for year in years:
        for r0 in range(0, nlat, ref.band):
            r1 = min(nlat, r0 + ref.band)
            cells = ref.cells[r0:r1]
            if not cells.any():
                continue
            true = _true_band(world, year, r0, r1)[cells]  # (n, 365)
            area = ref.area[:, r0:r1][:, cells]  # (12, n)
            lat_group, type_group = (g[cells] for g in _band_groups(world, r0, r1))
            true_tg[year] += _monthly_tg(true, area)
            for k, (_, reader) in enumerate(maps):
                pred = (_true_band(world, year, r0, r1, simulator=True) if reader is None
                        else reader.pred_band(year, r0, r1))[cells]
                ok = np.isfinite(pred) & np.isfinite(true)
                pred_tg[k][year] += _monthly_tg(np.where(ok, pred, 0.0), area)
                for group in (np.zeros_like(lat_group), lat_group, type_group):
                    keep = ok & (group >= 0)[:, None]
                    sums[k].add(np.broadcast_to(group[:, None], pred.shape)[keep], pred[keep], true[keep])
        if on_year is not None:
            on_year(year)
    out = []
    for k, (name, _) in enumerate(maps):
        groups = [{"group": g, **s} for g, s in zip(GROUPS, sums[k].scores(), strict=True)]
        out.append(MapSkill(name=name, groups=groups, budget=budget_skill(pred_tg[k], true_tg)))
    return out


# --- files and table ---------------------------------------------------------------------------------------
def skill_csv(skill: MapSkill) -> str:
    """CSV text: ``group, n, nse, bias, relative_bias`` (bias in the flux unit)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["group", "n_cell_days", "nse", f"bias_{FLUX_UNIT.replace(' ', '_')}", "relative_bias"])
    for g in skill.groups:
        w.writerow([g["group"], g["n"], repr(g["nse"]), repr(g["bias"]), repr(g["relative_bias"])])
    return out.getvalue()


def skill_budget_csv(skill: MapSkill) -> str:
    """CSV text: ``year, predicted, true, error`` in Tg CH4 yr-1."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["year", "predicted_Tg", "true_Tg", "error_Tg"])
    for year, row in sorted(skill.budget["years"].items()):
        w.writerow([year, repr(row["predicted"]), repr(row["true"]), repr(row["error"])])
    return out.getvalue()


def comparison_rows(skills: Sequence[MapSkill]) -> Iterator[dict[str, object]]:
    """One summary row per source: global, northern and tropical NSE, bias, budget and trend errors."""
    for s in skills:
        b = s.budget
        yield {"source": s.name, "nse_global": s.group("global")["nse"],
               "nse_60N-90N": s.group("lat 60N-90N")["nse"], "nse_0-30N": s.group("lat 0-30N")["nse"],
               "bias_global": s.group("global")["bias"], "budget_mean_Tg": b["mean_predicted"],
               "budget_true_Tg": b["mean_true"], "budget_error_Tg": b["mean_error"],
               "trend_Tg_per_yr2": b["trend_predicted"], "trend_true_Tg_per_yr2": b["trend_true"],
               "trend_error_Tg_per_yr2": b["trend_error"]}


#: How a comparison table written by ``xmw score-maps --out`` begins (one it may replace).
COMPARISON_HEAD = b"source,nse_global,"


def comparison_csv(skills: Sequence[MapSkill]) -> str:
    rows = list(comparison_rows(skills))
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def comparison_table(skills: Sequence[MapSkill]) -> str:
    """A short fixed-width table of the comparison rows, for the terminal."""
    head = (f"{'source':<28} {'NSE':>6} {'NSE>60N':>7} {'bias':>7} {'budget':>7} {'true':>6} {'error':>6} "
            f"{'trend':>6} {'true':>6} {'error':>6}")
    units = (f"{'':<28} {'':>6} {'':>7} {'mg/m2/d':>7} {'Tg/yr':>7} {'':>6} {'':>6} {'Tg/yr2':>6} {'':>6} {'':>6}")
    lines = [head, units]
    for r in comparison_rows(skills):
        lines.append(f"{str(r['source'])[:28]:<28} {r['nse_global']:6.3f} {r['nse_60N-90N']:7.3f} "
                     f"{r['bias_global']:7.2f} {r['budget_mean_Tg']:7.1f} {r['budget_true_Tg']:6.1f} "
                     f"{r['budget_error_Tg']:+6.1f} {r['trend_Tg_per_yr2']:6.2f} {r['trend_true_Tg_per_yr2']:6.2f} "
                     f"{r['trend_error_Tg_per_yr2']:+6.2f}")
    return "\n".join(lines)


def write_skill(maps_path: str, skill: MapSkill, truth: Path) -> list[str]:
    """``skill.json``, ``skill.csv`` and ``skill_budget.csv`` beside the maps (inside the map store's folder)."""
    from xmw_ray.infer.maps import join, put_bytes

    payload = {**skill.to_json(), "truth": str(truth), "nse_definition": "1 - sum((p - t)^2) / sum((t - mean t)^2) "
               "over the group's cell-days", "bias_definition": "mean(p - t)", "trend_definition":
               "least-squares slope of the yearly global budget"}
    written = []
    for name, text in ((SKILL_JSON, json.dumps(payload, indent=1)), (SKILL_CSV, skill_csv(skill)),
                       (SKILL_BUDGET_CSV, skill_budget_csv(skill))):
        path = join(maps_path, name)
        put_bytes(path, text.encode())
        written.append(path)
    return written
