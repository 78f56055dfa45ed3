"""``residual``: a frozen simulation model plus a model trained on the observation residual; prediction = sum.

The simulation model is the cached source pretraining; the saved model is the registered ``residual`` wrapper
(``xmw_ray/models/residual.py``), so evaluation and inference load it like any other checkpoint.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from xmw_ray.config import ExperimentConfig, ModelSection
from xmw_ray.data.ray_datasets import build_datasets
from xmw_ray.models import build_model
from xmw_ray.models.checkpoint import load_checkpoint_model
from xmw_ray.train.runner import TrainOutcome, run_training
from xmw_ray.transfer.base import (
    StrategyParams,
    model_state,
    pretrain_source,
    require_source,
    target_config,
    validate_params,
)


class ResidualParams(StrategyParams):
    residual_model: dict[str, Any] | None = Field(
        None, description="{'name': ..., **hyper-parameters} of the residual model (default: the run's model)")


class Residual:
    name = "residual"
    Params = ResidualParams
    search_space = None  # the residual model's own size is the searched model's

    def run(self, cfg: ExperimentConfig, params: dict[str, Any], callbacks: list | None = None) -> TrainOutcome:
        checked = validate_params(self.Params, params, self.name)
        require_source(cfg, self.name)
        sim_ckpt = pretrain_source(cfg)
        # the simulation part exactly as pretrained (its output constraint included: ``auto`` resolved there)
        base = {k: v for k, v in load_checkpoint_model(sim_ckpt).config().items()
                if k not in ("n_dynamic", "n_static")}
        res = checked.residual_model or {"name": cfg.model.name, **cfg.model.params}
        section = ModelSection(name="residual", params={"base": base, "residual": res},
                               output_constraint=cfg.model.output_constraint)
        ds = build_datasets(cfg.data)
        model = build_model("residual", ds.n_dynamic, ds.n_static, norm=ds.norm, **section.params)
        model.sim.load_state_dict(model_state(sim_ckpt))
        return run_training(target_config(cfg, model=section), datasets=ds, init_state=model.state_dict(),
                            freeze=["sim"], callbacks=callbacks)
