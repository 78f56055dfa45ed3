"""The transfer experiment: strategies × models × settings × data fractions × seeds, each a Ray Train run,
scored on the observations' TEST split (never used for selection), plus the gradient-boosted-tree baseline.

Re-running is safe: finished runs are listed in ``results.jsonl`` and skipped; an interrupted run resumes from
its checkpoints; source pretrainings are cached by hash and shared by every strategy/fraction/setting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xmw_ray import console
from xmw_ray.baselines.gbt import GBTBaseline
from xmw_ray.config import ExperimentConfig, ModelSection, TransferSection
from xmw_ray.data import schema
from xmw_ray.data.ray_datasets import sample_dataset, store_info
from xmw_ray.data.splits import SplitSpec
from xmw_ray.data.stores import check_trains_on_store
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import BEST_DIR, publish_checkpoint, refuse_foreign_checkpoint
from xmw_ray.storage import is_url
from xmw_ray.train.evaluate import evaluate_checkpoint
from xmw_ray.train.metrics import METRIC_KEYS, MetricAccumulator
from xmw_ray.train.results import ResultRow, append_jsonl, read_jsonl
from xmw_ray.transfer.base import check_layouts
from xmw_ray.transfer.ensemble import run_ensemble
from xmw_ray.transfer.registry import get_strategy
from xmw_ray.transfer.table import write_results

RESULTS_FILE = "results.jsonl"
#: Test metrics of a run whose setting holds no test part (``kind: all``).
NO_TEST: dict[str, float] = {**dict.fromkeys(METRIC_KEYS[:-1], float("nan")), "n": 0}


def run_row(strategy: str, model: str, setting: str, fraction: float, seed: int, test: dict[str, Any],
            val_nse: float, checkpoint: str) -> ResultRow:
    """The row of one scored run (a strategy's or the trees'): its TEST metrics pooled over observed days
    (``test``, ``METRIC_KEYS``), its validation NSE (what selection reads; NaN for the trees) and its checkpoint
    ("" for the trees). ``results.jsonl``, the summary tables and ``best`` are made from these."""
    return ResultRow(key=run_key(strategy, model, setting, fraction, seed), model=model, setting=setting,
                     fraction=fraction, seed=seed, strategy=strategy, test={k: test[k] for k in METRIC_KEYS},
                     val_nse=val_nse, checkpoint=checkpoint)


def _log(msg: str) -> None:
    console.err(f"  {msg}")


def prepare_stores(cfg: ExperimentConfig, log: Callable[[str], None] = _log) -> None:
    """Run ``simulate sites`` and ``prepare sites`` for the stores that are missing (``transfer.prepare``)."""
    from xmw_ray.data.site_store import prepare_sites
    from xmw_ray.data.tower_features import SIM_MARKER
    from xmw_ray.sim.site_forcing import simulate_sites

    prep = transfer_section(cfg).prepare
    if prep is None:
        return
    forcing = Path(prep.forcing)
    sim_files = Path(cfg.run_dir()) / "prepared" / "simulated-sites"
    need_source = cfg.source is not None and not prep.sim_input and not Path(cfg.source.store).exists()
    need_target = not Path(cfg.data.store).exists()
    if (need_source or (need_target and prep.sim_input)) and not (sim_files / "FLUXNET-CH4" / SIM_MARKER).is_file():
        log(f"simulating towers at {forcing}'s forcing -> {sim_files}")
        simulate_sites(forcing, sim_files, log=log)
    if need_source:
        prepare_sites(sim_files, cfg.source.store, drivers=prep.drivers, progress=log)
    if need_target:
        log(f"preparing observations {forcing} -> {cfg.data.store}")
        prepare_sites(forcing, cfg.data.store, drivers=prep.drivers,
                      sim_sites=sim_files if prep.sim_input else None, progress=log)


def check_stores(cfg: ExperimentConfig) -> None:
    """Before any Ray work and before the experiment's folder is made (``cfg`` resolved): every store it reads is
    there, or is built by ``transfer.prepare`` from a forcing folder that is; the source and the observations
    share one layout; the source's split and each setting leave years to train on."""
    exp = transfer_section(cfg)
    prep = exp.prepare
    if prep is not None and not Path(prep.forcing).is_dir():
        raise XmwInputError(f"{prep.forcing}: transfer.prepare.forcing folder not found")
    infos = {}
    for key, sec in (("source", cfg.source), ("data", cfg.data)):
        if sec is None:
            continue
        if not is_url(sec.store) and not Path(sec.store).exists():
            if prep is not None:  # built by transfer.prepare; checked when it is
                continue
            raise XmwInputError(f"{sec.store}: store not found (run xmw simulate / xmw prepare first, see the "
                                "config's header)")
        infos[key] = store_info(sec.store, sec.source)
    if "source" in infos and cfg.strategies_on_source():
        check_trains_on_store(infos["source"], cfg.source.split, "source.split")
    if "data" in infos:
        for name, spec in exp.settings.items():
            check_trains_on_store(infos["data"], spec, f"transfer.settings.{name}")
    if len(infos) == 2:
        check_layouts(infos["source"], infos["data"])


