"""Transformer encoder over the 365 days: input projection, sinusoidal positions, ``batch_first``, per-day head.

X-MethaneWet's published Transformer could not be built at its own size (8 is not divisible by 5 heads),
attended over the batch axis (``batch_first`` left False) and had no positional encoding; each is fixed here,
and ``AttentionParams`` (shared with iTransformer and Pyraformer) refuses heads that do not divide ``d_model``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from xmw_ray.data.contract import DAYS_PER_YEAR
from xmw_ray.models.base import HParams, XmwModel, concat_static
from xmw_ray.models.ranges import SizeRanges
from xmw_ray.models.registry import register


class AttentionParams(HParams):
    """X-MethaneWet's attention sizes are the defaults: d_model 8, 4 heads, d_ff 32, 3 layers, dropout 0.2."""

    d_model: int = Field(8, ge=1, description="token width (= embedding size)")
    n_heads: int = Field(4, ge=1, description="attention heads; must divide d_model")
    d_ff: int = Field(32, ge=1, description="feed-forward width")
    num_layers: int = Field(3, ge=1, description="encoder layers")
    dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="dropout in attention, feed-forward and embedding"
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> AttentionParams:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}")
        return self


#: Tiny attention sizes for the conformance suite (shared by every attention model).
ATTENTION_TEST_PARAMS: dict[str, Any] = {"d_model": 8, "n_heads": 2, "d_ff": 16, "num_layers": 1, "dropout": 0.0}


def attention_space(t: Any, p: str, s: SizeRanges) -> dict[str, Any]:
    """Search range of ``AttentionParams`` (Transformer, iTransformer, Pyraformer): widths that every head count
    divides, heads, feed-forward multiple, depth, dropout."""
    d_model = t.suggest_categorical(p + "d_model", [w for w in s.widths if w % max(s.heads) == 0])
    return {"d_model": d_model,
            "n_heads": t.suggest_categorical(p + "n_heads", list(s.heads)),
            "d_ff": d_model * t.suggest_categorical(p + "ff_mult", [2, 4]),
            "num_layers": t.suggest_int(p + "num_layers", 1, s.max_layers),
            "dropout": t.suggest_float(p + "dropout", 0.0, s.max_dropout)}


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """Vaswani et al. (2017) position encodings ``(length, d_model)``."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return pe


def encoder_stack(hp: AttentionParams) -> nn.TransformerEncoder:
    """``num_layers`` post-norm encoder layers, batch first."""
    layer = nn.TransformerEncoderLayer(
        hp.d_model, hp.n_heads, hp.d_ff, hp.dropout, activation="gelu", batch_first=True
    )
    return nn.TransformerEncoder(layer, hp.num_layers, enable_nested_tensor=False)


class DayTransformerEncoder(nn.Module):
    """Each day is a token: ``Linear(F, d_model)`` + position encoding, then full attention over the year."""

    def __init__(self, n_in: int, hp: AttentionParams) -> None:
        super().__init__()
        self.input_proj = nn.Linear(n_in, hp.d_model)
        self.register_buffer("positions", sinusoidal_positions(DAYS_PER_YEAR, hp.d_model), persistent=False)
        self.dropout = nn.Dropout(hp.dropout)
        self.layers = encoder_stack(hp)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(concat_static(dynamic, static)) + self.positions[: dynamic.shape[1]]
        return self.layers(self.dropout(x))


@register("transformer")
class TransformerModel(XmwModel):
    """Transformer encoder (Vaswani et al. 2017) with days as tokens."""

    Params = AttentionParams
    test_params: ClassVar[dict[str, Any]] = ATTENTION_TEST_PARAMS
    search_space = staticmethod(attention_space)

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: AttentionParams = self.hp  # type: ignore[assignment]
        return DayTransformerEncoder(self.n_dynamic + self.n_static, hp), hp.d_model
