"""The search over transfer strategies: trials are ranked (and stopped by ASHA) on the observations' validation NSE,
which is comparable across strategies, not on ``val_loss``, whose scale is each model's own ``target_std``; the
transfer-search preset (model zoo x strategies, simulations -> towers) that the demo runs; and (slow) a real
search over two strategies on a tiny built-in world."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from xmw_ray.config import ExperimentConfig, load_config, validate
from xmw_ray.tune.leaderboard import CHECKPOINT_KEY, collect_rows, to_markdown, write_results

REPO = Path(__file__).resolve().parents[1]
ALL_STRATEGIES = {"scratch", "finetune", "adversarial", "residual", "reweight"}


class CraftedResult:
    """The parts of a Tune ``Result`` the leaderboard reads: config, per-epoch reports, id, path, error."""

    def __init__(self, trial_id: str, strategy: str, reports: list[dict], checkpoint: Path) -> None:
        self.config = {"model": "lstm", "strategy": strategy, "lr": 0.01, "weight_decay": 0.0,
                       "hp": {"lstm": {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}}}
        checkpoint.mkdir(parents=True)
        (checkpoint / "metrics.json").write_text(trial_id)  # which trial: a file a checkpoint holds
        self.metrics_dataframe = pd.DataFrame(
            [{"epoch": e, "timestamp": 100 + e, CHECKPOINT_KEY: str(checkpoint), **r} for e, r in enumerate(reports)])
        self.metrics = {"trial_id": trial_id}
        self.path = str(checkpoint.parent)
        self.error = None


def epoch_report(sse_per_day: float, obs_var: float, model_target_var: float) -> dict[str, float]:
    """What the training loop reports for a validation part with observation variance ``obs_var``: ``val_loss``
    is the MSE over the model's own target variance, ``val_nse`` is 1 - MSE / observation variance."""
    return {"val_loss": sse_per_day / model_target_var, "val_nse": 1.0 - sse_per_day / obs_var}


def test_trials_of_different_strategies_rank_on_validation_nse_not_on_their_own_loss_scale(tmp_path):
    cfg = validate({"data": {"source": "sites", "store": "towers"}, "source": {"store": "grid.zarr"},
                    "run": {"name": "ranked", "output_dir": str(tmp_path)},
                    "resources": {"num_workers": 1},
                    "search": {"models": ["lstm"], "strategies": ["scratch", "finetune"], "evaluate_test": False}},
                   ExperimentConfig)
    obs_var, sim_var = 100.0, 900.0  # the towers' validation variance; the simulations' training variance
    # finetune keeps the pretrained model's statistics: its loss is divided by the simulations' (large) variance
    finetune = CraftedResult("t_finetune", "finetune", [epoch_report(70.0, obs_var, sim_var),
                                                        epoch_report(60.0, obs_var, sim_var)], tmp_path / "ft")
    # scratch normalises by the towers' training variance: a much better fit with a larger val_loss
    scratch = CraftedResult("t_scratch", "scratch", [epoch_report(45.0, obs_var, 110.0),
                                                     epoch_report(30.0, obs_var, 110.0)], tmp_path / "sc")
    assert finetune.metrics_dataframe["val_loss"].min() < scratch.metrics_dataframe["val_loss"].min()

    rows = collect_rows([finetune, scratch], cfg)
    assert [r.strategy for r in rows] == ["scratch", "finetune"]  # NSE 0.7 beats NSE 0.4
    assert [r.rank for r in rows] == [1, 2]
    assert rows[0].val_nse == pytest.approx(0.7) and rows[0].best_epoch == 1
    assert rows[1].val_nse == pytest.approx(0.4)
    markdown = to_markdown(rows, "ranked")
    assert "ranked by validation NSE" in markdown and "strategy scratch), val NSE 0.7" in markdown
    header = markdown.splitlines()[2]
    assert "val_nse" in header and "test_nse" in header
    files, best = write_results(rows, cfg, str(tmp_path / "search"))
    assert (Path(best) / "metrics.json").read_text() == "t_scratch"  # best/ is the top validation NSE
    with open(files["csv"]) as f:
        assert [r["trial_id"] for r in csv.DictReader(f)] == ["t_scratch", "t_finetune"]


def test_a_trial_without_validation_nse_ranks_last(tmp_path):
    cfg = validate({"data": {"store": "g"}, "run": {"name": "n", "output_dir": str(tmp_path)},
                    "resources": {"num_workers": 1}, "search": {"evaluate_test": False}}, ExperimentConfig)
    empty = CraftedResult("t_empty", "none", [{"val_loss": 0.01, "val_nse": float("nan")}], tmp_path / "a")
    scored = CraftedResult("t_scored", "none", [{"val_loss": 0.5, "val_nse": -0.2}], tmp_path / "b")
    assert [r.trial_id for r in collect_rows([empty, scored], cfg)] == ["t_scored", "t_empty"]


