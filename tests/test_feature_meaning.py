"""A feature is a meaning, not a name: stores record each slot's meaning, provenance and unit; a grid-trained model
is refused a Site store prepared without --grid (latitude in ``vegetation_type_11``, zeros in ``phh2o``, IGBP codes
in ``cltveg``, 0.5 x GPP in ``NPP``) by ``transfer``, ``evaluate`` and ``infer``, and accepted with --grid; only
``xmw simulate sites`` output is read as the simulated-flux driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xmw_ray.cli import main
from xmw_ray.config import TrainConfig, validate
from xmw_ray.data.features import FeatureSet, check_pairing, grid_features
from xmw_ray.data.grid_store import GridStore
from xmw_ray.data.ray_datasets import store_info
from xmw_ray.data.site_store import SiteStore, prepare_sites
from xmw_ray.data.tower_features import SIM_MARKER, SIM_MARKER_FORMAT, tower_features
from xmw_ray.errors import XmwInputError
from xmw_ray.models import build_model
from xmw_ray.models.checkpoint import load_checkpoint_model, write_checkpoint
from xmw_ray.sim.site_forcing import simulate_sites
from xmw_ray.transfer.base import check_layouts

YEARS = (2000, 2002)
MODEL = {"name": "lstm", "params": {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}}
SPLIT = {"kind": "all", "val_fraction": 0.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from xmw_ray.data.grid_store import prepare_grid
    from xmw_ray.sim.world import SimulationSpec, simulate

    root = tmp_path_factory.mktemp("meaning_world")
    simulate(SimulationSpec(out=root / "world", res=10.0, years=YEARS, sites=10, seed=0), log=lambda m: None)
    prepare_grid(root / "world", root / "grid.zarr", cells_per_chunk=64)
    prepare_sites(root / "world" / "FLUXNET-CH4", root / "sites-grid", grid=root / "grid.zarr")
    prepare_sites(root / "world" / "FLUXNET-CH4", root / "sites-bare")
    return {"root": root, "flux": root / "world" / "FLUXNET-CH4", "grid": root / "grid.zarr",
            "sites_grid": root / "sites-grid", "sites_bare": root / "sites-bare"}


def _checkpoint(path: Path, features: FeatureSet | None) -> Path:
    """A small model carrying ``features`` (what training on a store with them records)."""
    model = build_model(MODEL["name"], len(grid_features().dynamic), len(grid_features().static), **MODEL["params"])
    model.features = features
    return write_checkpoint(path, model, {"data": {"split": SPLIT}, "model": MODEL}, {})


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmw: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_stores_record_what_each_slot_means(world):
    grid = GridStore.open(world["grid"]).features
    assert grid == grid_features()
    with_grid = SiteStore.open(world["sites_grid"]).features
    assert with_grid.static == grid.static and with_grid.dynamic[-1] == grid.dynamic[-1]  # NPP and maps: the grid's
    assert {f.provenance for f in with_grid.dynamic[:-1]} == {"tower"}
    bare = {f.name: f for f in (*SiteStore.open(world["sites_bare"]).features.static,
                                *SiteStore.open(world["sites_bare"]).features.dynamic)}
    assert (bare["vegetation_type_11"].meaning, bare["vegetation_type_11"].unit) == ("latitude", "degrees_north")
    assert bare["phh2o"].provenance == "constant"
    assert (bare["cltveg"].meaning, bare["NPP"].provenance) == ("igbp_class", "derived")


def test_transfer_refuses_a_site_store_prepared_without_grid(world, tmp_path, capsys):
    grid, bare = store_info(str(world["grid"])), store_info(str(world["sites_bare"]))
    with pytest.raises(XmwInputError, match=r"dynamic feature 'NPP' is net_primary_productivity \(derived.*"
                                            r"vegetation_type_11.*--grid"):
        check_layouts(grid, bare)
    check_layouts(grid, store_info(str(world["sites_grid"])))  # tower TAIR vs grid TAIR: what transfer bridges
    cfg = {"run": {"output_dir": str(tmp_path), "name": "exp"},
           "source": {"source": "grid", "store": str(world["grid"]),
                      "split": {"kind": "temporal", "train_years": [2000, 2001], "test_years": [2002, 2002]}},
           "data": {"source": "sites", "store": str(world["sites_bare"]), "split": {"kind": "site_temporal"}},
           "model": MODEL, "optim": {"epochs": 1},
           "transfer": {"settings": {"temporal": {"kind": "site_temporal"}}, "strategies": ["finetune"],
                        "fractions": [1.0], "seeds": [0]}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _one_line_error(capsys, ["transfer", "--config", str(path)], str(world["sites_bare"]), "'NPP'")
    assert not (tmp_path / "exp" / "runs").exists()  # refused before any training


def test_evaluate_refuses_a_grid_model_on_sites_without_grid(world, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "grid-model", GridStore.open(world["grid"]).features)
    line = _one_line_error(capsys, ["evaluate", "--checkpoint", str(ckpt), "--store", str(world["sites_bare"]),
                                    "--split", "all"], str(world["sites_bare"]), "'NPP'", "phh2o")
    assert f"checkpoint {ckpt} has net_primary_productivity (simulated" in line


def test_evaluate_accepts_a_grid_model_on_sites_prepared_with_grid(ray_session, world, tmp_path):
    from xmw_ray.train.evaluate import evaluate_checkpoint

    ckpt = _checkpoint(tmp_path / "grid-model", GridStore.open(world["grid"]).features)
    report = evaluate_checkpoint(str(ckpt), str(world["sites_grid"]), "all")
    assert set(report["per_entity"]) == set(SiteStore.open(world["sites_grid"]).sites)


def test_infer_refuses_a_model_trained_on_sites_without_grid(world, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "bare-model", SiteStore.open(world["sites_bare"]).features)
    out = tmp_path / "maps"
    _one_line_error(capsys, ["infer", "--checkpoint", str(ckpt), "--grid", str(world["grid"]), "--out", str(out)],
                    str(world["grid"]), "'NPP'", "vegetation_type_11")
    assert not out.exists()


def test_training_records_the_store_features_in_the_checkpoint(ray_session, world, tmp_path):
    from xmw_ray.train.runner import run_training

    raw = {"data": {"source": "sites", "store": str(world["sites_grid"]), "batch_size": 16, "split": SPLIT},
           "model": MODEL, "optim": {"epochs": 1}, "resources": {"num_workers": 0},
           "run": {"output_dir": str(tmp_path), "name": "t", "seed": 0}}
    out = run_training(validate(raw, TrainConfig))
    assert load_checkpoint_model(out.best_checkpoint).features == SiteStore.open(world["sites_grid"]).features


def test_stores_and_checkpoints_without_descriptors_are_refused(world, tmp_path):
    grid = grid_features()
    legacy = FeatureSet.of_store(None, grid.names("dynamic"), grid.names("static"), "old-store")
    with pytest.raises(XmwInputError, match="old-store: records no feature meanings.*prepare it again"):
        check_pairing(grid, "checkpoint c", legacy, "old-store")
    with pytest.raises(XmwInputError, match="checkpoint c: records no feature meanings.*train it again"):
        check_pairing(None, "checkpoint c", grid, "store s")
    ckpt = _checkpoint(tmp_path / "old-model", None)
    assert load_checkpoint_model(ckpt).features is None
    tower = tower_features(with_sim=True)
    check_pairing(tower, "checkpoint c", tower, "store s")  # tower vs tower (the fluxnet-real preset)


def test_sim_sites_must_be_simulate_sites_output(world, tmp_path, capsys):
    base = ["prepare", "sites", "--src", str(world["flux"]), "--drivers", "tower"]
    out = tmp_path / "store"
    # the observations themselves: their measured FCH4 would enter as SIM_FCH4
    _one_line_error(capsys, [*base, "--out", str(out), "--sim-sites", str(world["flux"])],
                    f"--sim-sites {world['flux']}: not output of xmw simulate sites")
    assert not out.exists()
    sim = tmp_path / "sim"
    simulate_sites(world["flux"], sim, log=lambda msg: None)
    marker = json.loads((sim / "FLUXNET-CH4" / SIM_MARKER).read_text())
    assert marker["format"] == SIM_MARKER_FORMAT and marker["forcing"] == str(world["flux"].resolve())
    assert main([*base, "--out", str(out), "--sim-sites", str(sim)]) == 0
    assert SiteStore.open(out).features == tower_features(with_sim=True)
    capsys.readouterr()
    # a simulated file edited afterwards, or a marker that is not the command's, is refused too
    edited = next((sim / "FLUXNET-CH4").glob("FLX_*_DD_*.csv"))
    edited.write_text(edited.read_text() + "\n")
    _one_line_error(capsys, [*base, "--out", str(tmp_path / "s2"), "--sim-sites", str(sim)],
                    f"{edited.name} is not a file xmw simulate sites wrote")
    (sim / "FLUXNET-CH4" / SIM_MARKER).write_text(json.dumps({"format": "other"}))
    _one_line_error(capsys, [*base, "--out", str(tmp_path / "s3"), "--sim-sites", str(sim)],
                    "is not a well-formed xmw simulate sites marker")
    assert not (tmp_path / "s2").exists() and not (tmp_path / "s3").exists()


def test_sim_sites_refuses_the_real_observations(fluxnet_dir, tmp_path, capsys):
    out = tmp_path / "store"
    _one_line_error(capsys, ["prepare", "sites", "--src", str(fluxnet_dir), "--out", str(out), "--drivers", "tower",
                             "--sim-sites", str(fluxnet_dir)], f"--sim-sites {fluxnet_dir}: not output of")
    assert not out.exists()


def test_ensemble_members_trained_on_differently_prepared_stores_are_refused(world, tmp_path):
    from xmw_ray.models.checkpoint import write_ensemble_checkpoint

    a = _checkpoint(tmp_path / "a", SiteStore.open(world["sites_grid"]).features)
    b = _checkpoint(tmp_path / "b", SiteStore.open(world["sites_bare"]).features)
    with pytest.raises(XmwInputError, match="input features differ"):
        write_ensemble_checkpoint([a, b], tmp_path / "ens", {})
    assert not (tmp_path / "ens").exists()
    out = write_ensemble_checkpoint([a, a], tmp_path / "ens", {})
    assert load_checkpoint_model(out).features == SiteStore.open(world["sites_grid"]).features


def test_sites_prepared_on_a_legacy_grid_store_are_refused_not_broken(world, tmp_path):
    import shutil

    import zarr

    old = tmp_path / "old-grid.zarr"
    shutil.copytree(world["grid"], old)
    root = zarr.open_group(str(old), mode="r+")
    root.attrs.put({k: v for k, v in root.attrs.asdict().items() if k != "features"})
    assert GridStore.open(old).features.legacy
    prepare_sites(world["flux"], tmp_path / "sites", grid=old)
    with pytest.raises(XmwInputError, match="records no feature meanings"):
        check_layouts(store_info(str(world["grid"])), store_info(str(tmp_path / "sites")))