def transfer_section(cfg: ExperimentConfig) -> TransferSection:
    """``cfg.transfer`` (``load_config(require="transfer")`` refuses a config without it)."""
    if cfg.transfer is None:
        raise XmwInputError("transfer: missing section (xmw transfer needs it)")
    return cfg.transfer


def run_config(cfg: ExperimentConfig, model: ModelSection, spec: SplitSpec, name: str, output_dir: str,
               seed: int) -> ExperimentConfig:
    """One run of the experiment: ``model`` on the observations split by ``spec``, run ``name`` under
    ``output_dir`` with ``seed``; the source, optimisers, resources and the other run keys as configured."""
    return cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"split": spec}), "model": model,
        "run": cfg.run.model_copy(update={"name": name, "output_dir": output_dir, "seed": seed})})


def run_key(strategy: str, model: str, setting: str, fraction: float, seed: int) -> str:
    return f"{strategy}-{model}-{setting}-f{fraction:g}-s{seed}"


def _arrays(info, spec: SplitSpec, part: str) -> dict[str, np.ndarray]:
    batches = list(sample_dataset(info, spec, part).iter_batches(batch_size=None, batch_format="numpy"))
    if not batches:
        raise XmwInputError(f"{info.path}: split part {part!r} holds no sample")
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def gbt_row(cfg: ExperimentConfig, setting: str, spec: SplitSpec, fraction: float, seed: int) -> ResultRow:
    """Fit the trees on the observations' training split (training + validation parts), score on test."""
    info = store_info(cfg.data.store, cfg.data.source)
    train = [_arrays(info, spec, p) for p in (("train", "val") if spec.val_fraction > 0 else ("train",))]
    dyn = np.concatenate([t[schema.DYNAMIC] for t in train])
    stat = np.concatenate([t[schema.STATIC] for t in train])
    y = np.concatenate([t[schema.TARGET] for t in train])
    model = GBTBaseline(**{"random_state": seed, **(transfer_section(cfg).baseline or {})}).fit(dyn, stat, y)
    test = _arrays(info, spec, "test")
    acc = MetricAccumulator("daily")
    acc.update(model.predict(test[schema.DYNAMIC], test[schema.STATIC]), test[schema.TARGET], test[schema.ENTITY])
    return run_row("gbt", "gbt", setting, fraction, seed, acc.result()["pooled"], float("nan"), "")


def check_local_output(cfg: ExperimentConfig) -> None:
    """Before any work: a transfer experiment keeps its runs, tables and ``best`` in a local folder, so refuse an
    object-storage ``run.output_dir`` (instead of writing into a local folder named after the URL), and a ``best``
    there holding anything but a checkpoint (publishing the new one would delete it)."""
    if is_url(cfg.run.output_dir):
        raise XmwInputError(f"run.output_dir: {cfg.run.output_dir}: a transfer experiment writes to a local folder "
                            "(object-storage URLs are for xmw train and xmw tune); copy the folder there afterwards")
    refuse_foreign_checkpoint(Path(cfg.run_dir()) / BEST_DIR)


