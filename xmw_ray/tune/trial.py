"""The per-trial driver function (Train V2 style): turn a suggested config into a training run and fit it,
with ``TuneReportCallback`` relaying each epoch's report to Tune (ASHA and Optuna read ``val_nse``). In a transfer
trial only the final (observation) phase reports, so the score is the observations' validation NSE.

A trial's training run is named by its Tune trial id, so a restarted trial (Tune retry or resumed search)
continues from its own last checkpoint instead of starting over.
"""

from __future__ import annotations

from typing import Any

from xmw_ray.config import ModelSection, OptimSection, RunSection, TrainConfig
from xmw_ray.storage import run_path
from xmw_ray.tune.config import NO_TRANSFER, TuneConfig
from xmw_ray.tune.space import model_params, strategy_params

#: Sub-folder of the search's folder that holds every trial's training run.
TRIALS_DIR = "trials"


def trials_root(cfg: TuneConfig) -> str:
    """Shared storage of the trials' training runs: ``<run.output_dir>/<search name>/trials``."""
    return run_path(cfg.run.output_dir, cfg.run.name, TRIALS_DIR)


def trial_optim(cfg: TuneConfig, params: dict[str, Any]) -> OptimSection:
    return cfg.optim.model_copy(update={"lr": float(params["lr"]), "weight_decay": float(params["weight_decay"])})


def trial_run(cfg: TuneConfig, trial_id: str) -> RunSection:
    return RunSection(name=trial_id, output_dir=trials_root(cfg), seed=cfg.run.seed,
                      max_failures=cfg.run.max_failures, keep_checkpoints=cfg.run.keep_checkpoints)


def trial_model(cfg: TuneConfig, params: dict[str, Any]) -> ModelSection:
    return ModelSection(name=params["model"], params=model_params(params, cfg.search))


def trial_train_config(cfg: TuneConfig, params: dict[str, Any], trial_id: str) -> TrainConfig:
    """The plain training run of a ``strategy: none`` trial."""
    return TrainConfig(data=cfg.data, model=trial_model(cfg, params), optim=trial_optim(cfg, params),
                       resources=cfg.resources, run=trial_run(cfg, trial_id))


def trial_transfer_job(cfg: TuneConfig, params: dict[str, Any], trial_id: str) -> Any:
    """The TransferJob of a transfer trial (source → ``data`` as target)."""
    from xmw_ray.transfer.base import TransferJob

    return TransferJob(source=cfg.source, target=cfg.data, model=trial_model(cfg, params),
                       optim=trial_optim(cfg, params), pretrain_optim=cfg.pretrain_optim or cfg.optim,
                       resources=cfg.resources, run=trial_run(cfg, trial_id), params=strategy_params(params))


def run_trial(params: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune trainable: ``params`` from OptunaSearch, ``settings`` the search's TuneConfig as a dict."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = TuneConfig.model_validate(settings)
    trial_id = tune.get_context().get_trial_id()
    callbacks = [TuneReportCallback()]
    if params["strategy"] == NO_TRANSFER:
        from xmw_ray.train.runner import run_training

        run_training(trial_train_config(cfg, params, trial_id), callbacks=callbacks)
    else:
        from xmw_ray.transfer.registry import get_strategy

        get_strategy(params["strategy"]).run(trial_transfer_job(cfg, params, trial_id), callbacks=callbacks)
