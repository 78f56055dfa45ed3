"""Transfer strategies as Ray Train runs on a tiny built-in world: pretraining is cached and reused, fine-tuning
starts from the pretrained weights and keeps frozen parts fixed, selection uses the target validation split only,
and ``xmw transfer`` writes the results table, the plot and a ``best`` checkpoint that ``xmw evaluate`` reads."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from xmw_ray.config import ExperimentConfig, validate
from xmw_ray.data.ray_datasets import StoreInfo
from xmw_ray.errors import XmwInputError
from xmw_ray.transfer.base import DONE_FILE, check_layouts, model_state, pretrain_key
from xmw_ray.transfer.registry import get_strategy

REPO = Path(__file__).resolve().parents[1]
MODEL = {"name": "lstm", "params": {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}}


@pytest.fixture(scope="module")
def world(transfer_world) -> dict[str, Path]:
    return transfer_world  # conftest.py: the same small world for the transfer runs and the transfer search


def raw_job(world: dict[str, Path], out: Path, name: str) -> dict:
    """One transfer run's config (``data``: the towers); the strategy's parameters are passed beside it."""
    return {
        "source": {"source": "grid", "store": str(world["grid"]), "batch_size": 64,
                   "split": {"kind": "temporal", "train_years": [2000, 2003], "test_years": [2004, 2004],
                             "val_fraction": 0.2}},
        "data": {"source": "sites", "store": str(world["sites"]), "batch_size": 16,
                   "split": {"kind": "site_temporal", "val_fraction": 0.3}},
        "model": MODEL, "optim": {"lr": 0.01, "epochs": 2}, "pretrain_optim": {"lr": 0.01, "epochs": 1},
        "run": {"output_dir": str(out), "name": name, "seed": 0},
    }


def test_finetune_starts_from_cached_pretraining_and_keeps_frozen_encoder(ray_session, world, tmp_path):
    job = validate(raw_job(world, tmp_path, "ft"), ExperimentConfig)
    out = get_strategy("finetune").run(job, {"freeze": ["encoder"]})
    pre = tmp_path / "pretrain" / pretrain_key(job)
    done_mtime = (pre / DONE_FILE).stat().st_mtime_ns
    pretrained, tuned = model_state(pre / "best"), model_state(out.best_checkpoint)
    enc = [k for k in pretrained if k.startswith("encoder.")]
    assert enc and all(torch.equal(pretrained[k], tuned[k]) for k in enc)  # frozen part unchanged
    assert not torch.equal(pretrained["head.weight"], tuned["head.weight"])  # the head trained
    assert torch.equal(pretrained["target_std"], tuned["target_std"])  # one set of statistics: the pretrained one
    # selection on the target's validation split: the best epoch has the lowest target val_loss
    assert out.metrics["val_loss"] == min(h["val_loss"] for h in out.history)
    assert json.loads((out.best_checkpoint / "config.json").read_text())["data"]["store"] == str(world["sites"])
    # a second strategy with the same source, model and seed reuses the pretraining
    res = get_strategy("residual").run(validate(raw_job(world, tmp_path, "res"), ExperimentConfig), {})
    assert (pre / DONE_FILE).stat().st_mtime_ns == done_mtime
    resid = model_state(res.best_checkpoint)
    assert all(torch.equal(pretrained[k], resid["sim." + k]) for k in pretrained)  # the simulation part is frozen
    # ... and rebuilt as pretrained, output constraint included: it predicts what the pretrained model predicts
    from xmw_ray.models.checkpoint import load_checkpoint_model

    sim, wrapped = load_checkpoint_model(pre / "best"), load_checkpoint_model(res.best_checkpoint)
    assert wrapped.sim.hp.output_constraint == sim.hp.output_constraint
    dyn, stat = torch.randn(3, 365, sim.n_dynamic) * 5, torch.randn(3, sim.n_static)
    with torch.no_grad():
        torch.testing.assert_close(wrapped.sim(dyn, stat), sim(dyn, stat))  # float32 rounding apart


def test_layout_mismatch_and_missing_source_are_one_line_errors(world, tmp_path):
    a = StoreInfo("grid", "g", ("PREC", "TAIR"), ("clelev",), [], None, [])
    b = StoreInfo("sites", "s", ("PREC", "SOLR"), ("clelev",), [], None, [])
    with pytest.raises(XmwInputError, match="dynamic variables"):
        check_layouts(a, b)
    raw = raw_job(world, tmp_path, "x")
    raw["source"] = None
    with pytest.raises(XmwInputError, match="needs a source"):
        get_strategy("finetune").run(validate(raw, ExperimentConfig), {})


def test_xmw_transfer_writes_tables_plot_and_evaluable_best(ray_session, world, tmp_path, capsys):
    from xmw_ray.cli import main

    raw = raw_job(world, tmp_path, "unused")
    cfg = {"run": {"output_dir": str(tmp_path), "name": "exp"}, "source": raw["source"], "data": raw["data"],
           "model": MODEL, "optim": {"lr": 0.01, "epochs": 1},
           "transfer": {"settings": {"spatial": {"kind": "spatial", "n_folds": 3, "test_fold": 0, "val_fraction": 0.25}},
                        "strategies": ["scratch"], "fractions": [1.0], "seeds": [0], "baseline": {"max_iter": 10}}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = ["transfer", "--config", str(path)]  # the `xmw` command in this process (joins the session's Ray)
    assert main(cmd) == 0
    exp = tmp_path / "exp"
    rows = list(csv.DictReader((exp / "summary.csv").open()))
    assert {r["strategy"] for r in rows} == {"scratch", "gbt"}
    assert "| gbt |" in (exp / "summary.md").read_text() and (exp / "skill_vs_fraction.png").stat().st_size > 0
    from xmw_ray.train.results import RUN_COLUMNS

    runs = [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]
    assert {r["strategy"] for r in runs} == {"scratch", "gbt"}
    assert all(tuple(r) == RUN_COLUMNS for r in runs)  # the trees' row and a run's: one shape
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(exp / "best"), "--store", str(world["sites"]), "--split", "all",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pooled"]["n"] > 0
    assert main(cmd + ["--set", "transfer.strategies=[nope]"]) == 2
    assert "strategies" in capsys.readouterr().err


@pytest.mark.slow
def test_adversarial_stage_trains_data_parallel(ray_session, world, tmp_path, monkeypatch):
    """DANN on 2 DDP workers: the source streams beside the target, the discriminator is a second DDP module
    behind the gradient reversal, and every rank takes the same number of steps, so the run finishes (a
    mismatch would hang the gradient all-reduce). The fine-tuning that follows is plain training (tested
    with 2 workers in test_train.py), so it is cut here to keep the suite short."""
    import xmw_ray.transfer.adversarial as adversarial

    stages = []
    monkeypatch.setattr(adversarial, "finetune_from", lambda job, ckpt, params, callbacks: stages.append(ckpt))
    raw = raw_job(world, tmp_path, "adv")
    raw["resources"] = {"num_workers": 2, "cpus_per_worker": 1}
    get_strategy("adversarial").run(validate(raw, ExperimentConfig), {})
    history = json.loads((tmp_path / "adv-dann" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0]  # pretrain_optim: 1 epoch
    assert all(math.isfinite(history[0][k]) for k in ("domain_loss", "task_loss", "val_loss"))
    assert history[0]["train_samples"] > 0 and (stages[0] / "model.pt").is_file()


def test_adversarial_lambda_moves_every_step_from_the_first_epoch(ray_session, world, tmp_path, monkeypatch):
    """Ganin et al.'s λ schedule is per optimisation step: in the first epoch λ already climbs step by step (the
    epoch's logged λ is the mean of the ramp over that epoch's steps), instead of staying 0 for the whole epoch."""
    import xmw_ray.transfer.adversarial as adversarial
    from xmw_ray.data.ray_datasets import sample_dataset, store_info

    monkeypatch.setattr(adversarial, "finetune_from", lambda job, ckpt, params, callbacks: None)
    job = validate(raw_job(world, tmp_path, "adv1"), ExperimentConfig)  # one DANN epoch, local mode
    get_strategy("adversarial").run(job, {})
    history = json.loads((tmp_path / "adv1-dann" / "history.json").read_text())
    info = store_info(str(world["grid"]), "grid")
    rows = sample_dataset(info, job.source.split, "train").count()
    steps = math.ceil(rows / job.data.batch_size)  # one epoch = one pass over the source, in training batches
    assert steps > 2 and history[0]["skipped_batches"] == 0
    ramp = [adversarial.lambda_ramp(s / steps, 1.0, 10.0) for s in range(steps)]
    assert history[0]["lambda"] == pytest.approx(sum(ramp) / steps, rel=1e-6)
    assert 0.5 < history[0]["lambda"] < 1.0
    # the runner learns the steps from the store's index alone, exactly
    from xmw_ray.data.ray_datasets import part_rows

    assert part_rows(info, job.source.split, "train") == rows
