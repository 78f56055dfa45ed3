"""``finetune``: pretrain on the simulations, then train on the observations from those weights.

All layers train, or the parts named in ``freeze`` (``encoder``, ``head``) stay fixed; ``lr_scale`` multiplies
the observation phase's learning rate. The pretrained model's normalisation buffers are kept (see ``base``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from xmw_ray.config import ExperimentConfig
from xmw_ray.train.runner import TrainOutcome, run_training
from xmw_ray.transfer.base import (
    StrategyParams,
    model_state,
    pretrain_source,
    require_source,
    target_config,
    validate_params,
)

FREEZABLE = ("encoder", "head")


class FinetuneParams(StrategyParams):
    freeze: list[str] = Field(default_factory=list, description="model parts kept fixed: encoder, head")
    lr_scale: float = Field(1.0, gt=0.0, le=10.0, description="observation-phase lr = optim.lr × lr_scale")

    @field_validator("freeze")
    @classmethod
    def _parts(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in FREEZABLE]
        if bad:
            raise ValueError(f"unknown part(s) {bad}; freezable: {', '.join(FREEZABLE)}")
        if set(v) == set(FREEZABLE):
            raise ValueError("freezing every part leaves nothing to train")
        return v


def finetune_space(t: Any, p: str) -> dict[str, Any]:
    """Search range of ``FinetuneParams``: freeze nothing or the encoder, observation-phase lr 0.1-1 x."""
    frozen = t.suggest_categorical(p + "freeze", ["none", "encoder"])
    return {"freeze": [] if frozen == "none" else [frozen],
            "lr_scale": t.suggest_float(p + "lr_scale", 0.1, 1.0, log=True)}


def finetune_from(cfg: ExperimentConfig, checkpoint: Path, params: FinetuneParams,
                  callbacks: list | None = None) -> TrainOutcome:
    """The observation phase started from ``checkpoint``'s weights and statistics."""
    optim = cfg.optim.model_copy(update={"lr": cfg.optim.lr * params.lr_scale})
    return run_training(target_config(cfg, optim=optim), init_state=model_state(checkpoint),
                        freeze=list(params.freeze), callbacks=callbacks)


class Finetune:
    name = "finetune"
    Params = FinetuneParams
    search_space = staticmethod(finetune_space)

    def run(self, cfg: ExperimentConfig, params: dict[str, Any], callbacks: list | None = None) -> TrainOutcome:
        checked = validate_params(self.Params, params, self.name)
        require_source(cfg, self.name)
        return finetune_from(cfg, pretrain_source(cfg), checked, callbacks)
