"""Stacked LSTM and GRU over the 365 days, a per-day linear head (X-MethaneWet's recurrent baselines)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from xmw_ray.models.base import HParams, XmwModel, concat_static
from xmw_ray.models.registry import register


class RecurrentParams(HParams):
    """X-MethaneWet's sizes are the defaults: hidden 8, 3 layers, dropout 0.2."""

    hidden_size: int = Field(8, ge=1, description="units per recurrent layer (= embedding size)")
    num_layers: int = Field(3, ge=1, description="stacked recurrent layers")
    dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="dropout between stacked layers and on the output"
    )


class RecurrentEncoder(nn.Module):
    """Static broadcast to every day and appended to the drivers, then ``nn.LSTM``/``nn.GRU`` (cuDNN kernels)."""

    def __init__(self, cell: type[nn.RNNBase], n_in: int, hp: RecurrentParams) -> None:
        super().__init__()
        self.rnn = cell(
            n_in,
            hp.hidden_size,
            num_layers=hp.num_layers,
            batch_first=True,
            dropout=hp.dropout if hp.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(hp.dropout)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(concat_static(dynamic, static))
        return self.dropout(out)


class _Recurrent(XmwModel):
    Params = RecurrentParams
    cell: ClassVar[type[nn.RNNBase]]
    test_params: ClassVar[dict[str, Any]] = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0}

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: RecurrentParams = self.hp  # type: ignore[assignment]
        return RecurrentEncoder(self.cell, self.n_dynamic + self.n_static, hp), hp.hidden_size


@register("lstm")
class LSTMModel(_Recurrent):
    """Stacked LSTM (Hochreiter & Schmidhuber 1997)."""

    cell = nn.LSTM


@register("gru")
class GRUModel(_Recurrent):
    """Stacked GRU (Cho et al. 2014). On CPU, PyTorch runs GRU step by step (LSTM has a fused kernel), so
    it is several times slower than LSTM there; the tiny test model is one layer for that reason."""

    cell = nn.GRU
    test_params: ClassVar[dict[str, Any]] = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}
