"""The nested leave-one-tower-out bench (bench/real_towers_nested.py) on tiny synthetic towers: the outer tower's
target never reaches a fit, a score, a choice or a conformal quantile; bootstrap intervals hold the estimate;
conformal intervals cover near their nominal level on exchangeable data. Base models are numpy stand-ins."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import real_towers_nested as nested  # noqa: E402

DAYS = 365


def synthetic_towers(n_towers: int, years: int, seed: int) -> tuple[dict, dict]:
    """``(x, y)`` per tower: y = slope_s · x + noise, slopes differing by tower, some days unobserved."""
    rng = np.random.default_rng(seed)
    x, y = {}, {}
    for i in range(n_towers):
        s = f"T{i:02d}"
        x[s] = rng.gamma(2.0, 10.0, (years, DAYS))
        y[s] = (1.0 + 0.3 * rng.standard_normal()) * x[s] + rng.normal(0, 5.0, (years, DAYS))
        y[s][rng.random((years, DAYS)) < 0.2] = np.nan
    return x, y


def least_squares_slope(x: dict, obs: dict, train: list) -> float:
    """The slope b of obs ≈ b·x over the observed days of the ``train`` towers (reads only their targets)."""
    xs = np.concatenate([x[s].ravel() for s in train])
    ys = np.concatenate([obs[s].ravel() for s in train])
    ok = np.isfinite(ys)
    return float(xs[ok] @ ys[ok] / (xs[ok] @ xs[ok]))


def stand_in_bases(x: dict, obs: dict, calls: list) -> dict:
    """Two base models that read only their training towers' targets: a least-squares slope, and the mean."""
    def slope(train, test, members, name):
        calls.append(("slope", tuple(train), tuple(test)))
        b = least_squares_slope(x, obs, train)
        return {s: b * x[s] for s in test}

    def mean(train, test, members, name):
        calls.append(("mean", tuple(train), tuple(test)))
        m = float(np.nanmean(np.concatenate([obs[s].ravel() for s in train])))
        return {s: np.full_like(x[s], m) for s in test}

    return {"trees": slope, "network": mean}


def test_outer_target_never_used_for_fits_scores_choice_or_quantiles():
    x, obs = synthetic_towers(8, 2, seed=1)
    sites = sorted(obs)
    outer = sites[3]
    calls: list = []
    clean = nested.nested_fold(outer, sites, obs, stand_in_bases(x, obs, calls), k=3, members=1, inner_members=1)
    poisoned_obs = poison(obs, outer)
    poisoned = nested.nested_fold(outer, sites, poisoned_obs, stand_in_bases(x, poisoned_obs, []), k=3, members=1,
                                  inner_members=1)
    assert clean.scores == poisoned.scores
    assert clean.chosen == poisoned.chosen
    assert clean.q == poisoned.q
    for proc in clean.pred:
        np.testing.assert_array_equal(clean.pred[proc], poisoned.pred[proc])
    # the outer tower is never trained on, and is predicted only by the refits on all other towers
    assert all(outer not in train for _, train, _ in calls)
    assert {test for _, _, test in calls if outer in test} == {(outer,)}
    refits = [train for _, train, test in calls if test == (outer,)]
    assert all(sorted(train) == sorted(set(sites) - {outer}) for train in refits)
    # inner folds partition the training towers
    held = sorted(s for fold in clean.inner_folds for s in fold)
    assert held == sorted(set(sites) - {outer})


def test_grouped_folds_partition_and_balance():
    sites = [f"S{i}" for i in range(14)]
    folds = nested.grouped_folds(sites, 5)
    assert sorted(s for f in folds for s in f) == sorted(sites)
    assert {len(f) for f in folds} <= {2, 3}
    assert folds == nested.grouped_folds(list(reversed(sites)), 5)  # seeded on the sorted towers, not input order


def test_bootstrap_interval_holds_the_point_estimate():
    x, obs = synthetic_towers(12, 1, seed=2)
    pred = {s: 1.1 * x[s] for s in obs}
    point = nested.summarise(pred, obs)
    ci = nested.bootstrap(pred, obs, resamples=300)
    for key in nested.REPORTED:
        lo, hi = ci[key]
        assert lo < hi
        assert lo <= point[key] <= hi, key


