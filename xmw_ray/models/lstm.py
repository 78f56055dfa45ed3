"""Stacked LSTM and GRU over the 365 days, a per-day linear head (X-MethaneWet's recurrent baselines).

The LSTM may first project each day's inputs (``input_size``: ``Linear`` + ReLU, a learned feature mix a small
recurrent state need not spend capacity on) and may hand the head that projection beside its own output
(``skip``), so day-local responses need not pass through the recurrence. The defaults are the plain baseline.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from xmw_ray.models.base import HParams, XmwModel, concat_static
from xmw_ray.models.ranges import SizeRanges
from xmw_ray.models.registry import register


class RecurrentParams(HParams):
    """X-MethaneWet's sizes are the defaults: hidden 8, 3 layers, dropout 0.2."""

    hidden_size: int = Field(8, ge=1, description="units per recurrent layer")
    num_layers: int = Field(3, ge=1, description="stacked recurrent layers")
    dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="dropout between stacked layers and on the output"
    )


def recurrent_space(t: Any, p: str, s: SizeRanges) -> dict[str, Any]:
    """Search range of ``RecurrentParams`` (LSTM and GRU): width, depth, dropout."""
    return {"hidden_size": t.suggest_categorical(p + "hidden_size", list(s.widths)),
            "num_layers": t.suggest_int(p + "num_layers", 1, s.max_layers),
            "dropout": t.suggest_float(p + "dropout", 0.0, s.max_dropout)}


class LSTMParams(RecurrentParams):
    input_size: int = Field(0, ge=0, description="per-day Linear+ReLU projection of the inputs; 0: none")
    skip: bool = Field(False, description="the head also sees the projected inputs (needs input_size > 0)")

    @model_validator(mode="after")
    def _skip_needs_projection(self) -> LSTMParams:
        if self.skip and self.input_size == 0:
            raise ValueError("skip=True needs input_size > 0 (the head sees the projected inputs)")
        return self


class RecurrentEncoder(nn.Module):
    """Static broadcast to every day and appended to the drivers, optionally projected per day, then
    ``nn.LSTM``/``nn.GRU`` (cuDNN kernels); with ``skip`` the output is ``concat(rnn_output, projection)``."""

    def __init__(self, cell: type[nn.RNNBase], n_in: int, hp: RecurrentParams, input_size: int = 0,
                 skip: bool = False) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(n_in, input_size), nn.ReLU()) if input_size > 0 else None
        self.skip = skip
        self.rnn = cell(
            input_size or n_in,
            hp.hidden_size,
            num_layers=hp.num_layers,
            batch_first=True,
            dropout=hp.dropout if hp.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(hp.dropout)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        x = concat_static(dynamic, static)
        if self.project is not None:
            x = self.project(x)
        out, _ = self.rnn(x)
        out = self.dropout(out)
        return torch.cat([out, x], dim=-1) if self.skip else out


class _Recurrent(XmwModel):
    Params = RecurrentParams
    cell: ClassVar[type[nn.RNNBase]]
    test_params: ClassVar[dict[str, Any]] = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0}
    search_space = staticmethod(recurrent_space)

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: RecurrentParams = self.hp  # type: ignore[assignment]
        return RecurrentEncoder(self.cell, self.n_dynamic + self.n_static, hp), hp.hidden_size


@register("lstm")
class LSTMModel(_Recurrent):
    """Stacked LSTM (Hochreiter & Schmidhuber 1997), optionally with a per-day input projection and skip."""

    Params = LSTMParams
    cell = nn.LSTM

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: LSTMParams = self.hp  # type: ignore[assignment]
        encoder = RecurrentEncoder(self.cell, self.n_dynamic + self.n_static, hp, hp.input_size, hp.skip)
        return encoder, hp.hidden_size + (hp.input_size if hp.skip else 0)


@register("gru")
class GRUModel(_Recurrent):
    """Stacked GRU (Cho et al. 2014). On CPU, PyTorch runs GRU step by step (LSTM has a fused kernel), so
    it is several times slower than LSTM there; the tiny test model is one layer for that reason."""

    cell = nn.GRU
    test_params: ClassVar[dict[str, Any]] = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}
