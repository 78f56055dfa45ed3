"""The ensemble model: the mean flux of several trained models, saved and loaded as one checkpoint.

Why: a small network's skill on an unseen tower swings with its seed; the mean of a few seeds is steadier.
An ensemble is assembled from trained members (``ensemble_from_models``) and never trained itself: it has no
encoder, head or statistics of its own (each member keeps its own normalisation buffers and ``input_clip``), so
``forward`` (flux units) is its one view and ``embed``/``forward_normalized`` raise. Registered as ``ensemble``
so its checkpoint loads, evaluates and infers like any other model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from xmw_ray.errors import XmwInputError
from xmw_ray.models.base import HParams, XmwModel
from xmw_ray.models.registry import build_model, register

if TYPE_CHECKING:
    from xmw_ray.data.normstats import NormStats

#: Set by the ensemble for every member, so a member's dict must not carry them.
_SHARED_KEYS = ("n_dynamic", "n_static", "norm")


class EnsembleParams(HParams):
    members: list[dict[str, Any]] = Field(
        min_length=1, description="the members: [{'name': ..., **hyper-parameters}, ...] (no nested ensembles)"
    )

    @field_validator("members")
    @classmethod
    def _plain_members(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, member in enumerate(v):
            if "name" not in member:
                raise ValueError(f"member {i} needs a 'name'")
            if member["name"] == "ensemble":
                raise ValueError(f"member {i}: cannot nest an ensemble")
            shared = [k for k in _SHARED_KEYS if k in member]
            if shared:
                raise ValueError(f"member {i}: {shared[0]!r} is the ensemble's, not a member's")
        return v

    @model_validator(mode="after")
    def _no_own_clip(self) -> EnsembleParams:
        if self.input_clip is not None:
            raise ValueError("input_clip belongs to each member: an ensemble normalises nothing itself")
        if self.output_constraint != "none":
            raise ValueError("output_constraint belongs to each member: the mean of members >= 0 is >= 0")
        if not self.static_inputs:
            raise ValueError("static_inputs belongs to each member: an ensemble normalises nothing itself")
        return self


def _not_trainable(view: str) -> XmwInputError:
    return XmwInputError(
        f"ensemble: {view} is undefined (an ensemble averages trained members' flux and is never trained; "
        "use forward, or a member)"
    )


@register("ensemble")
class EnsembleModel(XmwModel):
    """``forward`` = the mean of the members' ``forward`` (mg CH4 m-2 d-1)."""

    Params = EnsembleParams
    test_params: ClassVar[dict[str, Any]] = {
        "members": [
            {"name": "lstm", "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
            {"name": "gru", "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
        ]
    }

    def __init__(self, n_dynamic: int, n_static: int, **hparams: Any) -> None:
        super().__init__(n_dynamic, n_static, **hparams)
        # No trunk, head or statistics of its own: only the members' parts and buffers exist.
        for name in ("encoder", "head", "embedding_size", *list(self._buffers)):
            delattr(self, name)

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: EnsembleParams = self.hp  # type: ignore[assignment]
        self.members = nn.ModuleList(
            build_model(n_dynamic=self.n_dynamic, n_static=self.n_static, **member) for member in hp.members
        )
        return nn.Identity(), 1  # the base class's trunk and head, removed again in ``__init__``

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        self._check_inputs(dynamic, static)
        return torch.stack([member(dynamic, static) for member in self.members]).mean(dim=0)

    def embed(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        raise _not_trainable("embed")

    def forward_normalized(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        raise _not_trainable("forward_normalized")

    def normalize_target(self, target: torch.Tensor) -> torch.Tensor:
        raise _not_trainable("normalize_target")

    def set_normalization(self, stats: NormStats | Mapping[str, Any]) -> None:
        """Give every member these statistics (what ``build_model(..., norm=...)`` means for an ensemble)."""
        for member in self.members:
            member.set_normalization(stats)

    def normalization(self) -> dict[str, dict[str, Any]]:
        """The members' statistics when they all share them (members trained on one split do)."""
        first, *rest = (member.normalization() for member in self.members)
        if any(other != first for other in rest):
            raise XmwInputError("ensemble: members have different normalisation statistics; read each member's")
        return first


def ensemble_from_models(models: Sequence[XmwModel]) -> EnsembleModel:
    """An ensemble (in evaluation mode, on the CPU) holding copies of ``models``' architectures and weights."""
    if not models:
        raise XmwInputError("ensemble: needs at least one member model")
    first = models[0]
    for i, model in enumerate(models):
        if not isinstance(model, XmwModel):
            raise XmwInputError(f"ensemble: member {i} is a {type(model).__name__}, not a registered model")
        if (model.n_dynamic, model.n_static) != (first.n_dynamic, first.n_static):
            raise XmwInputError(
                f"ensemble: member {i} takes {model.n_dynamic} dynamic / {model.n_static} static inputs, "
                f"member 0 takes {first.n_dynamic} / {first.n_static}"
            )
    members = [{k: v for k, v in m.config().items() if k not in _SHARED_KEYS} for m in models]
    ensemble = EnsembleModel(first.n_dynamic, first.n_static, members=members)
    for part, model in zip(ensemble.members, models, strict=True):
        part.load_state_dict(model.state_dict())
    return ensemble.eval()


def ensemble_size(model: torch.nn.Module) -> int:
    """How many members' spread a prediction can show: an ensemble's member count when it has two or more, else 0
    (one model, or an ensemble of one, has no spread)."""
    return len(model.members) if isinstance(model, EnsembleModel) and len(model.members) > 1 else 0
