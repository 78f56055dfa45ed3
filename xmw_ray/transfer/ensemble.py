"""Seed ensembles of one transfer run: K members that differ only in their seed, averaged into one checkpoint.

Why: with ~50 tower-years, one network's skill on an unseen tower swings with its seed; the mean of a few
members is steadier (``bench/real_towers.py`` measures both). Member ``k`` of a run with seed ``s`` trains with
seed ``s * MEMBER_SEED_STRIDE + k`` under the run name ``<name>-m<k>``; the ensemble checkpoint is
``<output_dir>/<name>/best`` and loads, evaluates and infers like any single model's.
"""

from __future__ import annotations

import math
from typing import Any

from xmw_ray.config import ExperimentConfig
from xmw_ray.models.checkpoint import BEST_DIR, write_ensemble_checkpoint
from xmw_ray.storage import local_run_dir
from xmw_ray.train.evaluate import evaluate_checkpoint
from xmw_ray.train.runner import TrainOutcome
from xmw_ray.transfer.base import Strategy

MEMBER_SEED_STRIDE = 100


def member_config(cfg: ExperimentConfig, k: int) -> ExperimentConfig:
    """The run of member ``k``: its own run name and seed, everything else shared."""
    run = cfg.run.model_copy(update={"name": f"{cfg.run.name}-m{k}",
                                     "seed": cfg.run.seed * MEMBER_SEED_STRIDE + k})
    return cfg.model_copy(update={"run": run})


def run_ensemble(strategy: Strategy, cfg: ExperimentConfig, params: dict[str, Any], members: int) -> TrainOutcome:
    """Train ``members`` seeds of the run ``cfg`` with ``strategy`` and average them (``members == 1``: the plain
    run)."""
    if members == 1:
        return strategy.run(cfg, params)
    outcomes = [strategy.run(member_config(cfg, k), params) for k in range(members)]
    out = local_run_dir(cfg.run.output_dir, cfg.run.name) / BEST_DIR
    write_ensemble_checkpoint([o.best_checkpoint for o in outcomes], out, {"members": members})
    return TrainOutcome(run_dir=out.parent, best_checkpoint=out, metrics={"val_nse": _val_nse(str(out), cfg)}, history=[])


def _val_nse(checkpoint: str, cfg: ExperimentConfig) -> float:
    """The ensemble's own validation NSE (NaN when the split carves no validation part)."""
    if cfg.data.split.val_fraction == 0:
        return math.nan
    report = evaluate_checkpoint(checkpoint, cfg.data.store, "val")
    return float(report["pooled"]["nse"]) if report["pooled"].get("n") else math.nan
