"""The transfer experiment: strategies × models × settings × data fractions × seeds, each a Ray Train run,
scored on the observations' TEST split (never used for selection), plus the gradient-boosted-tree baseline.

Re-running is safe: finished runs are listed in ``results.jsonl`` and skipped; an interrupted run resumes from
its checkpoints; source pretrainings are cached by hash and shared by every strategy/fraction/setting.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from xmw_ray.baselines.gbt import GBTBaseline
from xmw_ray.config import (
    DataSection,
    KeyedValueError,
    ModelSection,
    OptimSection,
    ResourcesSection,
    RunSection,
    Strict,
    check_params,
)
from xmw_ray.data import schema
from xmw_ray.data.ray_datasets import sample_dataset, store_info
from xmw_ray.data.splits import SplitSpec
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import is_url, publish_dir
from xmw_ray.train.evaluate import evaluate_checkpoint
from xmw_ray.train.metrics import METRIC_KEYS, MetricAccumulator
from xmw_ray.transfer.base import TransferJob, check_layouts
from xmw_ray.transfer.ensemble import run_ensemble
from xmw_ray.transfer.registry import STRATEGIES, get_strategy
from xmw_ray.transfer.table import write_results

RESULTS_FILE = "results.jsonl"
#: Test metrics of a run whose setting holds no test part (``kind: all``).
NO_TEST: dict[str, float] = {**dict.fromkeys(METRIC_KEYS[:-1], float("nan")), "n": 0}
BEST_DIR = "best"
OUTPUT_DIR_TOKEN = "{output_dir}"


class PrepareSection(Strict):
    """Build the stores when they do not exist: simulate at ``forcing``'s towers → source; its observations →
    target (both ``xmw prepare sites`` with the same ``drivers``, so their feature layouts match).

    ``sim_input``: the simulated flux at each tower becomes a driver of the target store (``SIM_FCH4``, tower
    driver set only) instead of a pretraining source: a hybrid model that corrects the process model from the
    towers' own drivers. The source store is then not built, and only ``scratch`` applies."""

    forcing: str = Field(description="folder of FLUXNET-CH4 site files (with the META file)")
    drivers: Literal["xmw", "tower"] = Field("xmw", description="xmw prepare sites --drivers")
    sim_input: bool = Field(False, description="simulated flux as a target-store driver (drivers: tower)")

    @model_validator(mode="after")
    def _sim_needs_tower(self) -> PrepareSection:
        if self.sim_input and self.drivers != "tower":
            raise ValueError("sim_input needs drivers: tower")
        return self


class ExperimentConfig(Strict):
    output_dir: str = "runs/transfer"
    source: DataSection | None = Field(None, description="simulations to pretrain on (every strategy but scratch)")
    target: DataSection
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES))
    strategy_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: list[ModelSection] = Field(default_factory=lambda: [ModelSection()])
    settings: dict[str, SplitSpec] = Field(description="observation splits by name, e.g. temporal / spatial")
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    optim: OptimSection = Field(default_factory=OptimSection)
    pretrain_optim: OptimSection = Field(default_factory=OptimSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    baseline: dict[str, Any] | None = Field(default_factory=dict, description="GBT parameters; null: no GBT row")
    prepare: PrepareSection | None = None
    checkpoint_every: int = Field(1, gt=0, description="epochs between resume checkpoints of each run")
    ensemble: int = Field(1, ge=1, description="members per run (seeds differ), averaged into one checkpoint")
    deploy_setting: str | None = Field(None, description="setting (e.g. kind: all) whose run becomes `best`; the "
                                       "strategy, model and fraction are chosen by validation NSE elsewhere")

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.deploy_setting is not None and self.deploy_setting not in self.settings:
            raise ValueError(f"deploy_setting {self.deploy_setting!r} is not one of the settings "
                             f"({', '.join(self.settings)})")
        if self.source is None and set(self.strategies) != {"scratch"}:
            raise ValueError("source: missing (every strategy but scratch pretrains on it)")
        if self.prepare is not None and self.prepare.sim_input and set(self.strategies) != {"scratch"}:
            raise ValueError("prepare.sim_input makes the simulation a driver, not a source: strategies must be "
                             "[scratch]")
        return self

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in STRATEGIES]
        if bad:
            raise ValueError(f"unknown strategies {bad}; known: {', '.join(STRATEGIES)}")
        return v

    @field_validator("strategy_params")
    @classmethod
    def _strategy_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each strategy's parameters against its own class, before the baseline or any run starts."""
        for name, params in v.items():
            if name not in STRATEGIES:
                raise KeyedValueError(name, f"unknown strategy (known: {', '.join(STRATEGIES)})")
            check_params(STRATEGIES[name].Params, params, prefix=name)
        return v

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 1 for f in v):
            raise ValueError("fractions must be in (0, 1]")
        return v

    def resolved(self) -> ExperimentConfig:
        """Store paths with ``{output_dir}`` filled in."""
        out = self.output_dir
        return self.model_copy(update={
            "source": None if self.source is None else
            self.source.model_copy(update={"store": self.source.store.replace(OUTPUT_DIR_TOKEN, out)}),
            "target": self.target.model_copy(update={"store": self.target.store.replace(OUTPUT_DIR_TOKEN, out)}),
        })


