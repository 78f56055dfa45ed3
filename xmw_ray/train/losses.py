"""The masked training loss: squared errors on observed days only, optionally weighted per sample.

Unobserved days are NaN in the target and contribute neither error nor count; a batch with no observed day gives
a zero loss (with a graph) rather than NaN, so every data-parallel worker can still call ``backward``.
"""

from __future__ import annotations

import torch


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over observed (finite) days of ``(B, T)`` tensors.

    ``weight (B,)`` (non-negative) scales each sample's squared errors: ``Σ_b w_b Σ_t e² / Σ_b w_b n_b``, so
    weight 2 is the same as the sample appearing twice and weight 0 removes it. No observed day gives 0.
    """
    if pred.shape != target.shape:
        raise ValueError(f"masked_mse: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    observed = torch.isfinite(target)
    err2 = torch.where(observed, pred - torch.nan_to_num(target), torch.zeros_like(pred)).square()
    sse = err2.reshape(err2.shape[0], -1).sum(dim=1)
    count = observed.reshape(observed.shape[0], -1).sum(dim=1).to(pred.dtype)
    if weight is not None:
        if weight.shape != sse.shape:
            raise ValueError(f"masked_mse: weight must be ({sse.shape[0]},), got {tuple(weight.shape)}")
        sse, count = sse * weight, count * weight
    num, den = sse.sum(), count.sum()
    return num / torch.where(den > 0, den, torch.ones_like(den))

