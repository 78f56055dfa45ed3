"""``scratch``: observations only (the reference every transfer strategy must beat)."""

from __future__ import annotations

from typing import Any

from xmw_ray.config import ExperimentConfig
from xmw_ray.train.runner import TrainOutcome, run_training
from xmw_ray.transfer.base import StrategyParams, target_config, validate_params


class ScratchParams(StrategyParams):
    """No hyper-parameters: the model, optimiser and split say everything."""


class Scratch:
    name = "scratch"
    Params = ScratchParams
    search_space = None

    def run(self, cfg: ExperimentConfig, params: dict[str, Any], callbacks: list | None = None) -> TrainOutcome:
        validate_params(self.Params, params, self.name)
        return run_training(target_config(cfg), callbacks=callbacks)