def _log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def prepare_stores(cfg: ExperimentConfig, log: Callable[[str], None] = _log) -> None:
    """Run ``simulate sites`` and ``prepare sites`` for the stores that are missing (``prepare`` section)."""
    from xmw_ray.data.site_store import prepare_sites
    from xmw_ray.data.tower_features import SIM_MARKER
    from xmw_ray.sim.site_forcing import simulate_sites

    if cfg.prepare is None:
        for sec in (s for s in (cfg.source, cfg.target) if s is not None):
            if not Path(sec.store).exists() and not is_url(sec.store):
                raise XmwInputError(f"{sec.store}: store not found (run xmw simulate / xmw prepare first, see the "
                                    "config's header)")
        return
    prep = cfg.prepare
    forcing = Path(prep.forcing)
    if not forcing.is_dir():
        raise XmwInputError(f"{forcing}: prepare.forcing folder not found")
    sim_files = Path(cfg.output_dir) / "prepared" / "simulated-sites"
    need_source = cfg.source is not None and not prep.sim_input and not Path(cfg.source.store).exists()
    need_target = not Path(cfg.target.store).exists()
    if (need_source or (need_target and prep.sim_input)) and not (sim_files / "FLUXNET-CH4" / SIM_MARKER).is_file():
        log(f"simulating towers at {forcing}'s forcing -> {sim_files}")
        simulate_sites(forcing, sim_files, log=log)
    if need_source:
        prepare_sites(sim_files, cfg.source.store, drivers=prep.drivers, progress=log)
    if need_target:
        log(f"preparing observations {forcing} -> {cfg.target.store}")
        prepare_sites(forcing, cfg.target.store, drivers=prep.drivers,
                      sim_sites=sim_files if prep.sim_input else None, progress=log)


def run_key(strategy: str, model: str, setting: str, fraction: float, seed: int) -> str:
    return f"{strategy}-{model}-{setting}-f{fraction:g}-s{seed}"


def _load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _arrays(info, spec: SplitSpec, part: str) -> dict[str, np.ndarray]:
    batches = list(sample_dataset(info, spec, part).iter_batches(batch_size=None, batch_format="numpy"))
    if not batches:
        raise XmwInputError(f"{info.path}: split part {part!r} holds no sample")
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def gbt_row(cfg: ExperimentConfig, setting: str, spec: SplitSpec, fraction: float, seed: int) -> dict[str, Any]:
    """Fit the trees on the observations' training split (training + validation parts), score on test."""
    info = store_info(cfg.target.store, cfg.target.source)
    train = [_arrays(info, spec, p) for p in (("train", "val") if spec.val_fraction > 0 else ("train",))]
    dyn = np.concatenate([t[schema.DYNAMIC] for t in train])
    stat = np.concatenate([t[schema.STATIC] for t in train])
    y = np.concatenate([t[schema.TARGET] for t in train])
    model = GBTBaseline(**{"random_state": seed, **(cfg.baseline or {})}).fit(dyn, stat, y)
    test = _arrays(info, spec, "test")
    acc = MetricAccumulator("daily")
    acc.update(model.predict(test[schema.DYNAMIC], test[schema.STATIC]), test[schema.TARGET], test[schema.ENTITY])
    return {"model": "gbt", "setting": setting, "fraction": fraction, "seed": seed, "strategy": "gbt",
            **acc.result()["pooled"], "val_nse": float("nan"), "checkpoint": ""}


