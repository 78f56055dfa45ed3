"""Seed ensembles and the deploy setting of ``xmw transfer``: which run becomes ``best`` (validation only, never
test), the config rules that keep a hybrid (simulation-as-driver) experiment consistent, and one small experiment
whose ``best`` is a seed ensemble trained on every sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from xmw_ray.config import ExperimentConfig
from xmw_ray.train.results import ResultRow
from xmw_ray.transfer.experiment import best_row

NAN = math.nan


def row(strategy, setting, seed, val, model="lstm", fraction=1.0):
    return ResultRow(strategy=strategy, model=model, setting=setting, fraction=fraction, seed=seed, val_nse=val,
                     checkpoint=f"/runs/{strategy}-{setting}-{seed}", test={"nse": 0.99})


def test_best_is_highest_validation_nse_never_test():
    rows = [row("scratch", "temporal", 0, 0.2), row("finetune", "temporal", 0, 0.5)]
    rows[0].test["nse"] = 0.9  # a better TEST score must not matter
    assert best_row(rows).strategy == "finetune"


def test_deploy_setting_takes_the_chosen_runs_twin_trained_on_everything():
    rows = [row("scratch", "temporal", 0, 0.2), row("finetune", "temporal", 0, 0.5),
            row("scratch", "all", 0, NAN), row("finetune", "all", 1, NAN), row("finetune", "all", 0, NAN)]
    best = best_row(rows, "all")
    assert (best.strategy, best.setting, best.seed) == ("finetune", "all", 0)


def test_a_lone_candidate_needs_no_validation_score_but_several_do():
    lone = [row("scratch", "temporal", 0, NAN), row("scratch", "all", 0, NAN)]
    assert best_row(lone, "all").setting == "all"
    several = [row("scratch", "temporal", 0, NAN), row("finetune", "temporal", 0, NAN)]
    assert best_row(several) is None


TRANSFER = {"settings": {"temporal": {"kind": "site_temporal"}}, "strategies": ["scratch"]}


@pytest.mark.parametrize(("update", "message"), [
    ({"deploy_setting": "nope"}, "deploy_setting"),
    ({"strategies": ["finetune"]}, "source"),
    ({"prepare": {"forcing": "f", "sim_input": True}}, "sim_input needs drivers: tower"),
    ({"prepare": {"forcing": "f", "drivers": "tower", "sim_input": True}, "strategies": ["scratch", "finetune"]},
     "strategies must be [scratch]"),
    ({"ensemble": 0}, "ensemble"),
])
def test_inconsistent_experiments_are_rejected(update, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ExperimentConfig.model_validate({"data": {"source": "sites", "store": "t"},
                                         "source": {"source": "sites", "store": "s"} if "prepare" in update else None,
                                         "transfer": {**TRANSFER, **update}})


def test_hybrid_experiment_builds_its_stores_and_deploys_a_seed_ensemble(ray_session, tmp_path):
    """The fluxnet-real shape on tiny towers: the simulation becomes a driver of the target store, each run is a
    2-seed ensemble, the results table holds only settings with a test, and ``best`` is the ensemble trained on
    every tower-year, evaluable like any checkpoint."""
    from builders import write_tiny_fluxnet

    from xmw_ray.data.ray_datasets import store_info
    from xmw_ray.models.checkpoint import load_checkpoint_model
    from xmw_ray.models.ensemble import EnsembleModel
    from xmw_ray.train.evaluate import evaluate_checkpoint
    from xmw_ray.transfer.experiment import run_experiment

    write_tiny_fluxnet(tmp_path / "towers", {"AA-Aaa": (60.0, 20.0), "BB-Bbb": (50.0, 10.0), "CC-Ccc": (65.0, 25.0)},
                       start="2014-01-01", end="2016-12-31")
    cfg = ExperimentConfig.model_validate({
        "run": {"output_dir": str(tmp_path), "name": "exp"},
        "data": {"source": "sites", "store": "{run_dir}/prepared/target", "batch_size": 4, "in_memory": True},
        "model": {"name": "lstm", "params": {"hidden_size": 4, "num_layers": 1, "dropout": 0.0, "input_size": 4,
                                             "skip": True, "input_clip": 4.0}},
        "optim": {"lr": 0.01, "epochs": 1, "scheduler": "none"},
        "transfer": {"prepare": {"forcing": str(tmp_path / "towers"), "drivers": "tower", "sim_input": True},
                     "settings": {"temporal": {"kind": "site_temporal"}, "all": {"kind": "all"}},
                     "deploy_setting": "all", "strategies": ["scratch"], "ensemble": 2, "fractions": [1.0],
                     "seeds": [0], "baseline": {"max_iter": 5}}})
    paths = run_experiment(cfg, log=lambda msg: None)
    exp = tmp_path / "exp"
    assert {json.loads(line)["setting"] for line in (exp / "results.jsonl").read_text().splitlines()} == {
        "temporal", "all"}
    summary = (exp / "summary.md").read_text()
    assert "| gbt |" in summary and "| all |" not in summary
    model = load_checkpoint_model(paths["best"])
    assert isinstance(model, EnsembleModel) and len(model.members) == 2
    assert "SIM_FCH4" in store_info(str(exp / "prepared" / "target")).dynamic_vars
    # towers it has never seen, prepared the way the preset's header says
    from xmw_ray.data.site_store import prepare_sites
    from xmw_ray.sim.site_forcing import simulate_sites

    write_tiny_fluxnet(tmp_path / "other", {"DD-Ddd": (55.0, 30.0), "EE-Eee": (62.0, -100.0)},
                       start="2017-01-01", end="2018-12-31", seed=5)
    simulate_sites(tmp_path / "other", tmp_path / "other-sim", log=lambda msg: None)
    prepare_sites(tmp_path / "other", tmp_path / "other-store", drivers="tower", sim_sites=tmp_path / "other-sim")
    report = evaluate_checkpoint(str(paths["best"]), str(tmp_path / "other-store"), "all")
    assert set(report["per_entity"]) == {"DD-Ddd", "EE-Eee"} and report["pooled"]["n"] > 0


def test_the_fluxnet_real_preset_trains_on_towers_and_scores_new_towers_with_its_header_commands(ray_session,
                                                                                                  tmp_path):
    """configs/experiments/fluxnet-real.yaml itself (shrunk to 1 epoch and 4 units) on tiny towers: it pretrains on
    the process model at the towers' forcing, fine-tunes on the observations (no SIM_FCH4 driver), deploys a
    3-seed ensemble, and new towers need only ``prepare sites --drivers tower`` before ``evaluate``."""
    from builders import write_tiny_fluxnet

    from xmw_ray.config import load_config
    from xmw_ray.data.ray_datasets import store_info
    from xmw_ray.data.site_store import prepare_sites
    from xmw_ray.models.checkpoint import load_checkpoint_model
    from xmw_ray.models.ensemble import EnsembleModel
    from xmw_ray.train.evaluate import evaluate_checkpoint
    from xmw_ray.transfer.experiment import run_experiment

    write_tiny_fluxnet(tmp_path / "towers", {"AA-Aaa": (60.0, 20.0), "BB-Bbb": (50.0, 10.0), "CC-Ccc": (65.0, 25.0)},
                       start="2014-01-01", end="2016-12-31")
    preset = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "fluxnet-real.yaml"
    cfg = load_config(str(preset), [f"run.output_dir={tmp_path}", "run.name=exp",
                                    f"transfer.prepare.forcing={tmp_path / 'towers'}", "optim.epochs=1",
                                    "optim.patience=1", "pretrain_optim.epochs=1", "pretrain_optim.patience=1",
                                    "model.params.hidden_size=4", "transfer.baseline.max_iter=5"],
                      require="transfer").resolved()
    paths = run_experiment(cfg, log=lambda msg: None)
    exp = tmp_path / "exp"
    assert "SIM_FCH4" not in store_info(str(exp / "prepared" / "target-sites-transfer")).dynamic_vars
    assert (exp / "runs" / "pretrain").is_dir()  # the simulations were the pretraining source
    model = load_checkpoint_model(paths["best"])
    assert isinstance(model, EnsembleModel) and len(model.members) == 3
    write_tiny_fluxnet(tmp_path / "other", {"DD-Ddd": (55.0, 30.0), "EE-Eee": (-42.0, 147.0)},
                       start="2017-01-01", end="2018-12-31", seed=5)
    prepare_sites(tmp_path / "other", tmp_path / "other-store", drivers="tower")  # no simulation needed
    report = evaluate_checkpoint(str(paths["best"]), str(tmp_path / "other-store"), "all")
    assert set(report["per_entity"]) == {"DD-Ddd", "EE-Eee"} and report["pooled"]["n"] > 0
