"""``adversarial``: domain-adversarial training (DANN, Ganin et al. 2016), then fine-tuning on the observations.

Phase 1 trains on simulation and observation batches together: the task loss (masked MSE) on both domains where
labels exist, plus a discriminator that tells the domains apart from the per-day embedding. The embedding reaches
the discriminator through a gradient-reversal layer, so the discriminator learns to separate the domains while
the encoder receives the NEGATED (×λ) gradient and learns to confuse it. λ follows the usual ramp
``λ_max · (2 / (1 + exp(-γ p)) - 1)`` over training progress ``p``, per optimisation step (the runner gets the
source's sample count, so ``p`` advances every step from the first epoch on). Phase 2 is ``finetune`` from phase
1's best checkpoint (selected on the observations' validation split).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import nn

from xmw_ray.config import ExperimentConfig
from xmw_ray.data import schema
from xmw_ray.data.ray_datasets import norm_stats, part_rows, sample_dataset, store_info
from xmw_ray.models.checkpoint import unwrap
from xmw_ray.train.loop import Objective
from xmw_ray.train.losses import masked_mse
from xmw_ray.train.runner import TRAIN_COLUMNS, TrainOutcome, run_training
from xmw_ray.transfer.base import require_source, target_config, validate_params
from xmw_ray.transfer.finetune import FinetuneParams, finetune_from, finetune_space


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``-lam`` backward."""
    return _GradReverse.apply(x, lam)


def lambda_ramp(progress: float, lambda_max: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule: 0 at the start, → ``lambda_max`` as progress → 1."""
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


class AdversarialParams(FinetuneParams):
    lambda_max: float = Field(1.0, ge=0.0, description="final weight of the reversed domain gradient")
    gamma: float = Field(10.0, gt=0.0, description="steepness of the λ ramp")
    disc_hidden: int = Field(32, ge=1, description="hidden units of the domain discriminator")


def adversarial_space(t: Any, p: str) -> dict[str, Any]:
    """Search range of ``AdversarialParams``: the fine-tuning range plus the final reversed-gradient weight."""
    return {**finetune_space(t, p), "lambda_max": t.suggest_float(p + "lambda_max", 0.1, 1.0, log=True)}


def discriminator(embedding_size: int, hidden: int) -> nn.Module:
    """Per-day domain classifier on the embedding: logit of 'observation'."""
    return nn.Sequential(nn.Linear(embedding_size, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class DANNObjective(Objective):
    """Task loss on both domains + discriminator BCE through the gradient-reversal layer."""

    def __init__(self, lambda_max: float, gamma: float, disc_hidden: int) -> None:
        self.lambda_max, self.gamma, self.disc_hidden = lambda_max, gamma, disc_hidden

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"discriminator": discriminator(unwrap(model).embedding_size, self.disc_hidden)}

    def loss(self, model: nn.Module, bare: nn.Module, extras: dict[str, nn.Module], batch: dict[str, torch.Tensor],
             source: dict[str, torch.Tensor] | None, progress: float, epoch: int) -> tuple[torch.Tensor, dict]:
        if source is None:
            raise ValueError("adversarial: the objective needs a paired source batch")
        ns = source[schema.TARGET].shape[0]
        dyn = torch.cat([source[schema.DYNAMIC], batch[schema.DYNAMIC]])
        stat = torch.cat([source[schema.STATIC], batch[schema.STATIC]])
        y = torch.cat([source[schema.TARGET], batch[schema.TARGET]])
        captured: dict[str, torch.Tensor] = {}
        # One forward through the (DDP) model; the embedding is taken from the encoder on the way.
        hook = bare.encoder.register_forward_hook(lambda _m, _i, out: captured.__setitem__("emb", out))
        try:
            pred = model(dyn, stat)
        finally:
            hook.remove()
        task = masked_mse(pred.float(), y) / float(bare.target_std) ** 2
        lam = lambda_ramp(progress, self.lambda_max, self.gamma)
        logits = extras["discriminator"](grad_reverse(captured["emb"], lam)).squeeze(-1).float()
        domain = torch.zeros_like(logits)
        domain[ns:] = 1.0
        dloss = nn.functional.binary_cross_entropy_with_logits(logits, domain)
        acc = ((logits > 0).float() == domain).float().mean()
        return task + dloss, {"task_loss": float(task.detach()), "domain_loss": float(dloss.detach()),
                              "domain_acc": float(acc), "lambda": lam}


class Adversarial:
    name = "adversarial"
    Params = AdversarialParams
    search_space = staticmethod(adversarial_space)

    def run(self, cfg: ExperimentConfig, params: dict[str, Any], callbacks: list | None = None) -> TrainOutcome:
        checked = validate_params(self.Params, params, self.name)
        src = require_source(cfg, self.name)
        info = store_info(src.store, src.source)
        source_ds = sample_dataset(info, src.split, "train").select_columns(TRAIN_COLUMNS)
        dann = run_training(target_config(cfg, "-dann", optim=cfg.pretraining()), source=source_ds,
                            objective=DANNObjective(checked.lambda_max, checked.gamma, checked.disc_hidden),
                            norm=norm_stats(info, src.split).to_dict(),
                            source_rows=part_rows(info, src.split, "train"))
        return finetune_from(cfg, dann.best_checkpoint, checked, callbacks)