def run_experiment(cfg: ExperimentConfig, log: Callable[[str], None] = _log) -> dict[str, Path]:
    """Run every missing combination, then write the tables, the plot and ``<output_dir>/best``."""
    cfg = cfg.resolved()
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    prepare_stores(cfg, log)
    if cfg.source is not None:  # refused before any Ray work (the trees would start Ray first)
        check_layouts(store_info(cfg.source.store, cfg.source.source), store_info(cfg.target.store, cfg.target.source))
    results = out / RESULTS_FILE
    rows = _load_rows(results)
    done = {r["key"] for r in rows}
    for model in cfg.models:
        for setting, base_spec in cfg.settings.items():
            for fraction in cfg.fractions:
                for seed in cfg.seeds:
                    spec = base_spec.model_copy(update={"fraction": fraction, "seed": seed})
                    has_test = spec.kind != "all"
                    if cfg.baseline is not None and has_test:
                        key = run_key("gbt", "gbt", setting, fraction, seed)
                        if key not in done:
                            row = {"key": key, **gbt_row(cfg, setting, spec, fraction, seed)}
                            _append_row(results, row)
                            rows.append(row)
                            done.add(key)
                    for strategy in cfg.strategies:
                        key = run_key(strategy, model.name, setting, fraction, seed)
                        if key in done:
                            continue
                        log(f"run {key}")
                        job = TransferJob(
                            source=cfg.source, target=cfg.target.model_copy(update={"split": spec}), model=model,
                            optim=cfg.optim, pretrain_optim=cfg.pretrain_optim, resources=cfg.resources,
                            run=RunSection(name=key, output_dir=str(out / "runs"), seed=seed,
                                           checkpoint_every=cfg.checkpoint_every),
                            params=cfg.strategy_params.get(strategy, {}))
                        outcome = run_ensemble(get_strategy(strategy), job, cfg.ensemble)
                        pooled = (evaluate_checkpoint(str(outcome.best_checkpoint), cfg.target.store, "test")["pooled"]
                                  if has_test else NO_TEST)
                        row = {"key": key, "model": model.name, "setting": setting, "fraction": fraction,
                               "seed": seed, "strategy": strategy, **pooled,
                               "val_nse": outcome.metrics.get("val_nse", float("nan")),
                               "checkpoint": str(outcome.best_checkpoint)}
                        _append_row(results, row)
                        rows.append(row)
                        done.add(key)
                        log(f"  test NSE {row['nse']:.3f} (val NSE {row['val_nse']:.3f})")
    scored = [{k: v for k, v in r.items() if k != "key"} for r in rows if r.get("setting") != cfg.deploy_setting]
    paths = write_results(scored, out)
    paths["best"] = _copy_best(rows, out, cfg.deploy_setting)
    return paths


def best_row(rows: list[dict[str, Any]], deploy_setting: str | None = None) -> dict[str, Any] | None:
    """The run with the highest VALIDATION NSE (never test); with ``deploy_setting``, that run's strategy, model
    and fraction as trained in the deploy setting (same seed when there, else its first seed). A lone
    candidate (one strategy, model and fraction) needs no validation score."""
    runs = [r for r in rows if r.get("checkpoint")]
    pool = [r for r in runs if r.get("setting") != deploy_setting] if deploy_setting else runs
    scored = [r for r in pool if r.get("val_nse") == r.get("val_nse")]
    if scored:
        chosen = max(scored, key=lambda r: r["val_nse"])
    elif len({(r["strategy"], r["model"], r["fraction"]) for r in pool}) == 1:
        chosen = pool[0]
    else:
        return None
    if deploy_setting is None:
        return chosen
    same = [r for r in runs if r.get("setting") == deploy_setting
            and (r["strategy"], r["model"], r["fraction"]) == (chosen["strategy"], chosen["model"], chosen["fraction"])]
    same.sort(key=lambda r: (r["seed"] != chosen["seed"], r["seed"]))
    return same[0] if same else None


def _copy_best(rows: list[dict[str, Any]], out: Path, deploy_setting: str | None = None) -> Path:
    """:func:`best_row`'s checkpoint → ``<output_dir>/best`` (copied aside, swapped in atomically)."""
    best = out / BEST_DIR
    row = best_row(rows, deploy_setting)
    if row is None:
        return best
    return publish_dir(row["checkpoint"], best)
