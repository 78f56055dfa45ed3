"""Tuner setup: resource arithmetic, OptunaSearch + ASHA, time budget, two-level fault tolerance, resume,
and the search's results (leaderboard, plots, best checkpoint).

Resources: a trial is a small driver (``search.driver_cpus``) that starts a TorchTrainer whose workers are
scheduled outside the trial's own reservation, so Tune alone would start as many trials as driver slots fit and
their workers would then wait forever. The concurrency is therefore derived here from the whole footprint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmw_ray import console
from xmw_ray.config import ExperimentConfig
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import is_url, run_path
from xmw_ray.train.resources import DATA_CPUS
from xmw_ray.train.results import ResultRow
from xmw_ray.tune.cleanup import WorkerGroupSweeper
from xmw_ray.tune.leaderboard import RANK_METRIC, RANK_MODE
from xmw_ray.tune.progress import TrialProgress
from xmw_ray.tune.space import DefineByRun, covering_points

#: ASHA and Optuna judge trials on what the leaderboard ranks them by: the scale-free validation NSE.
METRIC, MODE = RANK_METRIC, RANK_MODE


def trial_footprint(cfg: ExperimentConfig) -> dict[str, float]:
    """What one running trial holds: its driver plus its TorchTrainer workers."""
    res = cfg.resources
    need = {"CPU": cfg.search.driver_cpus + res.num_workers * res.cpus_per_worker}
    if res.use_gpu:
        need["GPU"] = float(res.num_workers)
    return need


def max_concurrent_trials(cfg: ExperimentConfig, cluster: dict[str, float]) -> int:
    """How many trials run at once: every footprint fits, with ``DATA_CPUS`` left for Ray Data's tasks.
    Raises ``XmwInputError`` (never waits) when not even one trial fits."""
    need = trial_footprint(cfg)
    fits = []
    for key, amount in need.items():
        have = float(cluster.get(key, 0.0)) - (DATA_CPUS if key == "CPU" else 0.0)
        fits.append(math.floor(have / amount + 1e-9))
    n = min(fits)
    if n < 1:
        res = cfg.resources
        asked = ", ".join(f"{v:g} {k}" for k, v in need.items())
        have = ", ".join(f"{cluster.get(k, 0.0):g} {k}" for k in need)
        raise XmwInputError(
            f"resources: one trial needs {asked} ({cfg.search.driver_cpus:g} CPU driver + {res.num_workers} "
            f"worker(s) x {res.cpus_per_worker:g} CPU{' + 1 GPU' if res.use_gpu else ''}) plus {DATA_CPUS:g} CPU "
            f"for Ray Data, but the cluster has {have}; lower resources.num_workers / resources.cpus_per_worker / "
            f"search.driver_cpus, or add nodes (search.cluster for an autoscaling cluster)")
    n = min(n, cfg.search.num_samples)
    if cfg.search.max_concurrent_trials is not None:
        n = min(n, cfg.search.max_concurrent_trials)
    return n


def with_absolute_stores(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config with local store paths made absolute against the launching directory: Tune runs each trial in
    its own working directory (the trial folder), where a relative ``demo/sites`` names nothing."""
    def absolute(section: Any) -> Any:
        if section is None or is_url(section.store):
            return section
        return section.model_copy(update={"store": str(Path(section.store).resolve())})

    return cfg.model_copy(update={"data": absolute(cfg.data), "source": absolute(cfg.source)})


def experiment_path(cfg: ExperimentConfig) -> str:
    return run_path(cfg.run.output_dir, cfg.run.name)


def _trainable(cfg: ExperimentConfig) -> Any:
    from ray import tune

    from xmw_ray.tune.trial import run_trial

    fn = tune.with_parameters(run_trial, cfg=cfg)  # the validated config itself, not a dict
    return tune.with_resources(fn, {"CPU": cfg.search.driver_cpus})


