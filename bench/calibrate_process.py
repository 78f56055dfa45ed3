"""What calibrating the built-in process model on training towers changes, scored on towers it never saw (#15 item 3).

Why: at the shared FLUXNET-CH4 towers the process model (the TEM-MDM stand-in that ``xmw simulate sites`` runs at
a tower's own forcing) is biased; the simulations can only help transfer where they resemble the towers. Before
spending network fits on calibrated simulations, this bench asks the cheap question: does a calibration made on
training towers carry to a held-out tower?

Protocol: leave-one-tower-out over ``--towers``. The model is run once per point of ``PARAM_GRID`` (its three
parameters that shape the seasonal response: Q10, the water-table e-folding depth and the substrate lag; fixed
before any score was seen) at every tower's forcing. Per outer tower, on the other towers' observed days only:
the grid point and an emission multiplier ``a >= 0`` (least squares, closed form) that minimise the pooled squared
error; the outer tower is then predicted by that calibrated model. Scored on the outer towers' observed days:

- **uncalibrated**: the simulator's own parameters (what ``xmw simulate sites`` writes today);
- **scaled**: the simulator's parameters, only the multiplier ``a`` fitted per fold;
- **calibrated**: grid point and ``a`` fitted per fold.

Printed per procedure: pooled NSE, median-tower NSE, RMSE, KGE with 90 % bootstrap-over-towers intervals (the
nested bench's own helpers), the ratio of simulated to observed mean flux, and each fold's calibration. Also the
calibration on all towers (what a calibrated preset would use). Observed target: measured daily FCH4 on 365-day
years (Feb 29 dropped), as every real-tower bench. About a minute on 2 cores (48 simulations of 15 towers).

    python bench/calibrate_process.py [--towers ../shared/data/fluxnet-ch4] [--out runs/bench-calibrate-process]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from real_towers import tree_rows
from real_towers_nested import bootstrap, summarise

from xmw_ray.data.contract import NMOL_PER_S_TO_MG_PER_DAY
from xmw_ray.data.fluxnet import find_site_sources, read_site_metadata, read_tower_csv
from xmw_ray.errors import XmwInputError
from xmw_ray.sim.process import SIMULATOR
from xmw_ray.sim.site_forcing import parse_site_rows, simulate_site, site_props
from xmw_ray.storage import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
#: The calibrated parameters and their candidate values (the simulator's own values included), fixed up front.
PARAM_GRID: dict[str, tuple[float, ...]] = {
    "q10": (1.5, 2.0, 3.0, 4.0),
    "wt_efold_mm": (100.0, 150.0, 250.0, 400.0),
    "substrate_lag_d": (15.0, 30.0, 60.0),
}
PROCEDURES = ("uncalibrated", "scaled", "calibrated")

#: ``site → (n_years, 365)``
Series = dict[str, np.ndarray]


def on_noleap_years(dates: np.ndarray, values: np.ndarray, years: np.ndarray) -> np.ndarray:
    """``values`` on calendar ``dates`` → ``(len(years), 365)``: Feb 29 dropped, days outside ``years`` left out,
    days not in ``dates`` NaN."""
    out = np.full((len(years), 365), np.nan)
    y = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    jan1 = dates.astype("datetime64[Y]").astype("datetime64[D]")
    doy = (dates - jan1).astype(np.int64)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    feb29 = leap & (doy == 59)
    doy = np.where(leap & (doy > 59), doy - 1, doy)
    row = {int(v): i for i, v in enumerate(years)}
    for k in np.flatnonzero(~feb29):
        i = row.get(int(y[k]))
        if i is not None:
            out[i, doy[k]] = values[k]
    return out


def simulate_grid(towers: str, years: dict[str, np.ndarray], log) -> dict[tuple[float, ...], Series]:
    """The process model at every tower's forcing for every point of ``PARAM_GRID`` (mg CH4 m-2 d-1)."""
    sources = find_site_sources(towers)
    metas = read_site_metadata(sources.meta_path)
    daily = {}
    for site, path in sorted(sources.daily_paths.items()):
        if site in years:
            daily[site] = parse_site_rows(site, read_tower_csv(path), path)
    missing = sorted(set(years) - set(daily))
    if missing:
        raise XmwInputError(f"--towers: {', '.join(missing)} have no single-site daily file (combined files are not "
                            "read by this bench)")
    out = {}
    for point in itertools.product(*PARAM_GRID.values()):
        params = replace(SIMULATOR, **dict(zip(PARAM_GRID, point, strict=True)))
        out[point] = {s: on_noleap_years(d.dates, simulate_site(d, site_props(metas[s]), params)
                                         * NMOL_PER_S_TO_MG_PER_DAY, years[s]) for s, d in daily.items()}
    log(f"simulated {len(out)} parameter points at {len(daily)} towers")
    return out


def fit_scale(sim: Series, obs: Series, sites: list[str]) -> tuple[float, float]:
    """``(a, sse)``: the multiplier a >= 0 minimising the pooled squared error of a·sim on ``sites``' days."""
    p = np.concatenate([sim[s].ravel() for s in sites])
    y = np.concatenate([obs[s].ravel() for s in sites])
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    a = max(0.0, float(p @ y) / float(p @ p)) if float(p @ p) > 0 else 0.0
    return a, float(((a * p - y) ** 2).sum())


