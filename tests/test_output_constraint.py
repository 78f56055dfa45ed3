"""The non-negative output constraint: where ``auto`` turns it on (every training target >= 0, from the store's
training statistics), how a config names it, and that checkpoints record it (old ones load as unconstrained)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_world import make_emission_store, make_grid_store

from xmw_ray.config import TrainConfig, validate
from xmw_ray.data.normstats import NormPartial, NormStats, normstats_path
from xmw_ray.data.ray_datasets import norm_stats, store_info
from xmw_ray.data.splits import SplitSpec
from xmw_ray.errors import XmwInputError
from xmw_ray.models import build_model, load_model
from xmw_ray.models.base import resolve_output_constraint
from xmw_ray.models.checkpoint import save_model
from xmw_ray.train.runner import with_output_constraint

SPLIT = SplitSpec(kind="temporal", train_years=(2000, 2001), test_years=(2002, 2002))


@pytest.fixture(scope="module")
def emission_store(tmp_path_factory) -> Path:
    """A Grid store whose targets are all >= 0 (gamma-distributed emission)."""
    return make_emission_store(tmp_path_factory.mktemp("emission"))


@pytest.fixture(scope="module")
def signed_store(tmp_path_factory) -> Path:
    """The training tests' learnable store: its target (20 + 1.5 TAIR + …) goes below zero in cold cells."""
    return make_grid_store(tmp_path_factory.mktemp("signed"))


def train_cfg(store: Path, **model: object) -> TrainConfig:
    return validate({"data": {"store": str(store), "split": SPLIT.model_dump(mode="json")},
                     "model": {"name": "lstm", **model}}, TrainConfig)


def test_auto_resolves_from_the_smallest_training_target() -> None:
    assert resolve_output_constraint("auto", 0.0) == "softplus"
    assert resolve_output_constraint("auto", 12.5) == "softplus"
    assert resolve_output_constraint("auto", -0.01) == "none"
    assert resolve_output_constraint("auto", None) == "none"  # unknown: do not assume emission only
    assert resolve_output_constraint("softplus", -3.0) == "softplus"  # explicit wins (noisy towers of an emitter)
    assert resolve_output_constraint("none", 5.0) == "none"


def test_training_statistics_record_the_smallest_target_over_merged_blocks() -> None:
    rng = np.random.default_rng(0)
    blocks = [{"dynamic": rng.normal(size=(4, 365, 2)), "static": rng.normal(size=(4, 1)),
               "target": rng.normal(5.0, 3.0, size=(4, 365))} for _ in range(3)]
    blocks[1]["target"][2, 7] = -42.0
    blocks[2]["target"][:] = np.nan  # a block without observed days changes nothing
    total = NormPartial.of_block(blocks[0]).merge(NormPartial.of_block(blocks[1])).merge(
        NormPartial.of_block(blocks[2]))
    stats = NormStats.from_partial(total, ["a", "b"], ["s"])
    assert stats.target_min == -42.0
    assert NormStats.from_dict(json.loads(json.dumps(stats.to_dict()))).target_min == -42.0


def test_default_turns_on_for_non_negative_targets_and_off_otherwise(emission_store, signed_store) -> None:
    for store, expected in ((emission_store, "softplus"), (signed_store, "none")):
        norm = norm_stats(store_info(str(store)), SPLIT).to_dict()
        assert (norm["target_min"] >= 0) == (expected == "softplus")
        assert with_output_constraint(train_cfg(store), norm).model.output_constraint == expected
        # an explicit choice is kept; a paired source with a negative target turns ``auto`` off
        assert with_output_constraint(train_cfg(store, output_constraint="none"), norm).model.output_constraint \
            == "none"
    emission = norm_stats(store_info(str(emission_store)), SPLIT).to_dict()
    signed = norm_stats(store_info(str(signed_store)), SPLIT).to_dict()
    assert with_output_constraint(train_cfg(emission_store), emission, signed).model.output_constraint == "none"


def test_statistics_cached_before_the_minimum_existed_are_computed_again(emission_store) -> None:
    info = store_info(str(emission_store))
    fresh = norm_stats(info, SPLIT)
    path = Path(normstats_path(str(emission_store), SPLIT.key()))
    old = json.loads(path.read_text())
    del old["target_min"]
    path.write_text(json.dumps(old))
    again = norm_stats(info, SPLIT)
    assert again.target_min == fresh.target_min and again.target_min is not None
    assert json.loads(path.read_text())["target_min"] == fresh.target_min  # the cache is brought up to date


def test_config_names_the_constraint_in_one_place(emission_store) -> None:
    with pytest.raises(XmwInputError, match=r"model\.output_constraint: Input should be 'auto', 'softplus' or"):
        train_cfg(emission_store, output_constraint="relu")
    with pytest.raises(XmwInputError, match=r"model\.params\.output_constraint: set model\.output_constraint"):
        train_cfg(emission_store, params={"output_constraint": "softplus"})
    assert train_cfg(emission_store).model.output_constraint == "auto"


def _tiny(**hparams: object) -> torch.nn.Module:
    torch.manual_seed(0)
    norm = {"dynamic": {"mean": [0.0] * 3, "std": [1.0] * 3}, "static": {"mean": [0.0], "std": [1.0]},
            "target": {"mean": 30.0, "std": 20.0}}
    return build_model("lstm", 3, 1, norm=norm, hidden_size=4, num_layers=1, dropout=0.0, **hparams).eval()


def test_checkpoint_records_the_constraint_and_an_old_one_loads_unconstrained(tmp_path) -> None:
    dyn, stat = torch.randn(2, 365, 3) * 4, torch.randn(2, 1)
    bound = _tiny(output_constraint="softplus")
    with torch.no_grad():
        bound.head.bias -= 4.0  # push part of the year below zero without the constraint
    path = save_model(bound, tmp_path / "new" / "model.pt")
    assert torch.load(path, weights_only=True)["config"]["output_constraint"] == "softplus"
    loaded = load_model(path).eval()
    assert loaded.hp.output_constraint == "softplus"
    with torch.no_grad():
        torch.testing.assert_close(loaded(dyn, stat), bound(dyn, stat), rtol=0, atol=0)
        assert (loaded(dyn, stat) >= 0).all()

    # a checkpoint written before the field existed: same weights, no key; it was trained unconstrained
    payload = torch.load(path, weights_only=True)
    del payload["config"]["output_constraint"]
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt").eval()
    free = _tiny()
    free.load_state_dict(bound.state_dict())  # the constraint has no weights: the same state loads either way
    with torch.no_grad():
        assert old.hp.output_constraint == "none"
        torch.testing.assert_close(old(dyn, stat), free(dyn, stat), rtol=0, atol=0)
        assert (old(dyn, stat) < 0).any()


def test_an_ensemble_leaves_the_constraint_to_its_members() -> None:
    with pytest.raises(XmwInputError, match="output_constraint belongs to each member"):
        build_model("ensemble", 3, 1, members=[{"name": "lstm", "hidden_size": 4}], output_constraint="softplus")