def test_conformal_coverage_near_nominal_on_exchangeable_towers():
    rng = np.random.default_rng(3)
    signal = {f"T{i:02d}": rng.gamma(2.0, 20.0, (1, DAYS)) for i in range(16)}
    obs = {s: v + 0.3 * (v + nested.CONFORMAL_OFFSET) * rng.standard_normal(v.shape) for s, v in signal.items()}

    def oracle(train, test, members, name):  # knows the signal, not the noise: scores are exchangeable
        return {s: signal[s] for s in test}

    sites = sorted(obs)
    folds = [nested.nested_fold(s, sites, obs, {"trees": oracle, "network": oracle}, k=4, members=1,
                                inner_members=1) for s in sites[:8]]
    cov = nested.score_procedures(folds, obs)[nested.NESTED]["coverage"]
    assert abs(cov["pooled"] - nested.CONFORMAL_LEVEL) < 0.03
    assert cov["tower_min"] <= cov["tower_median"] <= cov["tower_max"]


def test_bad_flags_stop_before_any_work(tmp_path, capsys):
    assert nested.main(["--towers", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("xmw: error: ")
    assert nested.main(["--members", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmw: error: --members:") and err.count("\n") == 1
    for bad in (["--strategies", "bogus"], ["--strategies", "scratch", "--fractions", "0"]):
        assert nested.main([*bad, "--out", str(tmp_path / "o")]) == 2
        assert capsys.readouterr().err.startswith(f"xmw: error: {bad[-2]}:")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("k", [1, 99])
def test_inner_folds_out_of_range_is_refused(k):
    with pytest.raises(nested.XmwInputError):
        nested.grouped_folds([f"S{i}" for i in range(6)], k)


def test_fold_split_gives_the_outer_tower_no_part_and_fractions_keep_a_subset():
    from xmw_ray.data.splits import NONE, TEST, SplitPlan

    towers = [f"S{i:02d}" for i in range(15)]
    train, outer = towers[1:], towers[0]
    inner = nested.fold_split(train[3:], train[:3])  # an inner fold: the outer tower is in neither part
    plan = SplitPlan(inner, towers)
    parts = plan.parts(plan.entity_index(towers), np.zeros(len(towers), dtype=np.int64))
    assert parts[0] == NONE and (parts[1:4] == TEST).all()
    assert nested.kept_towers(inner) == sorted(train[3:])
    full = nested.kept_towers(nested.fold_split(train, [outer]))
    sparse = nested.kept_towers(nested.fold_split(train, [outer], 0.3))
    assert full == sorted(train) and set(sparse) < set(full) and sparse
    assert sparse == nested.kept_towers(nested.fold_split(train, [outer], 0.3))


def test_map_variant_has_its_preset_and_output_and_refuses_transfer_mode(tmp_path, capsys):
    from xmw_ray.config import load_config

    assert nested.parse_args([]).out == "runs/bench-real-towers-nested"  # the tower variant is unchanged
    args = nested.parse_args(["--variant", "map"])
    assert args.out == "runs/bench-real-towers-nested-map"
    assert load_config(str(nested.VARIANTS["map"]), require="transfer").transfer.prepare.drivers == "map"
    assert nested.VARIANTS["tower"] == nested.PRESET
    assert nested.main(["--variant", "map", "--strategies", "scratch", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmw: error: --strategies:") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_map_trees_read_only_the_network_store_rows_and_never_the_test_target():
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(4)
    rows = {f"T{i:02d}": {"dynamic": rng.gamma(2.0, 5.0, (1, DAYS, 4)).astype(np.float32),
                          "static": rng.random((1, 3)).astype(np.float32), "year": np.array([2015])}
            for i in range(5)}
    for r in rows.values():
        r["y"] = 3.0 * r["dynamic"][..., 2].astype(np.float64) + rng.normal(0, 1.0, (1, DAYS))
    trees = nested.tree_fitter("map", "no tower files are read", rows)
    assert trees.rows is rows and trees.trailing_windows == nested.TRAILING_WINDOWS
    train, test = sorted(rows)[:4], sorted(rows)[4:]
    with threadpool_limits(1):  # small fits: one OpenMP thread on the shared cores (as tests/test_gbt.py)
        pred = trees(train, test)[test[0]]
        rows[test[0]]["y"] = rows[test[0]]["y"] * 100.0 + 1e3
        np.testing.assert_array_equal(trees(train, test)[test[0]], pred)
    ok = np.isfinite(pred)
    assert ok.all() and np.corrcoef(pred[ok], rows[test[0]]["dynamic"][..., 2][ok])[0, 1] > 0.9


def test_transfer_table_of_a_run_still_going_says_which_fractions_are_done():
    m = {k: 0.1 for k in ("nse", "median_nse", "rmse", "kge")}
    m = {**m, "n": 10, "interval": {k: (0.0, 0.2) for k in ("nse", "median_nse", "rmse", "kge")}}
    done = {"1": {"kept_towers": {"A": ["B", "C"]}, "procedures": {"trees": m, "scratch": m}}}
    partial = nested.transfer_table({"smoke": "", "fractions": done, "fractions_asked": [1.0, 0.3]})
    assert partial.startswith("**Partial: fractions 1 of 1, 0.3 done; the run goes on.**")
    assert "| fraction 1 (mean 2.0 towers) | scratch |" in partial
    whole = nested.transfer_table({"smoke": "", "fractions": done, "fractions_asked": [1.0]})
    assert not whole.startswith("**Partial")


#: What ``--choose network scratch finetune residual adversarial reweight --inner-folds 3 --settings --driver-sets``
#: chose on all 15 shared towers (``choice_on_all`` of the README's run): the procedure, its setting and its driver
#: set, which the preset deploys.
CHOSEN_ON_ALL = ("finetune", "epochs 30", "tower")


def test_the_tower_preset_is_the_procedure_the_nested_choice_picked(tmp_path):
    """configs/experiments/fluxnet-real.yaml must train exactly what choice mode scored as ``finetune`` with the
    ``epochs 30`` setting on the ``tower`` driver set (the three-stage choice on all shared towers): the simdriver
    procedure turned into a transfer experiment by transfer_overrides, then the setting, and no map_overrides.
    Only the run's name and where the stores live may differ."""
    from xmw_ray.config import load_config

    preset = load_config(str(nested.ROOT / "configs" / "experiments" / "fluxnet-real.yaml"), require="transfer")
    out = tmp_path / "bench"
    strategy, setting, drivers = CHOSEN_ON_ALL
    base_epochs = load_config(str(nested.PRESET), require="transfer").optim.epochs
    scored = load_config(str(nested.PRESET), [f"transfer.strategies=[{strategy}]",
                                              *nested.transfer_overrides(out, base_epochs),
                                              *nested.setting_overrides(setting, base_epochs),
                                              *(nested.map_overrides(out) if drivers == "map" else [])],
                         require="transfer")
    assert preset.transfer.prepare.drivers == drivers
    assert preset.transfer.strategies == [strategy]

    def comparable(cfg) -> dict:
        d = cfg.model_dump(mode="json")
        d.pop("run")
        for section in ("data", "source"):
            d[section].pop("store")
        return d

    assert comparable(preset) == comparable(scored)


def test_choice_mode_flags_are_checked_before_any_work(tmp_path, capsys):
    for bad, flag in ((["--choose", "network"], "--choose"), (["--choose", "network", "bogus"], "--choose"),
                      (["--choose", "network", "finetune", "--strategies", "scratch"], "--choose"),
                      (["--choose", "network", "finetune", "--variant", "map"], "--choose"),
                      (["--outer", "XX-Nope"], "--outer")):
        assert nested.main([*bad, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"xmw: error: {flag}:") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_choice_mode_chooses_among_whole_procedures_and_scores_each_alone():
    x, obs = synthetic_towers(8, 2, seed=3)
    sites = sorted(obs)
    calls: list = []
    slope, mean = stand_in_bases(x, obs, calls).values()
    bases = {"trees": mean, "network": mean, "finetune": slope}
    candidates = {"network": {"network": 1.0}, "finetune": {"finetune": 1.0}}
    fold = nested.nested_fold(sites[0], sites, obs, bases, k=3, members=1, inner_members=1,
                              candidates=candidates, fixed=("trees", "network", "finetune"))
    assert fold.chosen == "finetune"  # the slope model fits y = slope_s * x far better than the mean
    assert set(fold.pred) == {"trees", "network", "finetune", nested.NESTED}
    np.testing.assert_array_equal(fold.pred[nested.NESTED], fold.pred["finetune"])
    _, _, scores, chosen = nested.inner_choice(sites, obs, {"network": mean, "finetune": slope}, 3, 1, "all",
                                               candidates)
    assert chosen == "finetune" and set(scores) == set(candidates)


def scaled_slope(x: dict, obs: dict, factor: float) -> nested.FitPredict:
    """A stand-in base model: the least-squares slope of the training towers, scaled by ``factor``."""
    def fit(train, test, members, name):
        b = least_squares_slope(x, obs, train)
        return {s: factor * b * x[s] for s in test}
    return fit


def scaled_variants(x: dict, obs: dict, calls: list) -> nested.Variants:
    """Stage-two stand-ins: the chosen procedure's least-squares slope scaled by a "setting" (1 is the preset)."""
    def variants(chosen):
        calls.append(chosen)
        return {"preset": scaled_slope(x, obs, 1.0), "half": scaled_slope(x, obs, 0.5),
                "double": scaled_slope(x, obs, 2.0)}
    return variants


def staged_fold(x: dict, obs: dict, outer: str, **stages) -> nested.FoldResult:
    """One outer fold of choice mode on stand-ins: stage one between ``network`` (the mean) and ``finetune`` (the
    slope), the trees (the mean) beside them; ``stages``: the later stages' factories (``variants``, ``drivers``)."""
    slope, mean = stand_in_bases(x, obs, []).values()
    return nested.nested_fold(outer, sorted(obs), obs, {"trees": mean, "network": mean, "finetune": slope}, k=3,
                              members=1, inner_members=1,
                              candidates={"network": {"network": 1.0}, "finetune": {"finetune": 1.0}},
                              fixed=("trees", "network", "finetune"), **stages)


def poison(obs: dict, outer: str) -> dict:
    """``obs`` with the outer tower's target moved far off: a leak anywhere would move a fit, score or quantile."""
    return {**obs, outer: obs[outer] * 1e3 + 1e4}


def test_settings_stage_chooses_on_the_training_towers_only():
    """Stage two (--settings) re-chooses the chosen procedure's settings on the same inner folds: the outer
    tower's target moves no score, choice, quantile or prediction; the factory gets stage one's pick."""
    x, obs = synthetic_towers(8, 2, seed=3)
    outer = sorted(obs)[2]

    def run(o):
        picked: list = []
        return staged_fold(x, o, outer, variants=scaled_variants(x, o, picked)), picked

    clean, picked = run(obs)
    assert picked == ["finetune"] and clean.chosen == "finetune"
    assert clean.settings_chosen == "preset"  # y = slope_s * x: the unscaled slope fits best
    assert set(clean.settings_scores) == {"preset", "half", "double"}
    assert clean.candidate[nested.NESTED_SETTINGS] == "finetune (preset)"
    np.testing.assert_allclose(clean.pred[nested.NESTED_SETTINGS], clean.pred["finetune"])
    poisoned, _ = run(poison(obs, outer))
    assert clean.settings_scores == poisoned.settings_scores and clean.q == poisoned.q
    for proc in clean.pred:
        np.testing.assert_array_equal(clean.pred[proc], poisoned.pred[proc])
    scored = nested.score_procedures([clean], obs, ("trees", "network", "finetune"))
    assert list(scored)[-2:] == [nested.NESTED, nested.NESTED_SETTINGS]


def test_settings_stage_picks_a_better_setting_when_there_is_one():
    x, obs = synthetic_towers(8, 2, seed=5)
    shrunk = {s: 0.5 * v for s, v in obs.items()}  # the truth scored: half the slope a plain fit of obs gives...
    sites = sorted(obs)
    # ...because these "settings" fit the slope on obs = 2·truth: only the "half" setting recovers the truth
    settings = scaled_variants(x, obs, [])("finetune")
    setting, _, scores = nested.settings_choice(sites, shrunk, settings, 3, 1, "all")
    assert setting == "half", scores


def test_settings_flag_needs_choice_mode(tmp_path, capsys):
    assert nested.main(["--settings", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmw: error: --settings:") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_every_setting_is_a_valid_change_of_the_scored_procedures(tmp_path):
    """Each SETTINGS entry loads on top of a stage-one strategy and changes exactly what it names; the epochs and
    learning-rate settings keep the cached pretraining (same key), a new size or input use pretrains its own."""
    from xmw_ray.config import load_config
    from xmw_ray.transfer.base import pretrain_key

    def load(extra):
        return load_config(str(nested.PRESET), ["transfer.strategies=[finetune]",
                                                *nested.transfer_overrides(tmp_path, base.optim.epochs), *extra],
                           require="transfer")

    base = load_config(str(nested.PRESET), require="transfer")
    preset = load([])
    for name in nested.SETTINGS:
        cfg = load(nested.setting_overrides(name, base.optim.epochs))
        changed = {k for k in ("hidden_size", "static_inputs")
                   if cfg.model.params.get(k) != base.model.params.get(k)}
        changed |= {k for k in ("epochs", "lr") if getattr(cfg.optim, k) != getattr(base.optim, k)}
        model_change = "hidden" in name or "descriptors" in name
        assert changed == ({"hidden_size"} if "hidden" in name else {"epochs"} if "epochs" in name
                           else {"lr"} if "lr" in name else {"static_inputs"} if "descriptors" in name
                           else set()), name
        assert (pretrain_key(cfg) != pretrain_key(preset)) == model_change, name
        assert cfg.pretraining() == preset.pretraining(), name
    assert load(nested.setting_overrides("epochs 30", 60)).optim.epochs == 30
    assert load(nested.setting_overrides("epochs 120", 60)).optim.epochs == 120
    assert load(nested.setting_overrides("no descriptors", 60)).model.params["static_inputs"] is False
    assert nested.setting_overrides("epochs 30", 3) == ["optim.epochs=1", "optim.patience=1"]  # a smoke run


def test_stage_two_reuses_stage_one_fits_and_gives_every_setting_its_own(tmp_path):
    """The ``preset`` setting is stage one's own fitter (its fits on disk are reused); every other setting trains
    under a label of its own, so no two settings ever share a cached fit."""
    class Cfg:
        pass

    nets = {"finetune": nested.NetworkFitter(Cfg(), {}, tmp_path, "finetune"),
            "network": nested.NetworkFitter(Cfg(), {}, tmp_path, label=nested.NETWORK)}
    cfgs = {(p, s): Cfg() for p in nets for s in nested.SETTINGS if s != "preset"}
    variants, built = nested.settings_variants(nets, cfgs, tmp_path)
    labels = set()
    for proc, net in nets.items():
        fitters = variants(proc)
        assert fitters["preset"] is net
        assert all(fitters[s].strategy == net.strategy for s in nested.SETTINGS)
        labels |= {f.label for f in fitters.values()}
    assert len(labels) == 2 * len(nested.SETTINGS)
    assert variants("finetune")["hidden 8"] is built["finetune"]["hidden 8"]  # built once per procedure


def biased_driver_sets(x: dict, obs: dict, map_factor: float | None) -> nested.DriverVariants:
    """Stage-three stand-ins: ``tower`` is stage two's pick; ``map`` (absent when ``map_factor`` is None, like the
    ``network`` procedure) the same least-squares slope scaled by ``map_factor``."""
    variants = scaled_variants(x, obs, [])

    def sets(chosen, setting):
        tower = {"tower": variants(chosen)[setting]}
        return tower if map_factor is None else {**tower, "map": scaled_slope(x, obs, map_factor)}
    return sets


@pytest.mark.parametrize("map_factor, expected", [(1.0, "tower"), (0.8, "tower"), (None, "tower")])
def test_driver_set_stage_chooses_on_the_training_towers_only(map_factor, expected):
    """Stage three (--driver-sets): the driver set of stage two's pick, chosen on the same inner folds; the outer
    tower's target moves nothing; ties go to the tower set (listed first); a procedure with one set has no choice
    and keeps stage two's prediction and interval."""
    x, obs = synthetic_towers(8, 2, seed=3)
    outer = sorted(obs)[4]

    def run(o):
        return staged_fold(x, o, outer, variants=scaled_variants(x, o, []), drivers=biased_driver_sets(x, o, map_factor))

    clean = run(obs)
    assert clean.drivers_chosen == expected
    assert set(clean.drivers_scores) == (set() if map_factor is None else {"tower", "map"})
    assert clean.candidate[nested.NESTED_DRIVERS] == f"finetune (preset, {expected} drivers)"
    np.testing.assert_allclose(clean.pred[nested.NESTED_DRIVERS], clean.pred[nested.NESTED_SETTINGS])
    assert clean.q[nested.NESTED_DRIVERS] == clean.q[nested.NESTED_SETTINGS]
    poisoned = run(poison(obs, outer))
    assert clean.drivers_scores == poisoned.drivers_scores and clean.q == poisoned.q
    for proc in clean.pred:
        np.testing.assert_array_equal(clean.pred[proc], poisoned.pred[proc])
    scored = nested.score_procedures([clean], obs, ("trees", "network", "finetune"))
    assert list(scored)[-3:] == [nested.NESTED, nested.NESTED_SETTINGS, nested.NESTED_DRIVERS]


def test_driver_set_stage_picks_the_map_set_when_it_fits_better():
    x, obs = synthetic_towers(8, 2, seed=5)
    shrunk = {s: 0.5 * v for s, v in obs.items()}
    sets = biased_driver_sets(x, obs, 0.5)("finetune", "preset")  # only "map" recovers the truth scored
    chosen, oof, scores = nested.settings_choice(sorted(obs), shrunk, sets, 3, 1, "all")
    assert chosen == "map" and scores["map"] > scores["tower"], scores


def test_driver_sets_flag_needs_the_settings_stage(tmp_path, capsys):
    assert nested.main(["--choose", "network", "finetune", "--driver-sets", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmw: error: --driver-sets:") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_map_driver_set_is_the_same_procedure_on_its_own_stores(tmp_path):
    """The ``map`` set of a stage-two config changes the prepared driver set and the two store folders, nothing
    else; its fitter reuses none of the tower set's fits (a label of its own) and ``network`` has no map form."""
    from xmw_ray.config import load_config

    base = load_config(str(nested.PRESET), require="transfer")
    tower_over = ["transfer.strategies=[finetune]", *nested.transfer_overrides(tmp_path, base.optim.epochs),
                  *nested.setting_overrides("hidden 8", base.optim.epochs)]
    tower = load_config(str(nested.PRESET), tower_over, require="transfer")
    mapped = load_config(str(nested.PRESET), [*tower_over, *nested.map_overrides(tmp_path)], require="transfer")
    assert tower.transfer.prepare.drivers == "tower" and mapped.transfer.prepare.drivers == "map"
    assert {mapped.data.store, mapped.source.store}.isdisjoint({tower.data.store, tower.source.store})
    assert mapped.model == tower.model and mapped.optim == tower.optim and mapped.pretraining() == tower.pretraining()

    class Cfg:
        pass

    nets = {"finetune": nested.NetworkFitter(Cfg(), {}, tmp_path, "finetune"),
            "network": nested.NetworkFitter(Cfg(), {}, tmp_path, label=nested.NETWORK)}
    cfgs = {(p, s): Cfg() for p in nets for s in nested.SETTINGS if s != "preset"}
    variants, _ = nested.settings_variants(nets, cfgs, tmp_path)
    map_cfgs = {("finetune", s): Cfg() for s in nested.SETTINGS}
    sets, built = nested.driver_variants(variants, map_cfgs, {}, tmp_path)
    labels = set()
    for s in nested.SETTINGS:
        fitters = sets("finetune", s)
        assert fitters["tower"] is variants("finetune")[s] and fitters["map"].strategy == "finetune"
        labels |= {fitters["tower"].label, fitters["map"].label}
    assert len(labels) == 2 * len(nested.SETTINGS)
    assert set(sets("network", "hidden 8")) == {"tower"}
    assert sets("finetune", "preset")["map"] is built["finetune", "preset"]["map"]


def test_the_issues_strong_trees_recipe_is_the_drivers_and_season_without_trailing_means(fluxnet_dir):
    """Choice mode scores two tree procedures: ``trees`` (drivers, their 7- and 30-day trailing means, season) and
    ``PLAIN_TREES`` (issue #15's recipe: drivers and season only) on the same tower-years and target."""
    from real_towers import TREE_DRIVERS, TREE_WINDOWS

    from xmw_ray.data.solar import SEASON_VARS

    full = nested.tree_rows(str(fluxnet_dir))
    plain = nested.tree_rows(str(fluxnet_dir), windows=())
    assert sorted(full) == sorted(plain)
    for site in full:
        d = len(TREE_DRIVERS)
        assert plain[site]["dynamic"].shape[-1] == d + len(SEASON_VARS)
        assert full[site]["dynamic"].shape[-1] == d * (1 + len(TREE_WINDOWS)) + len(SEASON_VARS)
        np.testing.assert_array_equal(full[site]["dynamic"][..., :d], plain[site]["dynamic"][..., :d])
        np.testing.assert_array_equal(full[site]["dynamic"][..., -len(SEASON_VARS):], plain[site]["dynamic"][..., d:])
        np.testing.assert_array_equal(full[site]["y"], plain[site]["y"])