def build_tuner(cfg: ExperimentConfig, concurrency: int) -> Any:
    """A fresh Tuner: OptunaSearch (define-by-run) + ASHA on the validation NSE, budget, retries."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from xmw_ray.train.runner import run_storage
    from xmw_ray.tune.trust import PlainTextErrors, RunSigner

    s = cfg.search
    storage_fs, storage_path = run_storage(cfg.run.output_dir)
    searcher = OptunaSearch(space=DefineByRun(s), metric=METRIC, mode=MODE, seed=s.seed,
                            points_to_evaluate=covering_points(s) or None)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=cfg.optim.epochs,
                              grace_period=min(s.grace_period, cfg.optim.epochs), reduction_factor=s.reduction_factor)
    return tune.Tuner(
        _trainable(cfg),
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    num_samples=s.num_samples, max_concurrent_trials=concurrency,
                                    time_budget_s=s.time_budget_s),
        run_config=tune.RunConfig(name=cfg.run.name, storage_path=storage_path, storage_filesystem=storage_fs,
                                  failure_config=tune.FailureConfig(max_failures=s.max_trial_failures),
                                  callbacks=[WorkerGroupSweeper(), PlainTextErrors(), RunSigner(experiment_path(cfg)),
                                             TrialProgress(s.num_samples)], verbose=1),
    )


def restore_or_build(cfg: ExperimentConfig, concurrency: int) -> tuple[Any, bool]:
    """Resume the search stored under ``run.name`` if there is one (finished trials are kept, unfinished and
    errored ones continue from their checkpoints), else start it. A stored search is resumed only when its
    signature (``trust.verify_run``) proves this installation wrote it: restoring unpickles its files."""
    from ray import tune

    from xmw_ray.train.runner import run_storage
    from xmw_ray.tune.trust import verify_run

    storage_fs, path = run_storage(experiment_path(cfg))
    if tune.Tuner.can_restore(path, storage_filesystem=storage_fs):  # looks for tuner.pkl, loads nothing
        verify_run(experiment_path(cfg))
        return tune.Tuner.restore(path, trainable=_trainable(cfg), resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=storage_fs), True
    return build_tuner(cfg, concurrency), False


@dataclass
class SearchOutcome:
    """What a search leaves: the leaderboard rows (best first), its files, and the best checkpoint."""

    path: str
    rows: list[ResultRow]
    files: dict[str, str]
    best_checkpoint: str | None
    resumed: bool
    wall_s: float


def run_search(cfg: ExperimentConfig, *, cluster: dict[str, float] | None = None) -> SearchOutcome:
    """Run (or resume) the search, then write the leaderboard, plots and ``best`` checkpoint. Whatever the search
    leaves (finished, failed or interrupted by Ctrl-C) is signed at the end, so a later launch may resume it."""
    import ray

    from xmw_ray.data.stores import check_trains_on_store, store_info
    from xmw_ray.models.checkpoint import BEST_DIR, refuse_foreign_checkpoint
    from xmw_ray.train.runner import ensure_ray
    from xmw_ray.tune.leaderboard import collect_rows, write_results
    from xmw_ray.tune.trust import refuse_planted_state, sign_run

    cfg = with_absolute_stores(cfg)
    if not is_url(experiment_path(cfg)):  # the leaderboard's ``best`` replaces an earlier one, nothing else
        refuse_foreign_checkpoint(Path(experiment_path(cfg)) / BEST_DIR)
    refuse_planted_state(experiment_path(cfg))
    source = cfg.source if cfg.strategies_on_source() else None  # unread when every strategy is scratch
    for key, section in (("data", cfg.data), ("source", source)):  # every trial reads them: check them once
        if section is not None:
            check_trains_on_store(store_info(section.store, section.source), section.split, f"{key}.split")
    ensure_ray()
    have = cluster or cfg.search.cluster or ray.cluster_resources()
    concurrency = max_concurrent_trials(cfg, have)
    t0 = time.perf_counter()
    tuner, resumed = restore_or_build(cfg, concurrency)
    console.err(f"xmw tune: {'resuming' if resumed else 'starting'} search {cfg.run.name!r} at "
                f"{experiment_path(cfg)} ({cfg.search.num_samples} trials, up to {concurrency} at once)")
    try:
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        rows = collect_rows(grid, cfg)
        files, best = write_results(rows, cfg, experiment_path(cfg))
    finally:  # this process wrote (or verified) everything there: sign it
        sign_run(experiment_path(cfg))
    return SearchOutcome(path=experiment_path(cfg), rows=rows, files=files, best_checkpoint=best,
                         resumed=resumed, wall_s=wall)
