"""The residual-learning model: a frozen simulation model plus a model of the observation residual.

``forward = sim(drivers) + target_std · head(embed(drivers))`` (with ``output_constraint="softplus"``, that sum
passed through the base class's softplus, so the corrected flux stays >= 0): the simulation part keeps its own normalisation
buffers (the source's training statistics), the residual part normalises with this model's buffers (the
observations' training statistics) and is scaled by the observations' target std. Registered as ``residual``
so a checkpoint of it loads, evaluates and infers like any other model.

Both parts make missing and out-of-range inputs safe the same way (``XmwModel.normalize_inputs``): the simulation
part with its own ``input_clip`` (in ``base``), the residual part with this model's ``input_clip``, or, when that is
unset, the one in ``residual`` (where a transfer job's model parameters put it). ``static_inputs: false`` in either
this model's or the ``residual`` part's parameters holds the residual part's static inputs at their mean; the
simulation part follows its own ``base`` parameters (a transfer job gives both parts the same model parameters).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from xmw_ray.models.base import HParams, XmwModel
from xmw_ray.models.registry import build_model, register


class ResidualModelParams(HParams):
    base: dict[str, Any] = Field(description="the frozen simulation model: {'name': ..., **hyper-parameters}")
    residual: dict[str, Any] = Field(description="the residual model: {'name': ..., **hyper-parameters}")

    @field_validator("base", "residual")
    @classmethod
    def _named(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "name" not in v:
            raise ValueError("needs a 'name'")
        if v["name"] == "residual":
            raise ValueError("cannot nest a residual model")
        return v

    @model_validator(mode="after")
    def _one_clip(self) -> ResidualModelParams:
        inner = self.residual.get("input_clip")
        if self.input_clip is not None and inner is not None and inner != self.input_clip:
            raise ValueError(f"input_clip={self.input_clip} disagrees with residual.input_clip={inner}")
        return self


@register("residual")
class ResidualModel(XmwModel):
    """Frozen ``sim`` + trainable ``encoder``/``head`` on the observation residual; prediction is the sum."""

    Params = ResidualModelParams
    test_params: ClassVar[dict[str, Any]] = {
        "base": {"name": "lstm", "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
        "residual": {"name": "lstm", "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
    }

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: ResidualModelParams = self.hp  # type: ignore[assignment]
        base, res = dict(hp.base), dict(hp.residual)
        self.sim = build_model(base.pop("name"), self.n_dynamic, self.n_static, **base)
        for p in self.sim.parameters():
            p.requires_grad_(False)
        inner = build_model(res.pop("name"), self.n_dynamic, self.n_static, **res)
        if self.input_clip is None:
            self.input_clip = inner.input_clip
        self.static_inputs = self.static_inputs and inner.static_inputs
        return inner.encoder, inner.embedding_size

    def train(self, mode: bool = True) -> ResidualModel:
        """The simulation part always stays in evaluation mode (no dropout): it is frozen."""
        super().train(mode)
        self.sim.eval()
        return self

    def predict_unconstrained(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """The simulation (its own constraint applied) plus the correction; this model's ``output_constraint``
        then applies to the sum, so a ``softplus`` residual model is >= 0 whatever the correction."""
        sim = (self.sim(dynamic, static) - self.target_mean) / self.target_std
        return sim + self.head(self.embed(dynamic, static)).squeeze(-1)
