"""The base class every sequence model derives from: normalisation buffers, named parts and config (the checkpoint
file it is saved in is ``checkpoint.py``'s).

A model takes RAW drivers and returns flux in mg CH4 m-2 d-1, normalising inside with buffers that travel in
the ``state_dict``, so a checkpoint alone is enough for inference (DESIGN.md, "Data contract"). Every model is
``encoder`` (drivers → per-day embedding ``(B, 365, H)``) followed by ``head`` (``Linear(H, 1)``), so transfer
learning can take the embedding and fine-tuning can freeze a part by its name.

With ``output_constraint="softplus"`` the flux is ``target_std · softplus(z + target_mean / target_std)`` for the
network's normalised output ``z``: never negative in mg CH4 m-2 d-1, and close to the unconstrained
``target_mean + target_std · z`` wherever the flux is well above zero. It has no weights, so a checkpoint's
``state_dict`` is the same with or without it; the choice is saved in the checkpoint's config (a checkpoint written
before it existed loads as ``"none"``, which is how it was trained).

Normalised inputs are made safe before the encoder sees them: a missing driver (NaN) becomes 0, the training
mean, and with ``input_clip`` set they are clamped to ``[-input_clip, input_clip]`` so a tower whose drivers lie
far outside the training range cannot push the network into regions it never saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.nn import functional as F

from xmw_ray.data.contract import DAYS_PER_YEAR
from xmw_ray.data.features import FeatureSet
from xmw_ray.errors import XmwInputError

if TYPE_CHECKING:
    from xmw_ray.data.normstats import NormStats
    from xmw_ray.models.ranges import ModelSpace

#: A std below this is treated as a constant feature: its std becomes 1 so it normalises to ``x - mean``.
STD_EPSILON = 1e-6


class MomentStats(TypedDict):
    mean: list[float] | float
    std: list[float] | float


class NormDict(TypedDict):
    """Normalisation statistics of the training split as a plain nested dict."""

    dynamic: MomentStats
    static: MomentStats
    target: MomentStats


def as_norm_dict(stats: NormStats | Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the nested ``NormDict``, the data room's ``NormStats`` object, or its flat ``to_dict()`` form."""
    if hasattr(stats, "to_dict"):
        stats = stats.to_dict()
    if isinstance(stats, Mapping) and "dynamic_mean" in stats:
        return {
            "dynamic": {"mean": stats["dynamic_mean"], "std": stats["dynamic_std"]},
            "static": {"mean": stats["static_mean"], "std": stats["static_std"]},
            "target": {"mean": stats["target_mean"], "std": stats["target_std"]},
        }
    if not isinstance(stats, Mapping):
        raise XmwInputError(f"normalisation stats: expected a dict or NormStats, got {type(stats).__name__}")
    return stats


#: What a model's output may be: ``softplus`` keeps the flux >= 0 (emission only), ``none`` leaves it free.
OutputConstraint = Literal["none", "softplus"]
#: The resolved constraints (``auto`` in a config becomes one of these, see :func:`resolve_output_constraint`).
OUTPUT_CONSTRAINTS: tuple[str, ...] = ("none", "softplus")


