"""Ray Tune search: define-by-run spaces per model, resource arithmetic that fails fast, config checks, and
(slow) a real Optuna + ASHA search that leaves a leaderboard, plots and the best checkpoint, and resumes."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from xmw_ray.config import ExperimentConfig, SearchSection, validate
from xmw_ray.errors import XmwInputError
from xmw_ray.models import MODELS, build_model
from xmw_ray.models.ranges import searchable_models
from xmw_ray.tune.search import max_concurrent_trials, trial_footprint
from xmw_ray.tune.space import DefineByRun, model_params, strategy_params

REPO = Path(__file__).resolve().parents[1]


def tune_raw(store: str, out: str, **search) -> dict:
    return {
        "data": {"source": "grid", "store": store, "batch_size": 32,
                 "split": {"kind": "temporal", "train_years": [2000, 2002], "test_years": [2003, 2003],
                           "val_fraction": 0.2, "seed": 0}},
        "optim": {"lr": 0.01, "epochs": 2, "patience": 5},
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
        "run": {"output_dir": out, "name": "search"},
        "search": {"models": ["lstm", "tcn"], "num_samples": 3, "grace_period": 1, "lr": [0.005, 0.02],
                   **search},
    }


def test_concurrency_comes_from_the_whole_trial_footprint():
    cfg = validate(tune_raw("s", "o", num_samples=10, driver_cpus=0.5), ExperimentConfig)
    assert trial_footprint(cfg) == {"CPU": 1.5}
    # 1 CPU stays free for Ray Data: (4 - 1) / 1.5 = 2 trials at once
    assert max_concurrent_trials(cfg, {"CPU": 4.0}) == 2
    assert max_concurrent_trials(cfg, {"CPU": 100.0}) == 10  # never more than there are trials
    gpu = validate({**tune_raw("s", "o", num_samples=10), "resources": {"num_workers": 2, "use_gpu": True}}, ExperimentConfig)
    assert max_concurrent_trials(gpu, {"CPU": 64.0, "GPU": 5.0}) == 2  # GPUs bind first


def test_search_that_cannot_fit_fails_fast_saying_why():
    cfg = validate(tune_raw("s", "o"), ExperimentConfig)
    with pytest.raises(XmwInputError, match=r"one trial needs 1.25 CPU .* but the cluster has 2 CPU"):
        max_concurrent_trials(cfg, {"CPU": 2.0})
    gpu = validate({**tune_raw("s", "o"), "resources": {"num_workers": 1, "use_gpu": True}}, ExperimentConfig)
    with pytest.raises(XmwInputError, match=r"cluster has .*0 GPU"):
        max_concurrent_trials(gpu, {"CPU": 8.0})


def test_define_by_run_asks_each_model_only_its_own_questions():
    assert set(searchable_models()) <= set(MODELS)
    search = SearchSection(models=searchable_models(), num_samples=40, space="small")
    space = DefineByRun(search)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, set[str]] = {}
    for _ in range(40):
        trial = study.ask()
        space(trial)
        params = dict(trial.params)
        model = params["model"]
        own = {k for k in params if k.startswith("hp/")}
        assert all(k.startswith(f"hp/{model}/") for k in own), (model, own)
        seen.setdefault(model, set()).update(k.split("/")[-1] for k in own)
        nested = {"model": model, "hp": {model: {k.split("/")[-1]: v for k, v in params.items() if k in own}}}
        built = build_model(model, 5, 3, **model_params(nested, search))  # every suggestion is a valid model
        assert built.registry_name == model
        study.tell(trial, 0.0)
    assert len(seen) >= 5
    assert "num_layers" in seen["lstm"] and "d_model" not in seen["lstm"]
    assert "kernel_size" in seen.get("tcn", {"kernel_size"}) and "n_heads" in seen.get("transformer", {"n_heads"})


def test_each_strategy_gets_its_own_valid_parameters():
    from xmw_ray.transfer import adversarial, finetune, reweight
    from xmw_ray.transfer.base import validate_params

    search = SearchSection(models=["lstm"], strategies=["none", "scratch", "finetune", "adversarial", "reweight"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    classes = {"finetune": finetune.FinetuneParams, "adversarial": adversarial.AdversarialParams,
               "reweight": reweight.ReweightParams}
    seen = set()
    for _ in range(30):
        trial = study.ask()
        DefineByRun(search)(trial)
        strategy = trial.params["strategy"]
        own = {k.split("/")[-1]: v for k, v in trial.params.items() if k.startswith("sp/")}
        assert all(k.startswith(f"sp/{strategy}/") for k in trial.params if k.startswith("sp/"))
        params = strategy_params({"strategy": strategy, "sp": {strategy: own}})
        if strategy in classes:
            validate_params(classes[strategy], params, strategy)  # the transfer room accepts them
            seen.add(strategy)
        else:
            assert params == {}
        study.tell(trial, 0.0)
    assert seen == set(classes)
    from xmw_ray.transfer.registry import STRATEGIES

    for strategy in STRATEGIES.values():  # each declares its range beside its Params (adding one is one file)
        assert (strategy.search_space is not None) == (strategy.name in classes), strategy.name
        assert strategy.search_space is None or strategy.search_space.__module__ == strategy.Params.__module__


def test_config_errors_name_the_problem():
    with pytest.raises(XmwInputError, match=r"resources: .*num_workers >= 1"):
        validate({**tune_raw("s", "o"), "resources": {"num_workers": 0}}, ExperimentConfig)
    with pytest.raises(XmwInputError, match=r"search\.models: .*unknown model 'lstmx'"):
        validate(tune_raw("s", "o", models=["lstmx"]), ExperimentConfig)
    with pytest.raises(XmwInputError, match=r"search\.typo: unknown key"):
        validate(tune_raw("s", "o", typo=1), ExperimentConfig)


def test_presets_validate():
    from xmw_ray.config import load_config

    smoke = load_config(REPO / "configs/tune/smoke.yaml", None, ExperimentConfig)
    full = load_config(REPO / "configs/tune/full.yaml", None, ExperimentConfig)
    assert smoke.resources.num_workers == 1 and smoke.optim.epochs <= 3 and 4 <= smoke.search.num_samples <= 6
    assert full.resources.use_gpu and set(full.search.models) == set(searchable_models())
    assert max_concurrent_trials(full, full.search.cluster) >= 1


def test_cli_too_big_fails_fast(ray_session, tmp_path, capsys):
    from train_world import make_emission_store

    from xmw_ray.cli import main

    store = make_emission_store(tmp_path / "world")  # a store that is there: the stores are checked first
    rc = main(["tune", "--config", str(REPO / "configs/tune/smoke.yaml"), "--set", f"data.store={store}",
               "--set", f"run.output_dir={tmp_path}", "--set", "resources.num_workers=8"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "one trial needs 8.25 CPU" in err
    assert not (tmp_path / "tune-smoke").exists()  # nothing started
