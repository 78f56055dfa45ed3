"""What the terminal shows (issue #19): one progress display per stage, Ray's own output in the run folder's
``ray.log`` unless ``-v``, no error-level line from Ray Data's stats actor, and the budget once."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from builders import write_tiny_temmdm
from fresh_python import RAY_CHATTER, RAY_LOG_LINE
from train_world import make_grid_store

from xmw_ray import console
from xmw_ray.infer.commands import budget_lines
from xmw_ray.train.progress import epoch_line


def _xmw(*argv: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmw_ray.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


# --- progress displays -----------------------------------------------------------------------------------------
def test_progress_into_a_file_is_a_line_per_tenth_and_the_end(capsys):
    bar = console.Progress("years", 40, "mapped")
    for done in range(1, 41):
        bar.update(done, f"{1978 + done}")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and lines[0] == "  years: 1/40 mapped, 1979" and lines[-1] == "  years: 40/40 mapped, 2018"
    assert "\r" not in "".join(lines) and "\x1b" not in "".join(lines)  # no cursor tricks off a terminal
    few = console.Progress("trials", 3, "done")
    for done in (1, 2, 3):
        few.update(done)
    assert len(capsys.readouterr().err.splitlines()) == 3  # fewer steps than tenths: every one


def test_progress_on_a_terminal_rewrites_one_line(monkeypatch, capsys):
    monkeypatch.setattr(console, "_is_tty", lambda stream: True)
    bar = console.Progress("epochs", 5)
    for done in (1, 2, 3):
        bar.update(done)
    console.err("a note")  # ends the line being rewritten first
    bar.finish(3, "stopped early")
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and err.count("\r") == 4 and "a note\n" in err
    assert err.endswith("\r  epochs: 3/5, stopped early\x1b[K\n")


def test_stage_log_turns_steps_into_one_display_per_phase(capsys):
    log = console.StageLog()
    log("replacing existing grid store g.zarr")
    for i in range(30):
        log(console.Step(f"checking {2000 + i}", i + 1, 30, "checking years"))
    for i in range(30):
        log(console.Step(f"writing {2000 + i}", i + 1, 30, "writing years"))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "  replacing existing grid store g.zarr" and len(lines) == 23
    assert lines[11] == "  checking years: 30/30, checking 2029" and lines[-1] == "  writing years: 30/30, writing 2029"
    assert console.Step("checking 2000", 1, 30, "checking years") == "checking 2000"  # plain callbacks print it


def test_prepare_grid_prints_a_bounded_number_of_lines(tmp_path):
    years = tuple(range(1995, 2020))
    write_tiny_temmdm(tmp_path / "src", res=30.0, years=years, keep_arrays=False)
    proc = _xmw("prepare", "grid", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "g.zarr"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) <= 25, proc.stderr  # two phases of at most eleven lines and a note, not two lines a year
    assert "  writing years: 25/25, writing 2019 " in proc.stderr


def test_trial_progress_counts_ended_trials_and_keeps_the_best(capsys):
    from xmw_ray.tune.progress import TrialProgress

    cb = TrialProgress(3)
    trial = [SimpleNamespace(trial_id=f"t{i}", config={"model": m, "strategy": s})
             for i, (m, s) in enumerate([("lstm", "scratch"), ("tcn", "finetune"), ("lstm", "residual")])]
    cb.on_trial_result(0, trial, trial[0], {"val_nse": 0.2})
    cb.on_trial_result(0, trial, trial[1], {"val_nse": 0.6})
    cb.on_trial_complete(0, trial, trial[0])
    cb.on_trial_result(0, trial, trial[0], {"val_nse": float("nan")})
    cb.on_trial_error(0, trial, trial[2])
    cb = pickle.loads(pickle.dumps(cb))  # Tune pickles its callbacks with the search
    cb.on_trial_complete(0, trial, trial[1])
    assert capsys.readouterr().err.splitlines() == [
        "  trials: 1/3 done, best val NSE so far 0.600 (tcn / finetune)",
        "  trials: 2/3 done, best val NSE so far 0.600 (tcn / finetune)",
        "  trials: 3/3 done, best val NSE so far 0.600 (tcn / finetune)"]


def test_epoch_line_says_what_the_epoch_scored():
    assert epoch_line({"epoch": 3, "epochs": 20, "val_nse": 0.4123, "train_loss": 0.31}) == \
        "val NSE 0.412, train loss 0.31"
    assert epoch_line({"epoch": 7, "epochs": 20, "val_nse": 0.5, "done": True}).endswith(
        "stopped early: validation stopped improving")
    assert epoch_line({"epoch": 2, "epochs": 2, "val_nse": float("nan")}) == "no validation score"


def test_budget_is_a_summary_and_every_year_once():
    budget = {y: {"global": 150.0 + (y - 1979)} for y in range(1979, 2019)}
    lines = budget_lines(budget, "Tg CH4 yr-1")
    assert lines[0] == ("global wetland budget (Tg CH4 yr-1), 1979-2018: mean 169.5, lowest 150.0 (1979), "
                        "highest 189.0 (2018)")
    assert len(lines) == 5 and all(sum(f"{y} " in line for line in lines) == 1 for y in budget)


# --- Ray's output: the log file, and -v ------------------------------------------------------------------------
def test_routed_chatter_goes_to_the_log_and_the_commands_lines_to_the_terminal(tmp_path, capsys):
    log = tmp_path / "run" / console.RAY_LOG
    with console.ray_output(log):
        assert console.routed_log() is None and not log.exists()  # nothing before Ray starts
        assert console.route_ray_output() == log
        print("chatter on stdout")
        print("chatter on stderr", file=sys.stderr)
        os.write(2, b"a C++ line on descriptor 2\n")
        console.out("result")
        console.err("progress")
    captured = capsys.readouterr()
    assert captured.out == "result\n"
    assert captured.err == f"Ray's own output: {log} (-v shows it here)\nprogress\n"
    assert log.read_text() == "chatter on stdout\nchatter on stderr\na C++ line on descriptor 2\n"
    with console.ray_output(tmp_path / "loud" / console.RAY_LOG, verbose=True):
        assert console.route_ray_output() is None
        print("chatter")
    assert capsys.readouterr().out == "chatter\n" and not (tmp_path / "loud").exists()


def test_a_refusal_after_ray_started_leaves_no_log(tmp_path, capsys):
    from xmw_ray.errors import XmwInputError

    with pytest.raises(XmwInputError), console.ray_output(tmp_path / "runs" / "x" / console.RAY_LOG):
        console.route_ray_output()
        print("Ray's start-up lines")
        raise XmwInputError("--actors 99: more than the cluster holds")
    assert not (tmp_path / "runs").exists() and capsys.readouterr().err == ""


@pytest.mark.slow
def test_ray_output_goes_to_the_run_folder_log_unless_verbose(tmp_path):
    """``xmw train`` in a fresh process (it starts its own Ray): the terminal shows the log's path, the epochs and
    the result, and nothing of Ray's; the log holds Ray's lines. (``xmw evaluate -v`` showing Ray's output again:
    ``tests/test_train.py::test_evaluate_in_fresh_process``, which starts the one other fresh Ray.)"""
    store = make_grid_store(tmp_path / "world")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"source": "grid", "store": str(store), "batch_size": 32,
                 "split": {"kind": "temporal", "train_years": [2000, 2002], "test_years": [2003, 2003],
                           "val_fraction": 0.2, "seed": 0}},
        "model": {"name": "lstm", "params": {"hidden_size": 8, "num_layers": 1}},
        "optim": {"lr": 0.01, "epochs": 2, "patience": 5}, "resources": {"num_workers": 0},
        "run": {"output_dir": str(tmp_path / "runs"), "name": "quiet", "seed": 0}}))
    proc = _xmw("train", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = tmp_path / "runs" / "quiet" / console.RAY_LOG
    assert proc.stderr.splitlines()[0] == f"Ray's own output: {log} (-v shows it here)"
    assert proc.stderr.count("Ray's own output") == 1
    assert not RAY_LOG_LINE.search(proc.stderr + proc.stdout), proc.stderr
    assert not RAY_CHATTER.search(proc.stderr + proc.stdout), proc.stderr
    assert re.findall(r"^  quiet: (\d)/2 epochs, val NSE ", proc.stderr, re.M) == ["1", "2"]
    assert len(proc.stderr.splitlines()) <= 5 and proc.stdout.count("\n") == 2
    assert RAY_LOG_LINE.search(log.read_text()), log.read_text()[-2000:]


def test_refused_command_leaves_no_log(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "grid", "store": str(tmp_path / "absent.zarr")},
                                      "run": {"output_dir": str(tmp_path / "runs"), "name": "x"}}))
    proc = _xmw("train", "--config", str(config), cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("xmw: error:"), proc.stderr
    assert not (tmp_path / "runs").exists()


# --- the stats actor ---------------------------------------------------------------------------------------------
def test_data_stats_actor_outlives_a_trials_placement_group(ray_session):
    """A Tune trial runs in a placement group that captures its children. Ray Data's detached ``_StatsActor``, if
    first created there, dies with the group when the trial ends, and the next dataset's statistics fail with
    "Unhandled error … KeyError: 'dataset_…'" (the error-level lines of a healthy demo search). ``ensure_ray``
    creates it from the driver first, outside any group."""
    import ray
    from ray.data._internal.stats import STATS_ACTOR_NAME, STATS_ACTOR_NAMESPACE
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from xmw_ray.train.runner import ensure_ray

    def stats_actor():
        return ray.get_actor(STATS_ACTOR_NAME, namespace=STATS_ACTOR_NAMESPACE)

    try:  # start as a fresh search does: no stats actor yet (earlier tests may have made one in the driver)
        ray.kill(stats_actor(), no_restart=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats_actor()
            time.sleep(0.2)
    except ValueError:
        pass
    ensure_ray()

    @ray.remote(num_cpus=0.25)
    class Trial:
        def run(self) -> int:
            return ray.data.range(8).map_batches(lambda b: b).materialize().count()

    pg = placement_group([{"CPU": 0.25}])
    ray.get(pg.ready(), timeout=120)
    trial = Trial.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_capture_child_tasks=True)).remote()
    assert ray.get(trial.run.remote(), timeout=300) == 8
    actor = stats_actor()
    remove_placement_group(pg)
    time.sleep(2)
    assert isinstance(ray.get(actor.get_datasets.remote(), timeout=60), dict)  # alive: it was never in the group
