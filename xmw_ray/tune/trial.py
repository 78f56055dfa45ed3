"""The per-trial driver function (Train V2 style): turn a suggested config into a training run and fit it,
with ``TuneReportCallback`` relaying each epoch's report to Tune (ASHA and Optuna read ``val_nse``). In a transfer
trial only the final (observation) phase reports, so the score is the observations' validation NSE.

A trial's training run is named by its Tune trial id, so a restarted trial (Tune retry or resumed search)
continues from its own last checkpoint instead of starting over.
"""

from __future__ import annotations

from typing import Any

from xmw_ray.config import NO_TRANSFER, ExperimentConfig, ModelSection
from xmw_ray.storage import run_path
from xmw_ray.tune.space import model_params, strategy_params

#: Sub-folder of the search's folder that holds every trial's training run.
TRIALS_DIR = "trials"


def trials_root(cfg: ExperimentConfig) -> str:
    """Shared storage of the trials' training runs: ``<run.output_dir>/<search name>/trials``."""
    return run_path(cfg.run.output_dir, cfg.run.name, TRIALS_DIR)


def trial_config(cfg: ExperimentConfig, params: dict[str, Any], trial_id: str) -> ExperimentConfig:
    """The search's config as one trial's: the suggested model and learning rates, the run named by the trial."""
    assert cfg.search is not None
    optim = cfg.optim.model_copy(update={"lr": float(params["lr"]), "weight_decay": float(params["weight_decay"])})
    run = cfg.run.model_copy(update={"name": trial_id, "output_dir": trials_root(cfg)})
    model = ModelSection(name=params["model"], params=model_params(params, cfg.search))
    return cfg.model_copy(update={"model": model, "optim": optim, "run": run})


def run_trial(params: dict[str, Any], cfg: ExperimentConfig) -> None:
    """Tune trainable: ``params`` from OptunaSearch, ``cfg`` the search's validated config."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial = trial_config(cfg, params, tune.get_context().get_trial_id())
    callbacks = [TuneReportCallback()]
    if params["strategy"] == NO_TRANSFER:
        from xmw_ray.train.runner import run_training

        run_training(trial.training(), callbacks=callbacks)
    else:
        from xmw_ray.transfer.registry import get_strategy

        get_strategy(params["strategy"]).run(trial, strategy_params(params), callbacks=callbacks)