def calibrate(sims: dict[tuple[float, ...], Series], obs: Series, sites: list[str],
              points: list[tuple[float, ...]] | None = None) -> tuple[tuple[float, ...], float]:
    """The grid point (among ``points``, default all) and multiplier with the least pooled squared error on
    ``sites``; ties to the earlier point. Reads only ``sites``' observations."""
    best = None
    for point in points or list(sims):
        a, sse = fit_scale(sims[point], obs, sites)
        if best is None or sse < best[2]:
            best = (point, a, sse)
    return best[0], best[1]


def loto(sims: dict[tuple[float, ...], Series], obs: Series) -> tuple[dict[str, Series], list[dict]]:
    """Each procedure's predictions of every tower from a calibration on the others, and each fold's choice."""
    default = tuple(getattr(SIMULATOR, k) for k in PARAM_GRID)
    sites = sorted(obs)
    pred: dict[str, Series] = {p: {} for p in PROCEDURES}
    folds = []
    for outer in sites:
        train = [s for s in sites if s != outer]
        a_scaled = fit_scale(sims[default], obs, train)[0]
        point, a = calibrate(sims, obs, train)
        pred["uncalibrated"][outer] = sims[default][outer]
        pred["scaled"][outer] = a_scaled * sims[default][outer]
        pred["calibrated"][outer] = a * sims[point][outer]
        folds.append({"outer": outer, "scaled_a": a_scaled, "calibrated": dict(zip(PARAM_GRID, point, strict=True)),
                      "calibrated_a": a})
    return pred, folds


def mean_ratio(pred: Series, obs: Series) -> float:
    """Mean simulated flux over mean observed flux on the observed days (1 = unbiased on average)."""
    p = np.concatenate([pred[s].ravel() for s in pred])
    y = np.concatenate([obs[s].ravel() for s in pred])
    ok = np.isfinite(p) & np.isfinite(y)
    return float(p[ok].mean() / y[ok].mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--towers", default=str(ROOT.parent / "shared" / "data" / "fluxnet-ch4"))
    ap.add_argument("--out", default="runs/bench-calibrate-process")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if not Path(args.towers).is_dir():
            raise XmwInputError(f"--towers: {args.towers} is not a folder")
        rows = tree_rows(args.towers)
        if len(rows) < 3:
            raise XmwInputError(f"--towers: {args.towers} holds {len(rows)} towers; leave-one-out needs at least 3")
        obs = {s: r["y"] for s, r in rows.items()}
        sims = simulate_grid(args.towers, {s: r["year"] for s, r in rows.items()},
                             lambda m: print(m, file=sys.stderr, flush=True))
    except XmwInputError as exc:
        print(f"xmw: error: {exc}", file=sys.stderr)
        return 2
    pred, folds = loto(sims, obs)
    point, a = calibrate(sims, obs, sorted(obs))
    results = {"towers": str(Path(args.towers).resolve()), "param_grid": PARAM_GRID,
               "simulator": {k: getattr(SIMULATOR, k) for k in PARAM_GRID},
               "procedures": {p: {**summarise(v, obs), "interval": bootstrap(v, obs), "mean_ratio": mean_ratio(v, obs)}
                              for p, v in pred.items()},
               "folds": folds, "on_all": {"params": dict(zip(PARAM_GRID, point, strict=True)), "a": a},
               "seconds": time.perf_counter() - t0}
    lines = ["| process model | pooled NSE [90 %] | median tower NSE [90 %] | RMSE [90 %] | KGE [90 %] | "
             "mean sim / mean obs |", "|---|---|---|---|---|---|"]
    for p, m in results["procedures"].items():
        cell = {k: f"{m[k]:.3f} [{m['interval'][k][0]:.3f}, {m['interval'][k][1]:.3f}]" for k in
                ("nse", "median_nse", "kge")}
        rmse = f"{m['rmse']:.1f} [{m['interval']['rmse'][0]:.1f}, {m['interval']['rmse'][1]:.1f}]"
        lines.append(f"| {p} | {cell['nse']} | {cell['median_nse']} | {rmse} | {cell['kge']} | "
                     f"{m['mean_ratio']:.2f} |")
    lines += ["", "| outer tower | scaled: a | calibrated: " + ", ".join(PARAM_GRID) + ", a |", "|---|---|---|"]
    for f in folds:
        lines.append(f"| {f['outer']} | {f['scaled_a']:.2f} | "
                     + ", ".join(f"{v:g}" for v in f["calibrated"].values()) + f", {f['calibrated_a']:.2f} |")
    lines += ["", "Calibrated on all towers: " + ", ".join(f"{k} {v:g}" for k, v in results["on_all"]["params"].items())
              + f", a {a:.2f} (simulator: " + ", ".join(f"{k} {v:g}" for k, v in results["simulator"].items()) + ")"]
    md = "\n".join(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "calibrate_process.json", json.dumps(results, indent=1, default=float))
    write_text_atomic(out / "calibrate_process.md", md + "\n")
    print(md)
    print(f"({results['seconds']:.0f} s; {out / 'calibrate_process.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
