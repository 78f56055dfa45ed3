"""Each strategy's mechanism, in-process and fast: gradient reversal and a discriminator that learns (DANN),
per-sample weights that differ and change the loss (reweight), the residual model's sum with a frozen part."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmw_ray.data import schema
from xmw_ray.errors import XmwInputError
from xmw_ray.models import build_model
from xmw_ray.models.checkpoint import load_checkpoint_model, write_checkpoint
from xmw_ray.train.loop import WEIGHT_COLUMN
from xmw_ray.transfer.adversarial import AdversarialParams, DANNObjective, grad_reverse, lambda_ramp
from xmw_ray.transfer.base import validate_params
from xmw_ray.transfer.finetune import FinetuneParams
from xmw_ray.transfer.registry import STRATEGIES, get_strategy
from xmw_ray.transfer.reweight import ReweightObjective, SampleWeighter, sample_summary

D, S = 3, 2
TINY = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}


def batch(n: int, shift: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dyn = torch.randn(n, 365, D, generator=g) + shift
    y = dyn[..., 0] * 2.0 + 1.0
    y[:, :20] = float("nan")
    return {schema.DYNAMIC: dyn, schema.STATIC: torch.randn(n, S, generator=g) + shift, schema.TARGET: y}


def test_gradient_reversal_negates_and_scales_the_gradient():
    x = torch.randn(4, 5, requires_grad=True)
    (grad_reverse(x, 0.7) * torch.arange(5.0)).sum().backward()
    assert torch.allclose(x.grad, -0.7 * torch.arange(5.0).expand(4, 5))
    assert lambda_ramp(0.0, 1.0) == 0.0 and 0.99 < lambda_ramp(1.0, 1.0) <= 1.0
    assert lambda_ramp(0.3, 2.0) > lambda_ramp(0.1, 2.0)


def test_dann_objective_encoder_gets_reversed_domain_gradient_and_discriminator_learns():
    torch.manual_seed(0)
    model = build_model("lstm", D, S, **TINY)
    obj = DANNObjective(lambda_max=1.0, gamma=10.0, disc_hidden=8)
    extras = obj.modules(model)
    src, tgt = batch(4, 0.0, 1), batch(4, 2.0, 2)
    for t in (src, tgt):  # domain loss only: no labels, so the gradient is the discriminator's alone
        t[schema.TARGET] = torch.full_like(t[schema.TARGET], float("nan"))
    loss, logged = obj.loss(model, model, extras, tgt, src, progress=1.0, epoch=0)
    assert logged["lambda"] > 0.99 and logged["domain_loss"] > 0
    loss.backward()
    reversed_grad = model.encoder.rnn.weight_ih_l0.grad.clone()
    disc_grad = extras["discriminator"][0].weight.grad.clone()
    model.zero_grad()
    extras["discriminator"].zero_grad()
    # the same loss without reversal: the encoder gradient must be exactly the opposite, the discriminator's equal
    import xmw_ray.transfer.adversarial as adv

    orig = adv.grad_reverse
    adv.grad_reverse = lambda x, lam: x * 1.0
    try:
        plain, _ = obj.loss(model, model, extras, tgt, src, progress=1.0, epoch=0)
    finally:
        adv.grad_reverse = orig
    plain.backward()
    assert reversed_grad.abs().sum() > 0
    assert torch.allclose(reversed_grad, -model.encoder.rnn.weight_ih_l0.grad * logged["lambda"], atol=1e-6)
    assert torch.allclose(disc_grad, extras["discriminator"][0].weight.grad, atol=1e-6)
    # a few optimiser steps: the discriminator's weights change and it separates the shifted domains
    before = [p.detach().clone() for p in extras["discriminator"].parameters()]
    opt = torch.optim.Adam(list(extras["discriminator"].parameters()), lr=0.1)
    for _ in range(10):
        opt.zero_grad()
        loss, logged = obj.loss(model, model, extras, tgt, src, progress=0.0, epoch=0)
        loss.backward()
        opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, extras["discriminator"].parameters(), strict=True))
    assert logged["domain_acc"] > 0.9


def test_reweight_weights_differ_per_sample_and_change_the_loss():
    rng = np.random.default_rng(0)
    src_dyn = rng.normal(0, 1, (60, 365, D))
    src_stat = rng.normal(0, 1, (60, S))
    src_stat[:30] += 3.0  # half the simulations look like the observations
    tgt_dyn = rng.normal(0, 1, (20, 365, D))
    tgt_stat = rng.normal(3.0, 1, (20, S))
    for method in ("classifier", "meanstd"):
        w = SampleWeighter(method).fit(sample_summary(src_dyn, src_stat), sample_summary(tgt_dyn, tgt_stat))
        weights = w.weights(src_dyn, src_stat)
        assert weights.std() > 0.1 and abs(weights.mean() - 1.0) < 1e-6
        assert weights[:30].mean() > 1.5 * weights[30:].mean(), method  # similar samples weigh more
    torch.manual_seed(0)
    model = build_model("lstm", D, S, **TINY)
    src = batch(6, 0.0, 3)
    src[schema.DYNAMIC][:3] *= 3.0  # unequal errors across samples, so weights matter
    tgt = batch(2, 0.0, 4)
    obj = ReweightObjective(decay=0.5)
    src[WEIGHT_COLUMN] = torch.ones(6)
    uniform, _ = obj.loss(model, model, {}, tgt, src, 0.0, 0)
    src[WEIGHT_COLUMN] = torch.tensor([4.0, 4.0, 4.0, 0.1, 0.1, 0.1])
    weighted, _ = obj.loss(model, model, {}, tgt, src, 0.0, 0)
    decayed, logged = obj.loss(model, model, {}, tgt, src, 0.0, 3)
    assert abs(float(weighted) - float(uniform)) > 1e-3 * float(uniform)
    assert abs(float(decayed) - float(weighted)) > 1e-3 * float(weighted)
    assert logged["source_weight_mean"] == pytest.approx(float(src[WEIGHT_COLUMN].mean()) * 0.5**3)


def test_reweight_fits_and_weighs_samples_with_gapped_drivers():
    """Tower drivers have gap days and whole missing columns (NaN): the summaries use the days there are, a
    summary no day supports takes the fitted samples' mean, and the weights stay finite and informative."""
    rng = np.random.default_rng(1)
    src_dyn = rng.normal(0, 1, (60, 365, D))
    src_stat = rng.normal(0, 1, (60, S))
    src_stat[:30] += 3.0
    tgt_dyn = rng.normal(0, 1, (20, 365, D))
    tgt_stat = rng.normal(3.0, 1, (20, S))
    tgt_dyn[rng.random(tgt_dyn.shape) < 0.3] = np.nan  # gap days
    tgt_dyn[:5, :, 2] = np.nan  # a driver these towers do not measure
    src_dyn[0, 100:130, 1] = np.nan
    src_dyn[1, :, 0] = np.nan
    summary = sample_summary(tgt_dyn, tgt_stat)
    assert np.isfinite(summary[5:]).all() and np.isnan(summary[:5, [2, D + 2]]).all()
    for method in ("classifier", "meanstd"):
        w = SampleWeighter(method).fit(sample_summary(src_dyn, src_stat), summary)
        weights = w.weights(src_dyn, src_stat)
        assert np.isfinite(weights).all() and abs(weights.mean() - 1.0) < 1e-6, method
        assert weights[:30].mean() > 1.5 * weights[30:].mean(), method  # still: similar samples weigh more