def run_experiment(cfg: ExperimentConfig, log: Callable[[str], None] = _log) -> dict[str, Path]:
    """Run every missing combination, then write the tables, the plot and ``<output_dir>/best``."""
    check_local_output(cfg)
    cfg = cfg.resolved()
    check_stores(cfg)
    exp = transfer_section(cfg)
    out = Path(cfg.run_dir()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    prepare_stores(cfg, log)
    if cfg.source is not None:  # refused before any Ray work (the trees would start Ray first)
        check_layouts(store_info(cfg.source.store, cfg.source.source), store_info(cfg.data.store, cfg.data.source))
    results = out / RESULTS_FILE
    rows = read_jsonl(results)
    done = {r.key for r in rows}
    models = exp.models or [cfg.model]
    total = len(models) * len(exp.settings) * len(exp.fractions) * len(exp.seeds) * len(exp.strategies)
    number = 0
    for model in models:
        for setting, base_spec in exp.settings.items():
            for fraction in exp.fractions:
                for seed in exp.seeds:
                    spec = base_spec.model_copy(update={"fraction": fraction, "seed": seed})
                    has_test = spec.kind != "all"
                    if exp.baseline is not None and has_test:
                        key = run_key("gbt", "gbt", setting, fraction, seed)
                        if key not in done:
                            row = gbt_row(cfg, setting, spec, fraction, seed)
                            append_jsonl(results, row)
                            rows.append(row)
                            done.add(key)
                    for strategy in exp.strategies:
                        key = run_key(strategy, model.name, setting, fraction, seed)
                        number += 1
                        if key in done:
                            continue
                        log(f"run {number}/{total}: {key}")
                        outcome = run_ensemble(get_strategy(strategy),
                                               run_config(cfg, model, spec, key, str(out / "runs"), seed),
                                               exp.strategy_params.get(strategy, {}), exp.ensemble)
                        pooled = (evaluate_checkpoint(str(outcome.best_checkpoint), cfg.data.store, "test")["pooled"]
                                  if has_test else NO_TEST)
                        row = run_row(strategy, model.name, setting, fraction, seed, pooled,
                                      outcome.metrics.get("val_nse", float("nan")), str(outcome.best_checkpoint))
                        append_jsonl(results, row)
                        rows.append(row)
                        done.add(key)
                        log(f"  {key}: test NSE {row.test['nse']:.3f} on held-out data, val NSE {row.val_nse:.3f} on "
                            "the validation part that chose its epoch")
    scored = [r for r in rows if r.setting != exp.deploy_setting]
    paths = write_results(scored, out)
    paths["best"] = _copy_best(rows, out, exp.deploy_setting)
    return paths


def best_row(rows: list[ResultRow], deploy_setting: str | None = None) -> ResultRow | None:
    """The run with the highest VALIDATION NSE (never test); with ``deploy_setting``, that run's strategy, model
    and fraction as trained in the deploy setting (same seed when there, else its first seed). A lone
    candidate (one strategy, model and fraction) needs no validation score."""
    runs = [r for r in rows if r.checkpoint]
    pool = [r for r in runs if r.setting != deploy_setting] if deploy_setting else runs
    scored = [r for r in pool if r.val_nse is not None and r.val_nse == r.val_nse]
    if scored:
        chosen = max(scored, key=lambda r: r.val_nse)
    elif len({(r.strategy, r.model, r.fraction) for r in pool}) == 1:
        chosen = pool[0]
    else:
        return None
    if deploy_setting is None:
        return chosen
    same = [r for r in runs if r.setting == deploy_setting
            and (r.strategy, r.model, r.fraction) == (chosen.strategy, chosen.model, chosen.fraction)]
    same.sort(key=lambda r: (r.seed != chosen.seed, r.seed))
    return same[0] if same else None


def _copy_best(rows: list[ResultRow], out: Path, deploy_setting: str | None = None) -> Path:
    """:func:`best_row`'s checkpoint → ``<output_dir>/best`` (copied aside, swapped in atomically)."""
    best = out / BEST_DIR
    row = best_row(rows, deploy_setting)
    if row is None:
        return best
    return publish_checkpoint(row.checkpoint, best)
