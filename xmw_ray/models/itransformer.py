"""iTransformer (Liu et al. 2024): each variable's whole 365-day series is one token.

``Linear(365, d_model)`` embeds every driver's series (static features, broadcast to the year, are tokens too);
attention then mixes variables, not days, so no position encoding is needed. A shared ``Linear(d_model, 365)``
projects every variable token back to a daily series, and ``Linear(n_vars, d_model)`` + GELU mixes the
variables of each day into the per-day embedding the flux head reads.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from xmw_ray.data.contract import DAYS_PER_YEAR
from xmw_ray.models.base import XmwModel, concat_static
from xmw_ray.models.registry import register
from xmw_ray.models.transformer import ATTENTION_TEST_PARAMS, AttentionParams, attention_space, encoder_stack


class InvertedEncoder(nn.Module):
    """Variables as tokens: embed series → attention across variables → project back to days → mix per day."""

    def __init__(self, n_vars: int, hp: AttentionParams) -> None:
        super().__init__()
        self.series_embed = nn.Linear(DAYS_PER_YEAR, hp.d_model)
        self.dropout = nn.Dropout(hp.dropout)
        self.layers = encoder_stack(hp)
        self.series_proj = nn.Linear(hp.d_model, DAYS_PER_YEAR)
        self.day_mix = nn.Linear(n_vars, hp.d_model)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        tokens = self.series_embed(concat_static(dynamic, static).transpose(1, 2))  # (B, V, d_model)
        tokens = self.layers(self.dropout(tokens))
        per_day = self.series_proj(tokens).transpose(1, 2)  # (B, 365, V)
        return F.gelu(self.day_mix(per_day))


@register("itransformer")
class ITransformerModel(XmwModel):
    """iTransformer with X-MethaneWet's attention sizes by default."""

    Params = AttentionParams
    test_params: ClassVar[dict[str, Any]] = ATTENTION_TEST_PARAMS
    search_space = staticmethod(attention_space)

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: AttentionParams = self.hp  # type: ignore[assignment]
        return InvertedEncoder(self.n_dynamic + self.n_static, hp), hp.d_model