def test_search_asks_asha_and_optuna_for_the_highest_validation_nse(tmp_path):
    from xmw_ray.tune.search import METRIC, MODE, build_tuner

    cfg = validate({"data": {"store": "g"}, "run": {"name": "n", "output_dir": str(tmp_path)},
                    "resources": {"num_workers": 1}, "search": {}}, ExperimentConfig)
    tune_config = build_tuner(cfg, 1)._local_tuner._tune_config
    assert (METRIC, MODE) == ("val_nse", "max")
    assert (tune_config.metric, tune_config.mode) == (METRIC, MODE)  # Tune hands these to ASHA at fit time
    assert (tune_config.search_alg.metric, tune_config.search_alg.mode) == (METRIC, MODE)


def test_covering_points_give_every_strategy_a_first_trial():
    from xmw_ray.tune.space import covering_points

    cfg = load_config(REPO / "configs/tune/transfer-search.yaml", None, ExperimentConfig)
    points = covering_points(cfg.search)
    assert {p["strategy"] for p in points} == ALL_STRATEGIES
    assert {p["model"] for p in points} == set(cfg.search.models)
    assert covering_points(cfg.search.model_copy(update={"cover_strategies": False})) == []


def test_transfer_search_preset_searches_the_zoo_times_every_strategy_from_simulations_to_towers():
    from xmw_ray.train.runner import LOCAL_MIN_CPUS
    from xmw_ray.tune.search import max_concurrent_trials

    cfg = load_config(REPO / "configs/tune/transfer-search.yaml", None, ExperimentConfig)
    assert cfg.source is not None and cfg.source.source == "grid" and cfg.data.source == "sites"
    assert {"lstm", "tcn", "transformer"} <= set(cfg.search.models)
    assert set(cfg.search.strategies) == ALL_STRATEGIES and cfg.search.cover_strategies
    assert cfg.search.num_samples >= len(ALL_STRATEGIES) and cfg.optim.epochs <= 5
    assert cfg.search.time_budget_s is not None and cfg.search.time_budget_s <= 300
    assert max_concurrent_trials(cfg, {"CPU": float(LOCAL_MIN_CPUS)}) >= 1  # fits the demo's local Ray


def test_demo_runs_the_transfer_search_and_maps_the_transfer_experiments_best_model(tmp_path):
    from xmw_ray.pipeline.demo import demo_stages

    stages = {s.name.split(" ")[0]: s for s in demo_stages(tmp_path, 10.0, (1979, 2018), 30, 0)}
    tune = stages["tune"]
    config = tune.argv[tune.argv.index("--config") + 1]
    assert Path(config).name == "transfer-search.yaml"
    overrides = [tune.argv[i + 1] for i, a in enumerate(tune.argv) if a == "--set"]
    cfg = load_config(config, overrides, ExperimentConfig)
    assert cfg.data.store == str(tmp_path / "sites") and cfg.source.store == str(tmp_path / "grid.zarr")
    assert 1979 <= cfg.source.split.train_years[0] <= cfg.source.split.train_years[1] <= 2018
    # the maps come from the transfer experiment's best/ (selected on validation), which runs after the search
    transfer = stages["transfer"]
    overrides = dict(transfer.argv[i + 1].split("=", 1) for i, a in enumerate(transfer.argv) if a == "--set")
    best = Path(overrides["run.output_dir"]) / overrides["run.name"] / "best"
    assert stages["infer"].argv[stages["infer"].argv.index("--checkpoint") + 1] == str(best)
    # the budget figure draws the world's true budget, and the report describes the world
    assert stages["infer"].argv[stages["infer"].argv.index("--truth") + 1] == str(tmp_path / "world")
    assert str(tmp_path / "world") in stages["report"].argv


def transfer_search_raw(world: dict[str, Path], out: Path) -> dict:
    return {
        "data": {"source": "sites", "store": str(world["sites"]), "batch_size": 16, "in_memory": True,
                 "split": {"kind": "site_temporal", "val_fraction": 0.3, "seed": 0}},
        "source": {"source": "grid", "store": str(world["grid"]), "batch_size": 64,
                   "split": {"kind": "temporal", "train_years": [2000, 2001], "test_years": [2002, 2003],
                             "val_fraction": 0.2, "seed": 0}},
        "optim": {"lr": 0.01, "epochs": 1, "patience": 5},
        "pretrain_optim": {"lr": 0.01, "epochs": 1},
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
        "run": {"output_dir": str(out), "name": "transfer-search"},
        "search": {"models": ["lstm"], "strategies": ["scratch", "finetune"], "cover_strategies": True,
                   "num_samples": 2, "grace_period": 1, "lr": [0.005, 0.02]},
    }


@pytest.fixture(scope="module")
def world(transfer_world) -> dict[str, Path]:
    return transfer_world  # conftest.py: the same small world for the transfer runs and the transfer search