class HParams(BaseModel):
    """Base of every model's hyper-parameters: unknown keys are an error, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_clip: float | None = Field(
        None, gt=0.0, description="clamp normalised inputs to [-input_clip, input_clip]; None: no clamp"
    )
    output_constraint: OutputConstraint = Field(
        "none", description="softplus: the flux is never negative (mg CH4 m-2 d-1); none: unconstrained"
    )
    static_inputs: bool = Field(
        True, description="False: the static inputs (site descriptors or static maps, CH4, CO2) are held at their "
        "training mean, so the model learns from the daily drivers only (the store's layout is unchanged)"
    )


def resolve_output_constraint(choice: str, target_min: float | None) -> OutputConstraint:
    """A config's ``auto``/``softplus``/``none`` → the model's constraint: ``auto`` is ``softplus`` when every
    training target is >= 0 (the smallest, ``NormStats.target_min``, is known and not negative), else ``none``."""
    if choice == "auto":
        return "softplus" if target_min is not None and target_min >= 0.0 else "none"
    if choice not in OUTPUT_CONSTRAINTS:
        raise XmwInputError(f"output_constraint: {choice!r} is not one of auto, {', '.join(OUTPUT_CONSTRAINTS)}")
    return choice  # type: ignore[return-value]


def validate_hparams(params_cls: type[HParams], hparams: dict[str, Any], model_name: str) -> HParams:
    """Validate ``hparams`` into ``params_cls``; the first problem becomes a one-line ``XmwInputError``."""
    try:
        return params_cls(**hparams)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(params_cls.model_fields)
            raise XmwInputError(
                f"model {model_name!r}: unknown hyper-parameter {key!r} (known: {known})"
            ) from None
        msg = err["msg"].removeprefix("Value error, ")
        where = f"hyper-parameter {key!r}: " if key else ""
        raise XmwInputError(f"model {model_name!r}: {where}{msg}") from None


def concat_static(dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """Broadcast ``static (B, S)`` along the days and append it to ``dynamic (B, T, D)`` → ``(B, T, D + S)``."""
    return torch.cat([dynamic, static.unsqueeze(1).expand(-1, dynamic.shape[1], -1)], dim=-1)


def _std_tensor(values: Any, n: int, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.as_tensor(values["mean"], dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(values["std"], dtype=torch.float32).reshape(-1)
    if mean.numel() != n or std.numel() != n:
        raise XmwInputError(
            f"normalisation stats {field!r}: expected {n} mean/std values, got {mean.numel()}/{std.numel()}"
        )
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        raise XmwInputError(f"normalisation stats {field!r}: mean/std must be finite")
    std = torch.where(std.abs() < STD_EPSILON, torch.ones_like(std), std.abs())
    return mean, std


class XmwModel(nn.Module):
    """Drivers ``(B, 365, D)`` + static ``(B, S)`` → daily flux ``(B, 365)``; subclasses build the encoder."""

    #: Set by ``@register``: the name ``build_model`` knows this class by.
    registry_name: ClassVar[str] = ""
    #: The pydantic hyper-parameter model (its fields, defaults and bounds are what a tuner may vary).
    Params: ClassVar[type[HParams]] = HParams
    #: Tiny hyper-parameters for the conformance suite (fast, dropout off).
    test_params: ClassVar[dict[str, Any]] = {}
    #: What a search may vary (``ranges.ModelSpace``, declared beside ``Params``); None: not searchable.
    search_space: ClassVar[ModelSpace | None] = None

    def __init__(self, n_dynamic: int, n_static: int, **hparams: Any) -> None:
        super().__init__()
        if int(n_dynamic) < 1 or int(n_static) < 0:
            raise XmwInputError(f"model: need n_dynamic >= 1 and n_static >= 0, got {n_dynamic}, {n_static}")
        self.n_dynamic = int(n_dynamic)
        self.n_static = int(n_static)
        self.hp = validate_hparams(self.Params, hparams, self.registry_name or type(self).__name__)
        #: The clamp ``normalize_inputs`` applies (a wrapper model may take it from the model it wraps).
        self.input_clip: float | None = self.hp.input_clip
        #: Whether the static inputs reach the encoder (a wrapper model may take it from the model it wraps).
        self.static_inputs: bool = self.hp.static_inputs
        #: What each input slot means: the features of the store it was trained on (``data/features.py``), saved
        #: in the checkpoint so evaluation and inference refuse a store whose inputs mean something else.
        self.features: FeatureSet | None = None
        self.register_buffer("dyn_mean", torch.zeros(self.n_dynamic))
        self.register_buffer("dyn_std", torch.ones(self.n_dynamic))
        self.register_buffer("stat_mean", torch.zeros(self.n_static))
        self.register_buffer("stat_std", torch.ones(self.n_static))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.encoder, self.embedding_size = self.build_encoder()
        self.head = nn.Linear(self.embedding_size, 1)

    # --- what a subclass provides ------------------------------------------------------------------------------
    def build_encoder(self) -> tuple[nn.Module, int]:
        """Return ``(encoder, H)``: ``encoder(dyn_norm, stat_norm) -> (B, 365, H)``."""
        raise NotImplementedError

    # --- hyper-parameters and config ---------------------------------------------------------------------------
    @classmethod
    def hparam_fields(cls) -> dict[str, dict[str, Any]]:
        """Each hyper-parameter's type, default and description (what a tuner may search over)."""
        return {
            name: {"type": f.annotation, "default": f.default, "description": f.description}
            for name, f in cls.Params.model_fields.items()
        }

    def config(self) -> dict[str, Any]:
        """Everything ``build_model(**config)`` needs to rebuild this architecture."""
        return {
            "name": self.registry_name,
            "n_dynamic": self.n_dynamic,
            "n_static": self.n_static,
            **self.hp.model_dump(),
        }

    # --- normalisation ------------------------------------------------------------------------------------------
    def set_normalization(self, stats: NormStats | Mapping[str, Any]) -> None:
        """Copy training-split statistics into the buffers (constant features get std 1, see ``STD_EPSILON``)."""
        stats = as_norm_dict(stats)
        for key in ("dynamic", "static", "target"):
            if key not in stats:
                raise XmwInputError(f"normalisation stats: missing {key!r}")
        d_mean, d_std = _std_tensor(stats["dynamic"], self.n_dynamic, "dynamic")
        s_mean, s_std = _std_tensor(stats["static"], self.n_static, "static")
        t_mean, t_std = _std_tensor(stats["target"], 1, "target")
        with torch.no_grad():
            for buf, val in (
                (self.dyn_mean, d_mean),
                (self.dyn_std, d_std),
                (self.stat_mean, s_mean),
                (self.stat_std, s_std),
                (self.target_mean, t_mean[0]),
                (self.target_std, t_std[0]),
            ):
                buf.copy_(val)

    def normalization(self) -> dict[str, dict[str, Any]]:
        """The statistics in the buffers, in the ``NormDict`` form ``set_normalization`` takes."""
        return {
            "dynamic": {"mean": self.dyn_mean.tolist(), "std": self.dyn_std.tolist()},
            "static": {"mean": self.stat_mean.tolist(), "std": self.stat_std.tolist()},
            "target": {"mean": float(self.target_mean), "std": float(self.target_std)},
        }

    def normalize_target(self, target: torch.Tensor) -> torch.Tensor:
        """Flux (mg CH4 m-2 d-1) → the normalised space ``forward_normalized`` predicts in (NaN stays NaN)."""
        return (target - self.target_mean) / self.target_std

    def _check_inputs(self, dynamic: torch.Tensor, static: torch.Tensor) -> None:
        if dynamic.ndim != 3 or dynamic.shape[1] != DAYS_PER_YEAR or dynamic.shape[2] != self.n_dynamic:
            raise XmwInputError(
                f"{self.registry_name}: dynamic must be (B, {DAYS_PER_YEAR}, {self.n_dynamic}), "
                f"got {tuple(dynamic.shape)}"
            )
        if static.ndim != 2 or static.shape != (dynamic.shape[0], self.n_static):
            raise XmwInputError(
                f"{self.registry_name}: static must be ({dynamic.shape[0]}, {self.n_static}), "
                f"got {tuple(static.shape)}"
            )

    def normalize_inputs(self, dynamic: torch.Tensor, static: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw drivers → normalised drivers: NaN → 0 (the training mean), then the ``input_clip`` clamp if set."""
        self._check_inputs(dynamic, static)
        out = []
        for x, mean, std in ((dynamic, self.dyn_mean, self.dyn_std), (static, self.stat_mean, self.stat_std)):
            x = (x - mean) / std
            x = x.masked_fill(torch.isnan(x), 0.0)
            if self.input_clip is not None:
                x = x.clamp(-self.input_clip, self.input_clip)
            out.append(x)
        if not self.static_inputs:  # the training mean: no gradient reaches their weights, no site identity
            out[1] = torch.zeros_like(out[1])
        return out[0], out[1]

    # --- the views of one computation ----------------------------------------------------------------------------
    def embed(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """Raw drivers → per-day embedding ``(B, 365, H)`` before the head."""
        return self.encoder(*self.normalize_inputs(dynamic, static))

    def predict_unconstrained(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """Raw drivers → the network's output ``z (B, 365)`` in normalised target space, before the output
        constraint (what a subclass with another sum, e.g. ``residual``, overrides)."""
        return self.head(self.embed(dynamic, static)).squeeze(-1)

    def _softplus_shift(self) -> torch.Tensor:
        """``target_mean / target_std``: where flux 0 lies in normalised units (``target_std`` is > 0)."""
        return self.target_mean / self.target_std

    def forward_normalized(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """Raw drivers → prediction ``(B, 365)`` in normalised target space (what losses compare)."""
        z = self.predict_unconstrained(dynamic, static)
        if self.hp.output_constraint == "softplus":
            shift = self._softplus_shift()
            return F.softplus(z + shift) - shift
        return z

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """Raw drivers → daily flux ``(B, 365)`` in mg CH4 m-2 d-1 (>= 0 with the softplus constraint)."""
        z = self.predict_unconstrained(dynamic, static)
        if self.hp.output_constraint == "softplus":  # as a product, so rounding cannot make it negative
            return self.target_std * F.softplus(z + self._softplus_shift())
        return self.target_mean + self.target_std * z
