"""The ensemble model: its flux is the mean of its members', each member keeps its own statistics, a written
ensemble checkpoint evaluates and infers like any other, and bad members are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builders import write_tiny_temmdm

from xmw_ray.data import schema
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.ray_datasets import sample_dataset, store_info
from xmw_ray.data.splits import SplitSpec
from xmw_ray.data.tower_features import file_sha256
from xmw_ray.errors import XmwInputError
from xmw_ray.infer.predictor import FluxWorker
from xmw_ray.models import EnsembleModel, build_model, ensemble_from_models, load_model
from xmw_ray.models.checkpoint import (
    ENSEMBLE_MEMBERS_KEY,
    MODEL_FILE,
    load_checkpoint_model,
    save_model,
    write_checkpoint,
    write_ensemble_checkpoint,
)
from xmw_ray.train.evaluate import evaluate_checkpoint
from xmw_ray.train.metrics import MetricAccumulator

N_DYN, N_STAT = 5, 10  # the grid store's drivers: 5 daily, 8 static + 2 annual
TINY = {"hidden_size": 4, "num_layers": 1, "dropout": 0.0}
SPLIT = {"kind": "temporal", "train_years": [2000, 2000], "test_years": [2001, 2001], "val_fraction": 0.0,
         "seed": 0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def norm(shift: float, n_dynamic: int = N_DYN) -> dict:
    """Statistics that differ by member, so a member that used another's would predict differently."""
    dyn_mean, dyn_std = [10.0 + shift, 175.0, 0.0, 15.5, 30.0], [6.0, 100.0 + shift, 17.0, 8.0, 17.0]
    return {"dynamic": {"mean": dyn_mean[:n_dynamic], "std": dyn_std[:n_dynamic]},
            "static": {"mean": [5.0 + shift] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
            "target": {"mean": 40.0 + shift, "std": 10.0 + shift}}


def members(n_dynamic: int = N_DYN) -> list:
    """Three trained-looking members: two LSTM seeds (one with projection and skip) and a GRU, each its own stats."""
    out = []
    for k, (name, extra) in enumerate((("lstm", {}), ("lstm", {"input_size": 6, "skip": True}), ("gru", {}))):
        torch.manual_seed(k)
        model = build_model(name, n_dynamic, N_STAT, **TINY, **extra)
        model.set_normalization(norm(3.0 * k, n_dynamic))
        out.append(model.eval())
    return out


def drivers(b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return 10 + 20 * torch.rand(b, 365, N_DYN, generator=g), 5 + 3 * torch.rand(b, N_STAT, generator=g)


def test_prediction_is_the_mean_of_the_members_and_survives_a_checkpoint(tmp_path):
    parts = members()
    ensemble = ensemble_from_models(parts)
    dyn, stat = drivers()
    with torch.no_grad():
        expected = torch.stack([m(dyn, stat) for m in parts]).mean(0)
        torch.testing.assert_close(ensemble(dyn, stat), expected)
        assert (parts[0](dyn, stat) - parts[1](dyn, stat)).abs().max() > 1e-3  # the mean is not one member's
        loaded = load_model(save_model(ensemble, tmp_path / "model.pt")).eval()
        assert isinstance(loaded, EnsembleModel)
        torch.testing.assert_close(loaded(dyn, stat), expected, rtol=0, atol=0)
    assert [m.normalization() for m in loaded.members] == [m.normalization() for m in parts]


def test_training_views_and_nesting_are_clear_errors():
    ensemble = ensemble_from_models(members())
    dyn, stat = drivers(1)
    for view in (ensemble.embed, ensemble.forward_normalized):
        with pytest.raises(XmwInputError, match="never trained"):
            view(dyn, stat)
    with pytest.raises(XmwInputError, match="different normalisation statistics"):
        ensemble.normalization()
    with pytest.raises(XmwInputError, match="cannot nest an ensemble"):
        ensemble_from_models([ensemble])
    with pytest.raises(XmwInputError, match="input_clip belongs to each member"):
        build_model("ensemble", N_DYN, N_STAT, input_clip=4.0, members=[{"name": "lstm"}])
    with pytest.raises(XmwInputError, match="static_inputs belongs to each member"):
        build_model("ensemble", N_DYN, N_STAT, static_inputs=False, members=[{"name": "lstm"}])
    with pytest.raises(XmwInputError, match="'n_static' is the ensemble's"):
        build_model("ensemble", N_DYN, N_STAT, members=[{"name": "lstm", "n_static": 3}])


def test_mismatched_member_input_sizes_are_one_line_errors(tmp_path):
    good, *_ = members()
    bad = members(n_dynamic=4)[1]
    with pytest.raises(XmwInputError) as err:
        ensemble_from_models([good, bad])
    assert str(err.value) == "ensemble: member 1 takes 4 dynamic / 10 static inputs, member 0 takes 5 / 10"
    for name, model in (("a", good), ("b", bad)):
        write_checkpoint(tmp_path / name, model, {"data": {"split": SPLIT}}, {})
    with pytest.raises(XmwInputError, match="member 1 takes 4 dynamic") as err:
        write_ensemble_checkpoint([tmp_path / "a", tmp_path / "b"], tmp_path / "ens", {})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ens").exists()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A 10° grid store of two years and three member checkpoint directories sharing one split."""
    root = tmp_path_factory.mktemp("ensemble_world")
    write_tiny_temmdm(root / "src", res=10.0, years=(2000, 2001), seed=5, spoil_cells=0, keep_arrays=False)
    prepare_grid(root / "src", root / "grid.zarr", cells_per_chunk=64)
    parts = members()
    dirs = []
    for k, model in enumerate(parts):
        model.features = GridStore.open(root / "grid.zarr").features  # what training on this grid records
        dirs.append(write_checkpoint(root / f"m{k}", model, {"data": {"split": SPLIT}, "run": {"seed": k}}, {}))
    return {"root": root, "grid": root / "grid.zarr", "members": parts, "dirs": dirs}


def test_written_ensemble_evaluates_as_the_hand_averaged_members(ray_session, world):
    out = world["root"] / "runs" / "ens" / "best"
    path = write_ensemble_checkpoint(world["dirs"], out, {"members": 3})
    assert path == out and sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "model.pt"]
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["split"] == SPLIT and config["run"] == {"seed": 0}  # the first member's
    assert config[ENSEMBLE_MEMBERS_KEY] == [str(d) for d in world["dirs"]]
    assert config["model"]["name"] == "ensemble" and len(config["model"]["params"]["members"]) == 3
    assert json.loads((out / "metrics.json").read_text()) == {"members": 3}

    report = evaluate_checkpoint(str(out), str(world["grid"]), "test")
    acc = MetricAccumulator("daily")
    ds = sample_dataset(store_info(str(world["grid"])), SplitSpec.model_validate(SPLIT), "test")
    years = set()
    for batch in ds.iter_batches(batch_size=1000, batch_format="numpy"):
        dyn, stat = torch.tensor(batch[schema.DYNAMIC]), torch.tensor(batch[schema.STATIC])
        with torch.no_grad():
            by_hand = np.mean([m(dyn, stat).numpy() for m in world["members"]], axis=0)
        acc.update(by_hand, batch[schema.TARGET], batch[schema.ENTITY])
        years.update(batch[schema.YEAR].tolist())
    expected = acc.result()
    assert years == {2001} and expected["pooled"]["n"] > 0
    assert report["pooled"]["n"] == expected["pooled"]["n"]
    for key, value in expected["pooled"].items():
        assert report["pooled"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key

    # inference loads it like any other checkpoint (one xmw infer actor, called in this process)
    worker = FluxWorker(str(out), file_sha256(out / MODEL_FILE), str(world["grid"]))
    dyn, stat = GridStore.open(world["grid"]).read_inputs(1, 0, 2)  # 2001, the first two cells
    with torch.no_grad():
        by_hand = np.mean([m(torch.from_numpy(dyn), torch.from_numpy(stat)).numpy() for m in world["members"]], axis=0)
    np.testing.assert_allclose(worker.predict(1, 0, 2), by_hand, rtol=1e-5, atol=1e-5)

    # re-running replaces the directory whole and leaves nothing aside
    write_ensemble_checkpoint(world["dirs"][:2], out, {"members": 2})
    assert len(load_checkpoint_model(out).members) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["best"]


def test_members_with_different_splits_are_refused(world, tmp_path):
    other = write_checkpoint(tmp_path / "other", world["members"][0], {"data": {"split": {**SPLIT, "seed": 1}}}, {})
    with pytest.raises(XmwInputError, match="its data split differs"):
        write_ensemble_checkpoint([world["dirs"][0], other], tmp_path / "ens", {})


def test_an_ensemble_replaces_an_earlier_checkpoint_and_nothing_else(tmp_path):
    """A transfer ensemble is written to its run's ``best``: an earlier checkpoint there is replaced, a user's file
    is refused in one line and left where it was."""
    parts = members()
    for name, model in (("a", parts[0]), ("b", parts[1])):
        write_checkpoint(tmp_path / name, model, {"data": {"split": SPLIT}}, {})
    best = tmp_path / "run" / "best"
    write_ensemble_checkpoint([tmp_path / "a", tmp_path / "b"], best, {"n": 1})
    write_ensemble_checkpoint([tmp_path / "a", tmp_path / "b"], best, {"n": 2})
    assert json.loads((best / "metrics.json").read_text()) == {"n": 2}
    (best / "notes.txt").write_text("mine")
    with pytest.raises(XmwInputError, match="holds 'notes.txt', which is not part of a checkpoint"):
        write_ensemble_checkpoint([tmp_path / "a", tmp_path / "b"], best, {"n": 3})
    assert (best / "notes.txt").read_text() == "mine"