@pytest.mark.slow
def test_search_over_two_strategies_reports_ranks_on_tower_validation_nse_and_resumes(ray_session, world, tmp_path):
    """The suite's one real search: two strategies ranked on the towers' validation NSE, the leaderboard files,
    ``best/``, test-split scores, and a second launch that resumes only what this installation signed."""
    from xmw_ray.errors import XmwInputError
    from xmw_ray.tune.search import run_search
    from xmw_ray.tune.trust import verify_run

    cfg = validate(transfer_search_raw(world, tmp_path / "runs"), ExperimentConfig)
    out = run_search(cfg)
    assert not out.resumed
    assert sorted(r.strategy for r in out.rows) == ["finetune", "scratch"]  # one trial each
    with open(out.files["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in rows] == [1, 2]
    scores = [float(r["val_nse"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(s == s for s in scores)
    assert all(r["status"] == "completed" for r in rows)
    for r in rows:
        assert json.loads(r["params"])["model"]  # the model's own hyper-parameters
        assert int(r["test_n"]) > 0 and r["test_nse"] != "" and float(r["test_rmse"]) > 0  # held-out scores
    for key in ("markdown", "plot_trials", "plot_groups"):
        assert Path(out.files[key]).stat().st_size > 0
    assert "| rank |" in Path(out.files["markdown"]).read_text()
    # the score is the towers' validation NSE: the best checkpoint was selected on the Site store
    best = Path(out.best_checkpoint)
    assert json.loads((best / "config.json").read_text())["data"]["store"] == str(world["sites"])
    assert json.loads((best / "metrics.json").read_text())["val_nse"] == pytest.approx(scores[0], rel=1e-6)
    # finetune pretrained on the simulations inside its trial
    assert list((tmp_path / "runs" / "transfer-search" / "trials" / "pretrain").glob("*/done.json"))
    # launched again with the same name: the stored search is restored, no trial is run again (the test-split
    # scores were checked above: this launch skips scoring the same checkpoints again)
    again = run_search(cfg.model_copy(update={"search": cfg.search.model_copy(update={"evaluate_test": False})}))
    assert again.resumed
    assert sorted(r.trial_id for r in again.rows) == sorted(r.trial_id for r in out.rows)
    assert [r.val_nse for r in again.rows] == [r.val_nse for r in out.rows]
    # both launches signed what Tune left (trust.py); a state file changed since is refused before it is loaded
    verify_run(out.path)
    state = sorted(Path(out.path).glob("experiment_state-*.json"))[-1]
    state.write_text(state.read_text().replace('"trial_data"', '"trial_data" ', 1))
    with pytest.raises(XmwInputError, match=rf"^{out.path}/{state.name}: changed since the search was signed"):
        run_search(cfg)


def test_trials_get_absolute_store_paths_since_each_runs_in_its_own_folder(tmp_path, monkeypatch):
    from xmw_ray.tune.search import with_absolute_stores

    monkeypatch.chdir(tmp_path)
    cfg = validate({"data": {"source": "sites", "store": "demo/sites"},
                    "source": {"store": "s3://bucket/grid.zarr"}}, ExperimentConfig)
    fixed = with_absolute_stores(cfg)
    assert fixed.data.store == str(tmp_path / "demo" / "sites")
    assert fixed.source.store == "s3://bucket/grid.zarr"  # URLs stay as they are


def test_demo_maps_the_simulator_only_model_too_and_scores_both_against_the_truth(tmp_path):
    """The simulator-only model is the transfer experiment's cached pretraining (resolved when its stage starts);
    the score stage compares both maps (and the simulator) with the world's true flux."""
    from xmw_ray.errors import XmwInputError
    from xmw_ray.pipeline.demo import demo_stages, source_fraction

    stages = {s.name.split(" ")[0]: s for s in demo_stages(tmp_path, 10.0, (1979, 2018), 30, 0)}
    late = stages["infer-simulator-only"]
    with pytest.raises(XmwInputError, match="trained no model on the simulations alone"):
        late.resolved_argv()
    best = tmp_path / "runs" / "transfer" / "runs" / "pretrain" / "0123abcd" / "best"
    best.mkdir(parents=True)
    (best / "model.pt").write_bytes(b"")
    argv = late.resolved_argv()
    assert argv[argv.index("--checkpoint") + 1] == str(best)
    assert argv[argv.index("--out") + 1] == str(tmp_path / "maps-simulator-only")
    score = stages["score"].argv
    assert score[0] == "score-maps" and score[score.index("--truth") + 1] == str(tmp_path / "world")
    assert str(tmp_path / "maps-simulator-only") in score and str(tmp_path / "maps") in score
    # finer grids pretrain on a share of the cells, so that pretraining costs what it costs at 5 degrees
    assert source_fraction(10.0) == 1.0 and source_fraction(2.0) == pytest.approx(0.16)
