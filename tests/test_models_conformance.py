"""Every registered model honours the contract training, transfer and inference rely on."""

from __future__ import annotations

import pytest
import torch

from xmw_ray.errors import XmwInputError
from xmw_ray.models import MODELS, XmwModel, build_model, load_model
from xmw_ray.models.checkpoint import save_model
from xmw_ray.models.pyraformer import pyramid_mask, scale_sizes
from xmw_ray.models.tcn import receptive_field
from xmw_ray.train.losses import masked_mse

N_DYN, N_STAT = 3, 2
#: Every registered model under its ``test_params``, plus options that add parts: case → (name, overrides).
CASES = {name: (name, {}) for name in sorted(MODELS)} | {"lstm-skip": ("lstm", {"input_size": 6, "skip": True})}
NAMES = sorted(CASES)
#: The ensemble averages trained members' flux and is never trained: it has no ``embed``/``forward_normalized``
#: (``test_models_ensemble.py`` covers what it has), so the tests of those views leave it out.
TRAINABLE = [case for case in NAMES if CASES[case][0] != "ensemble"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_batch(b: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw-unit drivers (temperature-like, rain-like, radiation-like) and a flux that depends on them."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(365, dtype=torch.float32) / 365
    phase = torch.rand(b, 1, generator=g)
    temp = 10 + 15 * torch.sin(2 * torch.pi * t - 1.5 + 2 * phase)
    rain = torch.rand(b, 365, generator=g) * 5
    rad = (100 + 50 * torch.cos(2 * torch.pi * t)).expand(b, -1)
    dyn = torch.stack([temp, rain, rad], dim=-1)
    stat = torch.rand(b, N_STAT, generator=g) * 3
    target = (5 + stat[:, :1]) * torch.relu(dyn[..., 0]) / 10
    target[:, ::3] = float("nan")
    return dyn, stat, target


def stats_of(dyn: torch.Tensor, stat: torch.Tensor, target: torch.Tensor) -> dict:
    obs = target[torch.isfinite(target)]
    return {
        "dynamic": {"mean": dyn.mean((0, 1)).tolist(), "std": dyn.std((0, 1)).tolist()},
        "static": {"mean": stat.mean(0).tolist(), "std": stat.std(0).tolist()},
        "target": {"mean": float(obs.mean()), "std": float(obs.std())},
    }


def model_cls(case: str) -> type[XmwModel]:
    return MODELS[CASES[case][0]]


def tiny(case: str, seed: int = 0, **override) -> torch.nn.Module:
    name, options = CASES.get(case, (case, {}))
    dyn, stat, target = make_batch()
    torch.manual_seed(seed)
    return build_model(
        name, N_DYN, N_STAT, norm=stats_of(dyn, stat, target), **{**MODELS[name].test_params, **options, **override}
    )


@pytest.mark.parametrize("name", TRAINABLE)
def test_output_shapes_and_flux_units(name: str) -> None:
    model = tiny(name).eval()
    dyn, stat, _ = make_batch(b=3)
    with torch.no_grad():
        flux = model(dyn, stat)
        norm = model.forward_normalized(dyn, stat)
        emb = model.embed(dyn, stat)
    assert flux.shape == norm.shape == (3, 365)
    assert emb.shape == (3, 365, model.embedding_size)
    assert model.head.in_features == model.embedding_size
    torch.testing.assert_close(flux, model.target_mean + model.target_std * norm)
    assert torch.isfinite(flux).all()


@pytest.mark.parametrize("name", TRAINABLE)
def test_masked_loss_backward_reaches_every_parameter(name: str) -> None:
    model = tiny(name).train()
    dyn, stat, target = make_batch()
    loss = masked_mse(model.forward_normalized(dyn, stat), model.normalize_target(target))
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # a frozen part (the residual model's simulation model)
            continue
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.requires_grad) > 0


@pytest.mark.parametrize("name", TRAINABLE)
def test_overfits_one_small_batch(name: str) -> None:
    model = tiny(name).train()
    dyn, stat, target = make_batch()
    target_n = model.normalize_target(target)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = masked_mse(model.forward_normalized(dyn, stat), target_n)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_seed(name: str) -> None:
    drop = {"dropout": 0.3} if "dropout" in model_cls(name).Params.model_fields else {}
    a, b = tiny(name, seed=7, **drop), tiny(name, seed=7, **drop)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
    dyn, stat, _ = make_batch()
    outs = []
    for model in (a.train(), b.train()):  # dropout active: same seed, same masks
        torch.manual_seed(3)
        outs.append(model(dyn, stat))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    head = next(k for k in a.state_dict() if k.endswith("head.weight"))  # an ensemble's members have the heads
    assert not torch.equal(tiny(name, seed=8).state_dict()[head], a.state_dict()[head])


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_is_self_contained(name: str, tmp_path) -> None:
    model = tiny(name).eval()
    path = save_model(model, tmp_path / "ckpt" / "model.pt")
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == model.config()
    loaded = load_model(path).eval()
    assert type(loaded) is type(model) and loaded.config() == model.config()
    assert loaded.normalization() == model.normalization()
    dyn, stat, _ = make_batch(b=2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(dyn, stat), model(dyn, stat), rtol=0, atol=0)


@pytest.mark.parametrize("name", TRAINABLE)
def test_nan_targets_are_ignored(name: str) -> None:
    model = tiny(name).eval()
    dyn, stat, target = make_batch()
    pred = model.forward_normalized(dyn, stat)
    target_n = model.normalize_target(target)
    loss = masked_mse(pred, target_n)
    obs = torch.isfinite(target_n)
    torch.testing.assert_close(loss, ((pred - target_n)[obs] ** 2).mean())
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(grad).all()
    assert (grad[~obs] == 0).all() and (grad[obs] != 0).any()
    filled = torch.where(obs, target_n, torch.full_like(target_n, 1e6))  # any value on unobserved days...
    masked_again = torch.where(obs, filled, torch.full_like(filled, float("nan")))
    torch.testing.assert_close(masked_mse(pred, masked_again), loss)  # ...is never read


@pytest.mark.parametrize("name", NAMES)
def test_samples_in_a_batch_are_independent(name: str) -> None:
    model = tiny(name).eval()
    dyn, stat, _ = make_batch(b=3)
    with torch.no_grad():
        together = model(dyn, stat)
        alone = model(dyn[1:2], stat[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TRAINABLE)
def test_normalisation_happens_inside_with_the_buffers(name: str) -> None:
    """Rescaling the raw inputs and the stored statistics alike leaves the prediction unchanged."""
    model = tiny(name).eval()
    dyn, stat, _ = make_batch(b=2)
    with torch.no_grad():
        before = model.forward_normalized(dyn, stat)
        for part in model.modules():  # every model inside (a residual model holds a frozen one)
            if isinstance(part, XmwModel):
                st = part.normalization()
                dyn_st, stat_st = st["dynamic"], st["static"]
                part.set_normalization(
                    {
                        "dynamic": {
                            "mean": [2 * m + 1 for m in dyn_st["mean"]],
                            "std": [2 * s for s in dyn_st["std"]],
                        },
                        "static": {
                            "mean": [3 * m - 2 for m in stat_st["mean"]],
                            "std": [3 * s for s in stat_st["std"]],
                        },
                        "target": st["target"],
                    }
                )
        after = model.forward_normalized(2 * dyn + 1, 3 * stat - 2)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def same_statistics_everywhere(model: torch.nn.Module, stats: dict) -> None:
    """Give every model inside (a residual model's simulation part, an ensemble's members) the same statistics."""
    for part in model.modules():
        if isinstance(part, XmwModel):
            part.set_normalization(stats)


@pytest.mark.parametrize("name", NAMES)
def test_missing_inputs_predict_as_the_training_mean(name: str) -> None:
    """A NaN driver (dynamic or static) gives the prediction of the training mean in its place, never NaN."""
    model = tiny(name).eval()
    dyn, stat, target = make_batch()
    stats = stats_of(dyn, stat, target)
    same_statistics_everywhere(model, stats)
    gaps = torch.rand(dyn.shape, generator=torch.Generator().manual_seed(1)) < 0.2
    filled_dyn = torch.where(gaps, torch.tensor(stats["dynamic"]["mean"]), dyn)
    filled_stat = stat.clone()
    filled_stat[1, 0] = stats["static"]["mean"][0]
    gappy_stat = stat.clone()
    gappy_stat[1, 0] = float("nan")
    with torch.no_grad():
        gappy = model(dyn.masked_fill(gaps, float("nan")), gappy_stat)
        filled = model(filled_dyn, filled_stat)
    assert torch.isfinite(gappy).all()
    torch.testing.assert_close(gappy, filled, rtol=1e-6, atol=1e-6)


def part_options(name: str, **options) -> dict:
    """``options`` on the model, or on both parts of a residual model (its sim is a model of its own)."""
    model_name = CASES[name][0]
    if model_name != "residual":
        return options
    params = MODELS[model_name].test_params
    return {part: {**params[part], **options} for part in ("base", "residual")}


def clip_options(name: str, clip: float) -> dict:
    return part_options(name, input_clip=clip)


@pytest.mark.parametrize("name", TRAINABLE)
def test_static_inputs_off_makes_the_prediction_independent_of_them(name: str) -> None:
    """``static_inputs: false`` (a nested setting on real towers): the site descriptors change nothing."""
    off, on = tiny(name, **part_options(name, static_inputs=False)).eval(), tiny(name).eval()
    dyn, stat, _ = make_batch()
    other = stat * 5 + 7
    with torch.no_grad():
        torch.testing.assert_close(off(dyn, stat), off(dyn, other), rtol=0, atol=0)
        assert not torch.allclose(on(dyn, stat), on(dyn, other))
    assert build_model(**off.config()).static_inputs is False  # a checkpoint keeps the setting


def test_a_checkpoint_config_from_before_static_inputs_builds_with_them_on() -> None:
    """Checkpoints written before ``static_inputs`` existed have no such key: they use the static inputs."""
    config = tiny("lstm").config()
    del config["static_inputs"]
    model = build_model(**config).eval()
    assert model.static_inputs is True
    dyn, stat, _ = make_batch()
    with torch.no_grad():
        assert not torch.allclose(model(dyn, stat), model(dyn, stat * 5 + 7))


@pytest.mark.parametrize("name", TRAINABLE)
def test_input_clip_bounds_extreme_inputs_and_leaves_normal_ones(name: str) -> None:
    clipped, plain = tiny(name, **clip_options(name, 3.0)).eval(), tiny(name).eval()  # same seed: same weights
    dyn, stat, target = make_batch()
    for model in (clipped, plain):
        same_statistics_everywhere(model, stats_of(dyn, stat, target))
    assert ((dyn - clipped.dyn_mean).abs() < 3 * clipped.dyn_std).all()  # the batch itself is within ±3 std
    extreme, edge = dyn.clone(), dyn.clone()
    extreme[:, 100:130, 0] = clipped.dyn_mean[0] + 50 * clipped.dyn_std[0]
    edge[:, 100:130, 0] = clipped.dyn_mean[0] + 3 * clipped.dyn_std[0]
    with torch.no_grad():
        torch.testing.assert_close(clipped(dyn, stat), plain(dyn, stat), rtol=0, atol=0)
        assert (clipped(extreme, stat) - plain(extreme, stat)).abs().max() > 1e-4
        torch.testing.assert_close(clipped(extreme, stat), clipped(edge, stat))  # beyond the clip = at the clip


def softplus_options(name: str) -> dict:
    """``output_constraint="softplus"`` on the model, or on every member of an ensemble (its own is refused)."""
    model_name = CASES[name][0]
    if model_name != "ensemble":
        return {"output_constraint": "softplus"}
    return {"members": [{**m, "output_constraint": "softplus"} for m in MODELS[model_name].test_params["members"]]}


def pull_heads_down(model: torch.nn.Module, by: float) -> None:
    """Lower every head's bias by ``by`` (normalised units), so the unconstrained flux goes well below zero."""
    with torch.no_grad():
        for part in model.modules():
            if isinstance(part, XmwModel) and isinstance(getattr(part, "head", None), torch.nn.Linear):
                part.head.bias -= by


@pytest.mark.parametrize("name", NAMES)
def test_softplus_constraint_never_outputs_negative_flux(name: str) -> None:
    free, bound = tiny(name).eval(), tiny(name, **softplus_options(name)).eval()  # same seed: same weights
    for model in (free, bound):
        pull_heads_down(model, 5.0)
    g = torch.Generator().manual_seed(3)
    dyn0, stat0, _ = make_batch(b=6)
    for scale in (1.0, 10.0):  # typical drivers, then drivers far outside the training range
        dyn = dyn0 + scale * dyn0.std() * torch.randn(dyn0.shape, generator=g)
        stat = stat0 + scale * torch.randn(stat0.shape, generator=g)
        with torch.no_grad():
            unconstrained, flux = free(dyn, stat), bound(dyn, stat)
        assert (unconstrained < 0).any()  # the same network without the constraint does go negative
        assert torch.isfinite(flux).all() and (flux >= 0).all()
        if name in TRAINABLE:  # the normalised view the loss compares is the same prediction
            with torch.no_grad():
                torch.testing.assert_close(bound.target_mean + bound.target_std * bound.forward_normalized(dyn, stat),
                                           flux, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_config_rebuilds_and_defaults_build(name: str) -> None:
    model = tiny(name)
    again = build_model(**model.config())
    assert again.config() == model.config()
    assert set(model_cls(name).hparam_fields()) == set(model.config()) - {"name", "n_dynamic", "n_static"}
    if all(not f.is_required() for f in model_cls(name).Params.model_fields.values()):
        default = build_model(CASES[name][0], 5, 10)  # X-MethaneWet's sizes
        assert default.embedding_size >= 8
        with torch.no_grad():
            assert default(torch.zeros(1, 365, 5), torch.zeros(1, 10)).shape == (1, 365)


def test_defaults_are_x_methanewet_sizes() -> None:
    assert {k: build_model("lstm", 5, 10).config()[k] for k in ("hidden_size", "num_layers", "dropout")} == {
        "hidden_size": 8,
        "num_layers": 3,
        "dropout": 0.2,
    }
    assert build_model("ealstm", 5, 10).config()["hidden_size"] == 8
    cfg = build_model("pyraformer", 5, 10).config()
    assert (cfg["d_model"], cfg["n_heads"], cfg["d_ff"], cfg["window_sizes"], cfg["inner_size"]) == (
        8,
        4,
        32,
        [4, 4],
        5,
    )


def test_bad_names_and_hparams_are_one_line_errors() -> None:
    with pytest.raises(XmwInputError, match="unknown model 'lstn'"):
        build_model("lstn", 3, 2)
    with pytest.raises(XmwInputError, match="unknown hyper-parameter 'hidden'"):
        build_model("lstm", 3, 2, hidden=8)
    with pytest.raises(XmwInputError, match="'num_layers'"):
        build_model("gru", 3, 2, num_layers=0)
    with pytest.raises(XmwInputError, match="n_heads=5 does not divide d_model=8"):
        build_model("transformer", 3, 2, d_model=8, n_heads=5)
    with pytest.raises(XmwInputError, match="does not cover the year"):
        build_model("tcn", 3, 2, num_levels=3)
    with pytest.raises(XmwInputError, match="normalisation stats 'dynamic'"):
        build_model("lstm", 3, 2, norm={"dynamic": {"mean": [0], "std": [1]}, "static": {}, "target": {}})
    with pytest.raises(XmwInputError, match="'input_clip'"):
        build_model("lstm", 3, 2, input_clip=0)
    with pytest.raises(XmwInputError, match="skip=True needs input_size > 0"):
        build_model("lstm", 3, 2, skip=True)
    with pytest.raises(XmwInputError, match="unknown hyper-parameter 'skip'"):  # an LSTM option only
        build_model("gru", 3, 2, skip=True)
    lstm = {"name": "lstm", "input_clip": 3.0}
    with pytest.raises(XmwInputError, match="input_clip=2.0 disagrees with residual.input_clip=3.0"):
        build_model("residual", 3, 2, input_clip=2.0, base=lstm, residual=lstm)
    model = tiny("lstm")
    with pytest.raises(XmwInputError, match=r"dynamic must be \(B, 365, 3\)"):
        model(torch.zeros(1, 365, 4), torch.zeros(1, 2))
    for message in ("unknown hyper-parameter", "does not divide"):
        try:
            build_model("transformer", 3, 2, **({"oops": 1} if "unknown" in message else {"n_heads": 3}))
        except XmwInputError as exc:
            assert "\n" not in str(exc) and message in str(exc)


def test_constant_feature_normalises_safely() -> None:
    model = build_model(
        "lstm",
        2,
        1,
        norm={
            "dynamic": {"mean": [1, 5], "std": [1, 0]},
            "static": {"mean": [0], "std": [0]},
            "target": {"mean": 0, "std": 1},
        },
    )
    assert model.dyn_std.tolist() == [1.0, 1.0] and model.stat_std.tolist() == [1.0]
    with torch.no_grad():
        assert torch.isfinite(model(torch.full((1, 365, 2), 7.0), torch.full((1, 1), 3.0))).all()


def test_accepts_the_prepared_stores_flat_normstats() -> None:
    """The data room saves statistics flat (``NormStats.to_dict()``); a model takes that form as is."""
    flat = {
        "dynamic_mean": [1.0, 2.0],
        "dynamic_std": [2.0, 4.0],
        "static_mean": [3.0],
        "static_std": [0.5],
        "target_mean": 10.0,
        "target_std": 5.0,
        "dynamic_vars": ["TAIR", "PREC"],
        "n_samples": 7,
    }
    model = build_model("gru", 2, 1, norm=flat)
    assert model.normalization() == {
        "dynamic": {"mean": [1.0, 2.0], "std": [2.0, 4.0]},
        "static": {"mean": [3.0], "std": [0.5]},
        "target": {"mean": 10.0, "std": 5.0},
    }


def _day_influence(model: torch.nn.Module, day_in: int) -> torch.Tensor:
    """Which output days change when the drivers of ``day_in`` change."""
    dyn, stat, _ = make_batch(b=1)
    bumped = dyn.clone()
    bumped[:, day_in] += 5.0
    with torch.no_grad():
        return (model(bumped, stat) - model(dyn, stat)).abs()[0] > 1e-7


def test_tcn_causal_sees_the_whole_past_year_and_no_future() -> None:
    model = tiny("tcn").eval()
    assert model.encoder.receptive_field == receptive_field(3, 7) == 509
    effect = _day_influence(model, 0)
    assert effect[364] and effect.all()  # day 0 reaches 31 December
    effect = _day_influence(model, 200)
    assert not effect[:200].any() and effect[200]


def test_tcn_centred_sees_the_whole_year_both_ways() -> None:
    model = tiny("tcn", causal=False).eval()
    assert model.encoder.receptive_field >= 2 * 364 + 1
    assert _day_influence(model, 364)[0] and _day_influence(model, 0)[364]


def test_transformer_knows_day_order() -> None:
    """Without positions a Transformer is permutation-equivariant: reversing the days would reverse the output."""
    model = tiny("transformer").eval()
    dyn, stat, _ = make_batch(b=1)
    with torch.no_grad():
        out, rev = model(dyn, stat), model(dyn.flip(1), stat).flip(1)
    assert (out - rev).abs().max() > 1e-3


def test_pyramid_mask_for_a_year() -> None:
    sizes = scale_sizes(365, [4, 4])
    assert sizes == [365, 91, 22]
    blocked = pyramid_mask(365, [4, 4], inner_size=5)
    allowed = ~blocked
    assert allowed.shape == (478, 478) and torch.equal(allowed, allowed.T)
    assert allowed[10, 8:13].all() and not allowed[10, 13] and not allowed[10, 7]  # ±2 days
    assert allowed[10, 365 + 2] and allowed[365 + 2, 8:12].all()  # day 10 ↔ parent 2 ↔ children 8..11
    assert allowed[364, 365 + 90]  # the leftover day belongs to the last parent
    assert allowed[365 + 90, 365 + 91 + 21]  # node 90 → parent min(90 // 4, 21) = 21
    assert not allowed[10, 365 + 91 :].any()  # no skip connections across two scales
    assert (allowed[:365].sum(1) <= 5 + 1).all()


def test_pyramidal_attention_equals_dense_attention_under_the_mask() -> None:
    """The gathered (linear-cost) attention computes exactly what dense attention with the pyramid mask does."""
    model = tiny("pyraformer", n_heads=2, inner_size=5).eval()
    layer = model.encoder.layers[0]
    x = torch.randn(2, 478, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        q, k, v = layer.qkv(x).view(2, 478, 3, 2, 4).unbind(dim=2)
        blocked = pyramid_mask(365, [4, 4], inner_size=5)
        dense = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=~blocked
        )
        expected = layer.out_proj(dense.transpose(1, 2).reshape(2, 478, 8))
        torch.testing.assert_close(layer.attend(x), expected, rtol=1e-5, atol=1e-5)
    assert layer.neighbours.shape == (478, 10)  # ±2 days + 1 parent, or 5 neighbours + 1 parent + 4 children


def test_each_searchable_model_declares_its_range_beside_its_params() -> None:
    """Adding a model is one file: its search space sits in the module of its ``Params``, and every model but the
    wrappers (assembled from trained models, never searched) has one whose widest and narrowest answers are
    valid ``Params`` in every size range."""
    from xmw_ray.config import SearchSection
    from xmw_ray.models.ranges import SIZES, searchable_models

    wrappers = {"ensemble", "residual"}
    assert set(searchable_models()) == set(MODELS) - wrappers
    for name in searchable_models():
        cls = MODELS[name]
        assert cls.search_space.__module__ == cls.Params.__module__, name
    for space in SIZES:  # the config check replays each space's corners through the model's Params
        SearchSection(models=searchable_models(), space=space)

