"""Temporal Convolutional Network (Bai et al. 2018): dilated convolutions along the 365 days.

Residual blocks of two weight-normalised dilated convolutions (kernel ``k``, dilation ``2**level``). With ``L``
blocks the receptive field is ``1 + 2 (k - 1) (2**L - 1)`` days. Causal mode (the default) pads on the left only,
so day ``t`` sees days ``<= t``; the default depth is the smallest with a receptive field of at least 365 days,
so the last day sees the whole year (kernel 3: 7 levels, 509 days). Centred mode pads both sides, so day ``t``
sees ``(rf - 1) / 2`` days either way; its default depth makes that at least 364, so every day sees the whole
year (kernel 3: 8 levels, 1021 days). A depth given explicitly must satisfy the same rule.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from xmw_ray.data.contract import DAYS_PER_YEAR
from xmw_ray.models.base import HParams, XmwModel, concat_static
from xmw_ray.models.ranges import SizeRanges
from xmw_ray.models.registry import register


def receptive_field(kernel_size: int, num_levels: int) -> int:
    """Days one output sees: two convolutions per block, dilation doubling per block."""
    return 1 + 2 * (kernel_size - 1) * (2**num_levels - 1)


def _covers_year(kernel_size: int, num_levels: int, causal: bool) -> bool:
    rf = receptive_field(kernel_size, num_levels)
    return rf >= DAYS_PER_YEAR if causal else (rf - 1) // 2 >= DAYS_PER_YEAR - 1


def levels_for_year(kernel_size: int, causal: bool) -> int:
    """The fewest blocks whose receptive field covers the year (see the module docstring)."""
    levels = 1
    while not _covers_year(kernel_size, levels, causal):
        levels += 1
    return levels


class TCNParams(HParams):
    """Hidden 8 (X-MethaneWet's size) channels, kernel 3, causal, depth chosen to cover the year."""

    hidden_size: int = Field(8, ge=1, description="channels of every block (= embedding size)")
    kernel_size: int = Field(3, ge=2, description="convolution kernel (odd when centred)")
    num_levels: int | None = Field(None, ge=1, description="residual blocks; None = fewest covering the year")
    causal: bool = Field(True, description="True: day t sees only days <= t; False: centred window")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout after each convolution")

    @model_validator(mode="after")
    def _check(self) -> TCNParams:
        if not self.causal and self.kernel_size % 2 == 0:
            raise ValueError(f"a centred TCN needs an odd kernel_size, got {self.kernel_size}")
        if self.num_levels is not None and not _covers_year(self.kernel_size, self.num_levels, self.causal):
            rf = receptive_field(self.kernel_size, self.num_levels)
            need = levels_for_year(self.kernel_size, self.causal)
            raise ValueError(
                f"num_levels={self.num_levels} gives a receptive field of {rf} days, which does not cover "
                f"the year ({'causal' if self.causal else 'centred'}); use at least {need}"
            )
        return self


def tcn_space(t: Any, p: str, s: SizeRanges) -> dict[str, Any]:
    """Search range of ``TCNParams``: width, kernel, dropout (the depth follows the kernel: it covers the year)."""
    return {"hidden_size": t.suggest_categorical(p + "hidden_size", list(s.widths)),
            "kernel_size": t.suggest_categorical(p + "kernel_size", [3, 5]),
            "dropout": t.suggest_float(p + "dropout", 0.0, s.max_dropout)}


class TemporalBlock(nn.Module):
    """Two dilated weight-normed convolutions with ReLU and dropout, plus a (1x1-projected) residual."""

    def __init__(
        self, n_in: int, n_out: int, kernel: int, dilation: int, causal: bool, dropout: float
    ) -> None:
        super().__init__()
        total = (kernel - 1) * dilation
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)
        self.conv1 = weight_norm(nn.Conv1d(n_in, n_out, kernel, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(n_out, n_out, kernel, dilation=dilation))
        self.dropout = nn.Dropout(dropout)
        self.residual = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(F.relu(self.conv1(F.pad(x, self.pad))))
        y = self.dropout(F.relu(self.conv2(F.pad(y, self.pad))))
        return F.relu(y + self.residual(x))


class TCNEncoder(nn.Module):
    """Drivers + broadcast static ``(B, T, F)`` → channels-first blocks → ``(B, T, H)``."""

    def __init__(self, n_in: int, hp: TCNParams) -> None:
        super().__init__()
        levels = hp.num_levels or levels_for_year(hp.kernel_size, hp.causal)
        self.receptive_field = receptive_field(hp.kernel_size, levels)
        self.blocks = nn.Sequential(
            *[
                TemporalBlock(
                    n_in if i == 0 else hp.hidden_size,
                    hp.hidden_size,
                    hp.kernel_size,
                    2**i,
                    hp.causal,
                    hp.dropout,
                )
                for i in range(levels)
            ]
        )

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        x = concat_static(dynamic, static).transpose(1, 2)  # (B, F, T): time is the convolved axis
        return self.blocks(x).transpose(1, 2)


@register("tcn")
class TCNModel(XmwModel):
    """TCN over time (X-MethaneWet's TCN convolved across the days-as-channels axis; this one does not)."""

    Params = TCNParams
    test_params: ClassVar[dict[str, Any]] = {"hidden_size": 8, "dropout": 0.0}
    search_space = staticmethod(tcn_space)

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: TCNParams = self.hp  # type: ignore[assignment]
        return TCNEncoder(self.n_dynamic + self.n_static, hp), hp.hidden_size
