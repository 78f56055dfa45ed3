"""Seed ensembles of one transfer run: K members that differ only in their seed, averaged into one checkpoint.

Why: with ~50 tower-years, one network's skill on an unseen tower swings with its seed; the mean of a few
members is steadier (``bench/real_towers.py`` measures both). Member ``k`` of a run with seed ``s`` trains with
seed ``s * MEMBER_SEED_STRIDE + k`` under the run name ``<name>-m<k>``; the ensemble checkpoint is
``<output_dir>/<name>/best`` and loads, evaluates and infers like any single model's.
"""

from __future__ import annotations

import math

from xmw_ray.models.checkpoint import write_ensemble_checkpoint
from xmw_ray.storage import local_run_dir
from xmw_ray.train.evaluate import evaluate_checkpoint
from xmw_ray.train.runner import BEST_DIR, TrainOutcome
from xmw_ray.transfer.base import Strategy, TransferJob

MEMBER_SEED_STRIDE = 100


def member_job(job: TransferJob, k: int) -> TransferJob:
    """The job of member ``k``: its own run name and seed, everything else shared."""
    run = job.run.model_copy(update={"name": f"{job.run.name}-m{k}",
                                     "seed": job.run.seed * MEMBER_SEED_STRIDE + k})
    return job.model_copy(update={"run": run})


def run_ensemble(strategy: Strategy, job: TransferJob, members: int) -> TrainOutcome:
    """Train ``members`` seeds of ``job`` with ``strategy`` and average them (``members == 1``: the plain run)."""
    if members == 1:
        return strategy.run(job)
    outcomes = [strategy.run(member_job(job, k)) for k in range(members)]
    out = local_run_dir(job.run.output_dir, job.run.name) / BEST_DIR
    write_ensemble_checkpoint([o.best_checkpoint for o in outcomes], out, {"members": members})
    return TrainOutcome(run_dir=out.parent, best_checkpoint=out, metrics={"val_nse": _val_nse(str(out), job)}, history=[])


def _val_nse(checkpoint: str, job: TransferJob) -> float:
    """The ensemble's own validation NSE (NaN when the split carves no validation part)."""
    if job.target.split.val_fraction == 0:
        return math.nan
    report = evaluate_checkpoint(checkpoint, job.target.store, "val")
    return float(report["pooled"]["nse"]) if report["pooled"].get("n") else math.nan
