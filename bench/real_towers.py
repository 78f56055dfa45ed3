"""Skill on the real FLUXNET-CH4 towers: gradient-boosted trees against the ``fluxnet-real-simdriver`` procedure.

Two evaluations, side by side in one run, both scored on measured daily FCH4 (mg CH4 m-2 d-1):

- leave-one-tower-out (LOTO): each tower is predicted by models trained on the other towers only;
- last year: the last year of each multi-year tower is held out (the ``site_temporal`` split); single-year towers
  train.

Trees: the project's one tree baseline (``xmw_ray.baselines.gbt.GBTBaseline``, its default settings, the ``gbt``
rows of ``xmw transfer``) on per-day rows of the towers' drivers TA_F, P_F, SW_IN_F, VPD_F, PA_F, WS_F, LE_F, GPP_NT,
TS_1 (after the stores' driver QC, ``tower_features.qc_drivers``, and target QC, ``qc_target``), their NaN-aware 7- and 30-day trailing means over
each tower's continuous record, the solar season from the tower's latitude (``solar.SEASON_VARS``: day length, TOA
radiation, sun trend; never the bare day of year) and |latitude|, read straight from the site files (NaN left to
the trees).

Preset: the model, optimiser, ensemble size and driver set of ``configs/experiments/fluxnet-real-simdriver.yaml``
(the ``fluxnet-real`` preset until issue #15's nested choice replaced it; this bench's table is withdrawn: the
configuration was chosen on the towers it scores; ``bench/real_towers_nested.py`` is the estimate), each fold
trained through the same code path as ``xmw transfer`` (``run_ensemble`` → Ray Train). The preset is an ensemble
of 3 seeds: the bench scores the ensemble and each of its single-seed members alone (mean ± std over seeds), so
"averaged over 3 seeds" is shown both ways. More ``--seeds`` train further independent ensembles.
Model selection never sees the evaluation towers' targets: the preset is fixed before the bench, and each fold
trains for the preset's fixed number of epochs on its training towers only.

Prints pooled NSE, median per-tower NSE, RMSE and KGE per evaluation for the trees, each single-seed network,
their mean ± std, the preset (the ensemble), and the difference preset − trees; writes ``<out>/real_towers.json`` and ``real_towers.md``.

    python bench/real_towers.py [--towers ../shared/data/fluxnet-ch4] [--seeds 0] [--out runs/bench-real-towers]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from xmw_ray.baselines.gbt import GBTBaseline, GBTParams
from xmw_ray.config import ExperimentConfig, load_config
from xmw_ray.data import schema
from xmw_ray.data.contract import DAYS_PER_YEAR, NMOL_PER_S_TO_MG_PER_DAY
from xmw_ray.data.fluxnet import find_site_sources, iter_site_years, read_site_metadata
from xmw_ray.data.ray_datasets import sample_dataset, store_info
from xmw_ray.data.solar import SEASON_VARS, season_features
from xmw_ray.data.splits import SplitSpec
from xmw_ray.data.tower_features import on_span, qc_drivers, qc_target, trailing_mean
from xmw_ray.models.checkpoint import load_checkpoint_model
from xmw_ray.storage import write_text_atomic
from xmw_ray.train.evaluate import predict_batch
from xmw_ray.train.metrics import MetricAccumulator
from xmw_ray.train.runner import ensure_ray
from xmw_ray.transfer.ensemble import MEMBER_SEED_STRIDE, run_ensemble
from xmw_ray.transfer.experiment import prepare_stores, run_config, transfer_section
from xmw_ray.transfer.registry import get_strategy

ROOT = Path(__file__).resolve().parents[1]
TREE_DRIVERS = ("TA_F", "P_F", "SW_IN_F", "VPD_F", "PA_F", "WS_F", "LE_F", "GPP_NT", "TS_1")
TREE_WINDOWS = (7, 30)
EVALUATIONS = ("loto", "last_year")
REPORTED = ("nse", "median_nse", "rmse", "kge", "n")


# --- trees ---------------------------------------------------------------------------------------------------
def tree_rows(towers: str, windows: tuple[int, ...] = TREE_WINDOWS) -> dict[str, dict[str, np.ndarray]]:
    """``site → {"dynamic": (n_years, 365, D), "static": (n_years, 1), "y": (n_years, 365), "year": (n_years,)}``
    from the site files: the drivers, then their trailing means over the tower's continuous record (a window
    reaches into the previous year), so the trees take no trailing means of their own (``trailing_windows=()``).
    ``windows=()``: the drivers and the season alone (issue #15's recipe for its strong trees)."""
    sources = find_site_sources(towers)
    metas = read_site_metadata(sources.meta_path)
    out = {}
    for sy in iter_site_years(sources, [*TREE_DRIVERS, "FCH4"]):
        n = len(sy.years)
        span = np.arange(sy.years.min(), sy.years.max() + 1)
        columns, _ = qc_target(qc_drivers(sy.columns)[0])  # the QC prepare sites applies: the same days
        cols = [on_span(sy.years, columns[v], span) if v in columns else np.full((len(span), DAYS_PER_YEAR), np.nan)
                for v in TREE_DRIVERS]
        pick = np.searchsorted(span, sy.years)
        feats = [c[pick] for c in cols]
        feats += [trailing_mean(c.reshape(-1), w).reshape(c.shape)[pick] for c in cols for w in windows]
        season = np.broadcast_to(season_features(metas[sy.site].lat), (n, DAYS_PER_YEAR, len(SEASON_VARS)))
        out[sy.site] = {"dynamic": np.concatenate([np.stack(feats, axis=-1), season], axis=-1), "static": np.full((n, 1), abs(metas[sy.site].lat)),
                        "y": columns["FCH4"] * NMOL_PER_S_TO_MG_PER_DAY, "year": np.asarray(sy.years)}
    return out


def _test_mask(evaluation: str, rows: dict[str, np.ndarray], site: str, fold_site: str | None) -> np.ndarray:
    """Which of the site's years are tested in the fold."""
    if evaluation == "loto":
        return np.full(len(rows["year"]), site == fold_site)
    years = np.unique(rows["year"])
    return rows["year"] == years[-1] if len(years) > 1 else np.zeros(len(rows["year"]), dtype=bool)


def score_trees(rows: dict[str, dict[str, np.ndarray]], evaluation: str, seed: int,
                tree_params: dict | None = None) -> dict:
    """Fit on every observed training day of each fold, score the fold's test days; pooled over folds.
    ``tree_params``: ``GBTParams`` settings over the baseline's defaults."""
    acc = MetricAccumulator("daily")
    folds = sorted(rows) if evaluation == "loto" else [None]
    for fold_site in folds:
        masks = {s: _test_mask(evaluation, r, s, fold_site) for s, r in rows.items()}
        train = {k: np.concatenate([r[k][~masks[s]] for s, r in rows.items()]) for k in ("dynamic", "static", "y")}
        trees = GBTBaseline(**{"random_state": seed, **(tree_params or {}), "trailing_windows": ()}).fit(
            train["dynamic"], train["static"], train["y"])
        for s, r in rows.items():
            m = masks[s]  # whole site-years: scored on their measured days
            if m.any():
                pred = trees.predict(r["dynamic"][m], r["static"][m])
                acc.update(pred, r["y"][m], np.full(len(pred), s))
    return _summary(acc)


# --- preset --------------------------------------------------------------------------------------------------
def fold_specs(evaluation: str, sites: list[str]) -> list[tuple[str, SplitSpec]]:
    """LOTO: one spatial fold per tower (explicit folds); last year: the ``site_temporal`` split."""
    if evaluation == "loto":
        folds = {s: i for i, s in enumerate(sites)}
        return [(s, SplitSpec(kind="spatial", folds=folds, n_folds=len(sites), test_fold=i))
                for s, i in folds.items()]
    return [("all", SplitSpec(kind="site_temporal"))]


def score_preset(cfg: ExperimentConfig, evaluation: str, seed: int, out: Path, log) -> dict:
    """Train the preset (an ensemble run) on each fold with ``seed``; pool its test predictions over folds.

    Returns ``{"ensemble": summary, "members": [summary per member seed]}``: the preset itself, and each of its
    single-seed members scored alone (the spread a single network would have)."""
    exp = transfer_section(cfg)
    info = store_info(cfg.data.store, cfg.data.source)
    ens_acc = MetricAccumulator("daily")
    member_accs = [MetricAccumulator("daily") for _ in range(exp.ensemble)]
    model = (exp.models or [cfg.model])[0]
    strategy = get_strategy(exp.strategies[0])
    for name, spec in fold_specs(evaluation, sorted(info.entities)):
        t0 = time.perf_counter()
        run = run_config(cfg, model, spec, f"{evaluation}-{name}-s{seed}", str(out / "runs"), seed)
        outcome = run_ensemble(strategy, run, exp.strategy_params.get(strategy.name, {}), exp.ensemble)
        ensemble = load_checkpoint_model(outcome.best_checkpoint)
        members = getattr(ensemble, "members", [ensemble])
        for batch in sample_dataset(info, spec, "test").iter_batches(batch_size=None, batch_format="numpy"):
            y, ent = batch[schema.TARGET], batch[schema.ENTITY]
            ens_acc.update(predict_batch(ensemble, batch[schema.DYNAMIC], batch[schema.STATIC]), y, ent)
            for acc, member in zip(member_accs, members, strict=True):
                acc.update(predict_batch(member, batch[schema.DYNAMIC], batch[schema.STATIC]), y, ent)
        log(f"  {evaluation} fold {name} seed {seed}: {time.perf_counter() - t0:.0f} s")
    return {"ensemble": _summary(ens_acc), "members": [_summary(a) for a in member_accs]}


def _summary(acc: MetricAccumulator) -> dict:
    res = acc.result()
    p = res["pooled"]
    return {"nse": p["nse"], "median_nse": res["median"]["nse"], "rmse": p["rmse"], "kge": p["kge"], "n": p["n"],
            "per_tower_nse": {k: v["nse"] for k, v in res["per_entity"].items()}}


# --- report --------------------------------------------------------------------------------------------------
def _line(ev: str, name: str, m: dict, s: dict | None = None) -> str:
    if s is None:
        return (f"| {ev} | {name} | {m['nse']:.3f} | {m['median_nse']:.3f} | {m['rmse']:.1f} | {m['kge']:.3f} "
                f"| {m.get('n', '')} |")
    return (f"| {ev} | {name} | {m['nse']:.3f} ± {s['nse']:.3f} | {m['median_nse']:.3f} ± {s['median_nse']:.3f} | "
            f"{m['rmse']:.1f} ± {s['rmse']:.1f} | {m['kge']:.3f} ± {s['kge']:.3f} | |")


def table(results: dict) -> str:
    lines = ["| evaluation | model | pooled NSE | median tower NSE | RMSE | KGE | days |", "|---|---|---|---|---|---|---|"]
    for ev, r in results["evaluations"].items():
        lines.append(_line(ev, "trees (gbt baseline)", r["trees"]))
        for seed, p in r["preset"].items():
            for k, m in enumerate(p["members"]):
                lines.append(_line(ev, f"one network (seed {seed * MEMBER_SEED_STRIDE + k})", m))
        lines.append(_line(ev, "one network: mean ± std over seeds", r["member_mean"], r["member_std"]))
        for seed, p in r["preset"].items():
            lines.append(_line(ev, f"**preset** ({len(p['members'])}-seed ensemble, seed {seed})", p["ensemble"]))
        d = r["difference"]
        lines.append(f"| {ev} | preset − trees | {d['nse']:+.3f} | {d['median_nse']:+.3f} | {d['rmse']:+.1f} | "
                     f"{d['kge']:+.3f} | |")
    return "\n".join(lines)


def tree_settings(pairs: list[str]) -> dict:
    """``["max_iter=300", ...]`` → validated ``GBTParams`` settings (a bad one stops the bench before any work)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--tree-param: expected KEY=VALUE, got {pair!r}")
        settings[key] = yaml.safe_load(value)
    try:
        GBTParams(**settings)
    except ValidationError as exc:
        raise SystemExit(f"--tree-param: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    return settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--towers", default=str(ROOT.parent / "shared" / "data" / "fluxnet-ch4"))
    ap.add_argument("--config", default=str(ROOT / "configs" / "experiments" / "fluxnet-real-simdriver.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="ensemble seeds: each trains the preset's members (seed*100+k) on every fold")
    ap.add_argument("--evaluations", nargs="+", choices=EVALUATIONS, default=list(EVALUATIONS))
    ap.add_argument("--out", default="runs/bench-real-towers")
    ap.add_argument("--tree-param", nargs="+", default=[], metavar="KEY=VALUE",
                    help="tree baseline settings over its defaults (GBTParams), e.g. max_iter=300 learning_rate=0.05")
    args = ap.parse_args(argv)
    tree_params = tree_settings(args.tree_param)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    ensure_ray()  # the project's local Ray instance (logical CPUs, workers at normal priority) before Ray Data
    out = Path(args.out).resolve()
    raw = load_config(args.config, [f"run.output_dir={out.parent}", f"run.name={out.name}",
                                    f"transfer.prepare.forcing={args.towers}"], require="transfer")
    cfg = raw.resolved()
    prepare_stores(cfg, log)
    t0 = time.perf_counter()
    rows = tree_rows(args.towers)
    results: dict = {"config": args.config, "seeds": args.seeds, "tree_params": tree_params, "evaluations": {}}
    for ev in args.evaluations:
        trees = score_trees(rows, ev, seed=0, tree_params=tree_params)
        log(f"{ev}: trees pooled NSE {trees['nse']:.3f}")
        preset = {}
        for seed in args.seeds:
            preset[seed] = score_preset(cfg, ev, seed, out, log)
            log(f"{ev}: preset seed {seed} pooled NSE {preset[seed]['ensemble']['nse']:.3f}")
            if preset[seed]["ensemble"]["n"] != trees["n"]:
                raise SystemExit(f"scored days differ: trees {trees['n']}, preset {preset[seed]['ensemble']['n']}")
        members = [m for p in preset.values() for m in p["members"]]
        ensembles = [p["ensemble"] for p in preset.values()]
        keys = REPORTED[:-1]
        results["evaluations"][ev] = {
            "trees": trees, "preset": preset,
            "member_mean": {k: float(np.mean([m[k] for m in members])) for k in keys},
            "member_std": {k: float(np.std([m[k] for m in members])) for k in keys},
            "difference": {k: float(np.mean([e[k] for e in ensembles])) - trees[k] for k in keys}}
    results["seconds"] = time.perf_counter() - t0
    md = table(results)
    write_text_atomic(out / "real_towers.json", json.dumps(results, indent=1, default=float))
    write_text_atomic(out / "real_towers.md", md + "\n")
    print(md)
    print(f"({results['seconds']:.0f} s; {out / 'real_towers.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
