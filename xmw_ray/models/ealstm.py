"""Entity-Aware LSTM (Kratzert et al. 2019): the static features alone set the input gate, once per sample.

The forget, output and cell-candidate gates see the day's drivers and the previous hidden state, as in an LSTM;
the input gate ``i = sigmoid(W_s s + b_s)`` depends only on the static vector, so it decides which hidden units a
given wetland "uses". The driver side of the gates is computed for all 365 days in one matmul before the
unavoidable loop over days.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from xmw_ray.models.base import HParams, XmwModel
from xmw_ray.models.ranges import SizeRanges
from xmw_ray.models.registry import register


class EALSTMParams(HParams):
    """X-MethaneWet's EA-LSTM: one layer of 8 units, dropout 0.2 on the output."""

    hidden_size: int = Field(8, ge=1, description="hidden units (= embedding size)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout on the per-day hidden state")
    initial_forget_bias: float = Field(
        0.0, description="initial bias of the forget gate (0 as in Kratzert 2019)"
    )


def ealstm_space(t: Any, p: str, s: SizeRanges) -> dict[str, Any]:
    """Search range of ``EALSTMParams``: width and dropout (one layer, as published)."""
    return {"hidden_size": t.suggest_categorical(p + "hidden_size", list(s.widths)),
            "dropout": t.suggest_float(p + "dropout", 0.0, s.max_dropout)}


class EALSTMEncoder(nn.Module):
    """One EA-LSTM layer: static → input gate; drivers + hidden → forget, output and candidate gates."""

    def __init__(self, n_dynamic: int, n_static: int, hp: EALSTMParams) -> None:
        super().__init__()
        h = hp.hidden_size
        self.hidden_size = h
        self.input_gate = nn.Linear(n_static, h)
        self.dynamic_gates = nn.Linear(n_dynamic, 3 * h)  # forget, output, candidate
        self.recurrent_gates = nn.Linear(h, 3 * h, bias=False)
        self.dropout = nn.Dropout(hp.dropout)
        with torch.no_grad():
            for block in self.recurrent_gates.weight.view(3, h, h):
                nn.init.orthogonal_(block)
            self.dynamic_gates.bias.zero_()
            self.dynamic_gates.bias[:h].fill_(hp.initial_forget_bias)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        b, days, _ = dynamic.shape
        i = torch.sigmoid(self.input_gate(static))  # (B, H), once per sample
        xw = self.dynamic_gates(dynamic)  # (B, T, 3H), all days at once
        w_h = self.recurrent_gates.weight.t()
        h = dynamic.new_zeros(b, self.hidden_size)
        c = dynamic.new_zeros(b, self.hidden_size)
        out = []
        for t in range(days):
            gates = torch.addmm(xw[:, t], h, w_h)
            f, o, g = gates.chunk(3, dim=-1)
            c = torch.sigmoid(f) * c + i * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return self.dropout(torch.stack(out, dim=1))


@register("ealstm")
class EALSTMModel(XmwModel):
    """EA-LSTM; unlike the other models the static features are not appended to the daily inputs."""

    Params = EALSTMParams
    test_params: ClassVar[dict[str, Any]] = {"hidden_size": 8, "dropout": 0.0}
    search_space = staticmethod(ealstm_space)

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: EALSTMParams = self.hp  # type: ignore[assignment]
        return EALSTMEncoder(self.n_dynamic, self.n_static, hp), hp.hidden_size
