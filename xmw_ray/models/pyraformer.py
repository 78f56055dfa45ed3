"""Pyraformer (Liu et al. 2022): a pyramid of coarser time scales and attention along its edges only.

The coarse-scale construction module (CSCM) builds each coarser scale with a ``Conv1d`` whose kernel and stride
are the window size: with X-MethaneWet's windows ``[4, 4]`` the 365 days give 91 "months-ish" nodes and 22
coarser ones (478 nodes). The pyramidal attention mask lets a node attend to its ``inner_size`` neighbours on its
own scale (±2 for inner size 5), to its children and to its parent; a scale's leftover nodes (365 = 4·91 + 1)
belong to its last parent. Attention gathers each node's (at most 10) neighbours instead of masking a dense
478 × 478 score matrix, so its cost is linear in the number of nodes, as the paper intends. Each day's embedding is its own node concatenated with its ancestors at every
scale, as in Pyraformer's single-step head, so ``H = d_model × (1 + len(window_sizes))``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from xmw_ray.data.contract import DAYS_PER_YEAR
from xmw_ray.models.base import XmwModel, concat_static
from xmw_ray.models.ranges import SizeRanges
from xmw_ray.models.registry import register
from xmw_ray.models.transformer import (
    ATTENTION_TEST_PARAMS,
    AttentionParams,
    attention_space,
    sinusoidal_positions,
)


def scale_sizes(length: int, window_sizes: list[int]) -> list[int]:
    """Nodes per scale, finest first: each coarser scale has ``floor(previous / window)`` nodes."""
    sizes = [length]
    for w in window_sizes:
        sizes.append(sizes[-1] // w)
    return sizes


def parent_index(sizes: list[int], window_sizes: list[int]) -> list[torch.Tensor]:
    """For each scale below the top, the index (within the next scale) of each node's parent."""
    return [
        torch.clamp(torch.arange(sizes[s]) // w, max=sizes[s + 1] - 1) for s, w in enumerate(window_sizes)
    ]


def pyramid_mask(length: int, window_sizes: list[int], inner_size: int) -> torch.Tensor:
    """Boolean ``(N, N)`` mask over all pyramid nodes, True where attention is NOT allowed (PyTorch's rule)."""
    sizes = scale_sizes(length, window_sizes)
    starts = [sum(sizes[:s]) for s in range(len(sizes))]
    n = sum(sizes)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    half = inner_size // 2
    for start, size in zip(starts, sizes, strict=True):
        idx = torch.arange(size)
        near = (idx[:, None] - idx[None, :]).abs() <= half
        allowed[start : start + size, start : start + size] = near
    for s, parents in enumerate(parent_index(sizes, window_sizes)):
        child = torch.arange(sizes[s]) + starts[s]
        parent = parents + starts[s + 1]
        allowed[child, parent] = True
        allowed[parent, child] = True
    return ~allowed


class PyraformerParams(AttentionParams):
    """X-MethaneWet's Pyraformer: attention sizes of ``AttentionParams``, windows [4, 4], inner size 5."""

    window_sizes: list[int] = Field(default_factory=lambda: [4, 4], min_length=1, description="scale windows")
    inner_size: int = Field(5, ge=1, description="same-scale neighbourhood (inner_size // 2 either side)")

    @model_validator(mode="after")
    def _pyramid_fits(self) -> PyraformerParams:
        if any(w < 2 for w in self.window_sizes):
            raise ValueError(f"window_sizes must all be >= 2, got {self.window_sizes}")
        if scale_sizes(DAYS_PER_YEAR, self.window_sizes)[-1] < 1:
            raise ValueError(
                f"window_sizes {self.window_sizes} leave no node at the coarsest scale of 365 days"
            )
        return self


def pyraformer_space(t: Any, p: str, s: SizeRanges) -> dict[str, Any]:
    """Search range of ``PyraformerParams``: the attention range plus the same-scale neighbourhood."""
    return {**attention_space(t, p, s), "inner_size": t.suggest_categorical(p + "inner_size", [3, 5])}


def neighbour_table(blocked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)`` indices of the nodes each node may attend to (K = the most any node has) and their validity."""
    allowed = ~blocked
    k = int(allowed.sum(dim=1).max())
    # stable sort puts each row's allowed columns first, in index order
    order = torch.sort((~allowed).to(torch.int8), dim=1, stable=True).indices[:, :k]
    return order, torch.gather(allowed, 1, order)


class PyramidalAttentionLayer(nn.Module):
    """A post-norm encoder layer whose attention visits only each node's pyramid neighbours.

    Keys and values are gathered through the ``(N, K)`` neighbour table, so time and memory grow as ``N · K``
    (K = 10 for X-MethaneWet's settings) instead of ``N²``: Pyraformer's linear complexity, without a custom kernel.
    """

    def __init__(self, hp: PyraformerParams, neighbours: torch.Tensor, valid: torch.Tensor) -> None:
        super().__init__()
        self.n_heads, self.head_dim = hp.n_heads, hp.d_model // hp.n_heads
        self.qkv = nn.Linear(hp.d_model, 3 * hp.d_model)
        self.out_proj = nn.Linear(hp.d_model, hp.d_model)
        self.ff = nn.Sequential(
            nn.Linear(hp.d_model, hp.d_ff), nn.GELU(), nn.Dropout(hp.dropout), nn.Linear(hp.d_ff, hp.d_model)
        )
        self.norm1, self.norm2 = nn.LayerNorm(hp.d_model), nn.LayerNorm(hp.d_model)
        self.dropout = nn.Dropout(hp.dropout)
        self.register_buffer("neighbours", neighbours, persistent=False)
        self.register_buffer("valid", valid, persistent=False)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).unbind(dim=2)  # (B, N, h, dh)
        k, v = k[:, self.neighbours], v[:, self.neighbours]  # (B, N, K, h, dh)
        scores = torch.einsum("bnhd,bnkhd->bnhk", q, k) / self.head_dim**0.5
        scores = scores.masked_fill(~self.valid[None, :, None, :], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out_proj(torch.einsum("bnhk,bnkhd->bnhd", weights, v).reshape(b, n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attend(x)))
        return self.norm2(x + self.dropout(self.ff(x)))


class CoarseScaleConstruction(nn.Module):
    """CSCM: strided convolutions build each coarser scale from the one below; all scales are concatenated."""

    def __init__(self, d_model: int, window_sizes: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, w, stride=w) for w in window_sizes)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in window_sizes)
        self.out_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scales, cur = [x], x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            cur = F.elu(norm(conv(cur.transpose(1, 2)).transpose(1, 2)))
            scales.append(cur)
        return self.out_norm(torch.cat(scales, dim=1))


class PyramidEncoder(nn.Module):
    """Embed days, build the pyramid, attend under the pyramid mask, gather each day's ancestors."""

    def __init__(self, n_in: int, hp: PyraformerParams) -> None:
        super().__init__()
        sizes = scale_sizes(DAYS_PER_YEAR, hp.window_sizes)
        self.input_proj = nn.Linear(n_in, hp.d_model)
        self.register_buffer("positions", sinusoidal_positions(DAYS_PER_YEAR, hp.d_model), persistent=False)
        self.dropout = nn.Dropout(hp.dropout)
        self.cscm = CoarseScaleConstruction(hp.d_model, hp.window_sizes)
        neighbours, valid = neighbour_table(pyramid_mask(DAYS_PER_YEAR, hp.window_sizes, hp.inner_size))
        self.layers = nn.Sequential(
            *(PyramidalAttentionLayer(hp, neighbours, valid) for _ in range(hp.num_layers))
        )
        # node index (into the concatenated pyramid) of every day's ancestor at each scale: (365, n_scales)
        cols, cur, start = [torch.arange(DAYS_PER_YEAR)], torch.arange(DAYS_PER_YEAR), 0
        for s, parents in enumerate(parent_index(sizes, hp.window_sizes)):
            start += sizes[s]
            cur = parents[cur]
            cols.append(cur + start)
        self.register_buffer("ancestors", torch.stack(cols, dim=1), persistent=False)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(concat_static(dynamic, static)) + self.positions
        nodes = self.layers(self.cscm(self.dropout(x)))  # (B, N, d_model)
        b, days, scales = nodes.shape[0], self.ancestors.shape[0], self.ancestors.shape[1]
        picked = nodes[:, self.ancestors.reshape(-1)]  # (B, 365 * scales, d_model)
        return picked.reshape(b, days, scales * nodes.shape[-1])


@register("pyraformer")
class PyraformerModel(XmwModel):
    """Pyraformer encoder with a per-day head over multi-scale embeddings."""

    Params = PyraformerParams
    test_params: ClassVar[dict[str, Any]] = {
        **ATTENTION_TEST_PARAMS,
        "window_sizes": [4, 4],
        "inner_size": 3,
    }
    search_space = staticmethod(pyraformer_space)

    def build_encoder(self) -> tuple[nn.Module, int]:
        hp: PyraformerParams = self.hp  # type: ignore[assignment]
        return PyramidEncoder(self.n_dynamic + self.n_static, hp), hp.d_model * (1 + len(hp.window_sizes))