def test_residual_model_is_sim_plus_residual_and_round_trips(tmp_path):
    norm = {"dynamic": {"mean": [0.0] * D, "std": [1.0] * D}, "static": {"mean": [0.0] * S, "std": [1.0] * S},
            "target": {"mean": 5.0, "std": 2.0}}
    base = {"name": "lstm", **TINY}
    torch.manual_seed(0)
    model = build_model("residual", D, S, norm=norm, base=base, residual=base)
    b = batch(3)
    with torch.no_grad():
        torch.nn.init.zeros_(model.head.weight)
        torch.nn.init.zeros_(model.head.bias)
        assert torch.allclose(model(b[schema.DYNAMIC], b[schema.STATIC]), model.sim(b[schema.DYNAMIC], b[schema.STATIC]),
                              atol=1e-5)
        model.head.bias.fill_(1.5)
        assert torch.allclose(model(b[schema.DYNAMIC], b[schema.STATIC]),
                              model.sim(b[schema.DYNAMIC], b[schema.STATIC]) + 1.5 * 2.0, atol=1e-5)
    assert not any(p.requires_grad for p in model.sim.parameters())
    model.train()
    assert not model.sim.training  # the frozen simulation part never runs dropout
    write_checkpoint(tmp_path / "ck", model, {}, {})
    again = load_checkpoint_model(tmp_path / "ck")
    with torch.no_grad():
        assert torch.allclose(again(b[schema.DYNAMIC], b[schema.STATIC]), model.eval()(b[schema.DYNAMIC], b[schema.STATIC]),
                              atol=1e-5)


def test_registry_and_param_validation():
    assert set(STRATEGIES) == {"scratch", "finetune", "adversarial", "residual", "reweight"}
    assert all(s.name == n for n, s in STRATEGIES.items())
    with pytest.raises(XmwInputError, match="unknown transfer strategy"):
        get_strategy("nope")
    with pytest.raises(XmwInputError, match="params.freeze"):
        validate_params(FinetuneParams, {"freeze": ["decoder"]}, "finetune")
    with pytest.raises(XmwInputError, match="params.lamda_max: unknown parameter"):
        validate_params(AdversarialParams, {"lamda_max": 1.0}, "adversarial")
