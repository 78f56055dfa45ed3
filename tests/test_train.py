"""Ray Train: local-mode training learns, resumes, evaluates; a diverged batch is skipped on every worker together;
a worker failure recovered from its checkpoint; the resource check fails fast; configs reject
bad keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from fresh_python import RAY_LOG_LINE
from train_world import diverging_objective, make_grid_store

from xmw_ray import console
from xmw_ray.config import TrainConfig, load_config, validate
from xmw_ray.errors import XmwInputError
from xmw_ray.train.loop import Objective, skip_everywhere, training_progress
from xmw_ray.train.runner import run_training

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory) -> Path:
    return make_grid_store(tmp_path_factory.mktemp("train_world"))


def make_cfg(store: Path, out: Path, name: str, **over) -> TrainConfig:
    raw = {
        "data": {"source": "grid", "store": str(store), "batch_size": 32,
                 "split": {"kind": "temporal", "train_years": [2000, 2002], "test_years": [2003, 2003],
                           "val_fraction": 0.2, "seed": 0}},
        "model": {"name": "lstm", "params": {"hidden_size": 16, "num_layers": 1, "dropout": 0.0}},
        "optim": {"lr": 0.01, "epochs": 6, "patience": 10},
        "resources": {"num_workers": 0},
        "run": {"output_dir": str(out), "name": name, "seed": 0},
    }
    for key, value in over.items():
        section, field = key.split("__")
        raw[section][field] = value
    return validate(raw, TrainConfig)


@pytest.fixture(scope="module")
def trained(ray_session, grid_store, tmp_path_factory):
    """One local-mode run shared by the tests that only read its results. Its six epochs keep the training part in
    memory after the first (``data.in_memory``), as a small store may: the streamed epochs are tested below."""
    return run_training(make_cfg(grid_store, tmp_path_factory.mktemp("runs"), "learn", data__in_memory=True))


def test_local_mode_training_learns_and_keeps_best(trained):
    out = trained
    losses = [h["val_loss"] for h in out.history]
    assert len(out.history) == 6
    assert min(losses) < 0.5 * losses[0]
    assert out.metrics["val_nse"] > 0.5
    assert out.metrics["val_loss"] == min(losses)  # best = lowest validation loss, never test
    assert (out.best_checkpoint / "model.pt").is_file()
    cfg = json.loads((out.best_checkpoint / "config.json").read_text())
    assert cfg["model"]["name"] == "lstm" and cfg["data"]["split"]["test_years"] == [2003, 2003]


def test_diverged_batch_is_skipped_and_epochs_are_timed(ray_session, grid_store, tmp_path):
    out = run_training(make_cfg(grid_store, tmp_path, "diverge", optim__epochs=2), objective=diverging_objective(None))
    n_train = out.history[0]["train_samples"]
    assert n_train > 0 and all(h["train_samples"] == n_train for h in out.history)  # every sample, every epoch
    assert [h["skipped_batches"] for h in out.history] == [1, 1]
    assert all(h["train_seconds"] > 0 for h in out.history)
    assert all(h["train_loss"] == h["train_loss"] for h in out.history)  # the NaN batch never reached the mean


def _skip_rank(rank: int, port: int, cases: list[tuple[float, float]], results) -> None:
    import torch

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results.put((rank, [skip_everywhere(torch.tensor(case[rank]), torch.device("cpu")) for case in cases]))
    finally:
        torch.distributed.destroy_process_group()


def test_skip_decision_is_collective():
    """Two gloo ranks: one non-finite loss makes BOTH skip (a lone skip would desynchronise the DDP all-reduce)."""
    import socket

    import torch.multiprocessing as mp

    nan, inf = float("nan"), float("inf")
    cases = [(nan, 0.5), (0.5, inf), (0.5, 0.7), (nan, -inf)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_skip_rank, args=(rank, port, cases, results)) for rank in range(2)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert got[0] == got[1] == [True, True, False, True]


def test_rerun_with_same_name_resumes(ray_session, grid_store, tmp_path):
    first = run_training(make_cfg(grid_store, tmp_path, "resume", optim__epochs=1))
    second = run_training(make_cfg(grid_store, tmp_path, "resume", optim__epochs=2))
    assert [h["epoch"] for h in second.history] == [0, 1]
    assert second.history[:1] == first.history  # the first epoch was not trained again


def test_evaluate_in_fresh_process(trained, grid_store, tmp_path):
    """``xmw evaluate`` in a new process (it starts its own Ray) scores the checkpoint as trained; with ``-v`` Ray's
    own lines reach the terminal instead of a log file beside the checkpoint, and stdout stays the JSON report."""
    proc = subprocess.run([sys.executable, "-m", "xmw_ray.cli", "evaluate", "--checkpoint", str(trained.best_checkpoint),
                           "--store", str(grid_store), "--split", "test", "--json", "-v"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert RAY_LOG_LINE.search(proc.stderr), proc.stderr[-2000:]  # Ray's own lines, here on the terminal
    assert "Ray's own output" not in proc.stderr
    assert not (trained.best_checkpoint.parent / f"evaluate-{console.RAY_LOG}").exists()
    report = json.loads(proc.stdout)
    assert set(report) >= {"pooled", "median", "per_entity"}
    assert set(report["pooled"]) == {"nse", "rmse", "nrmse", "pearson_r2", "kge", "bias", "n"}
    assert report["pooled"]["n"] > 0 and report["pooled"]["nse"] > 0.5
    # the test split is the held-out year only: 365 days per cell
    assert all(m["n"] == 365 for m in report["per_entity"].values())


def test_train_controller_polls_often_unless_the_user_set_an_interval(ray_session, monkeypatch):
    """Every step of a Train run (workers up, training done, shut down) waits for the controller's next poll of its
    workers, every 2 s by Ray's default: the runs this process starts poll every 0.2 s, unless the user chose."""
    from ray.train.v2._internal.constants import get_env_vars_to_propagate

    from xmw_ray.train import runner

    monkeypatch.delenv(runner.TRAIN_POLL_ENV, raising=False)
    runner.ensure_ray()
    assert get_env_vars_to_propagate()[runner.TRAIN_POLL_ENV] == runner.TRAIN_POLL_INTERVAL_S == "0.2"
    monkeypatch.setenv(runner.TRAIN_POLL_ENV, "3")
    runner.ensure_ray()
    assert get_env_vars_to_propagate()[runner.TRAIN_POLL_ENV] == "3"


@pytest.mark.parametrize(("address", "user", "expected"), [
    (None, None, "0"),  # a local instance: one node nobody drains
    (None, "1", "1"),  # the user's choice is kept
    ("127.0.0.1:6379", None, None),  # a cluster: Ray's default (on)
])
def test_a_local_instance_runs_train_without_the_preemption_watcher(monkeypatch, address, user, expected):
    import ray

    from xmw_ray.train import runner

    class Started(Exception):
        pass

    seen: dict[str, str | None] = {}

    def fake_init(**kwargs):  # what the instance's processes would inherit
        seen["watcher"] = os.environ.get(runner.PREEMPTION_WATCHER_ENV)
        raise Started

    for name, value in (("RAY_ADDRESS", address), (runner.PREEMPTION_WATCHER_ENV, user)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(runner, "_watcher_off_here", [False])
    with pytest.raises(Started):
        runner.ensure_ray()
    assert seen["watcher"] == expected
    # the same process joining a cluster later: Ray's default there, whatever the local instance had
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with pytest.raises(Started):
        runner.ensure_ray()
    assert seen["watcher"] == user


def test_request_larger_than_cluster_fails_fast(ray_session, grid_store, tmp_path):
    cfg = make_cfg(grid_store, tmp_path, "toobig", resources__num_workers=16)
    with pytest.raises(XmwInputError, match=r"asked for 17 CPU .* cluster has 4 CPU"):
        run_training(cfg)


def test_config_errors_name_the_key(tmp_path, grid_store):
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  store: {grid_store}\noptim:\n  lrr: 0.1\n")
    with pytest.raises(XmwInputError, match=r"optim\.lrr: unknown key"):
        load_config(path)
    with pytest.raises(XmwInputError, match=r"optim\.epochs: .*integer"):
        load_config(None, [f"data.store={grid_store}", "optim.epochs=many"])
    with pytest.raises(XmwInputError, match=r"model: .*unknown model 'lstmx'"):
        load_config(None, [f"data.store={grid_store}", "model.name=lstmx"])


def test_cli_bad_config_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xmw_ray.cli", "train", "--config", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "none.yaml: config file not found" in proc.stderr


def failing_objective(log: Path, fail_at: int) -> Objective:
    """The plain loss, but the worker dies at the start of epoch ``fail_at`` the first time it gets there (the
    ``.failed`` file beside ``log`` survives the restart); each process appends every epoch it starts to ``log``."""
    from xmw_ray.data import schema
    from xmw_ray.train.losses import masked_mse

    failed = log.with_suffix(".failed")

    class FailsOnce(Objective):  # defined here, so workers get it by value (tests/ is not on their path)
        def __init__(self) -> None:
            self.started: set[int] = set()

        def loss(self, model, bare, extras, batch, source, progress, epoch):
            if epoch not in self.started:
                self.started.add(epoch)
                with log.open("a") as f:
                    f.write(f"{epoch}\n")
                if epoch == fail_at and not failed.exists():
                    failed.touch()
                    raise RuntimeError(f"injected worker failure at epoch {epoch}")
            loss = masked_mse(model(batch[schema.DYNAMIC], batch[schema.STATIC]).float(), batch[schema.TARGET])
            return loss / float(bare.target_std) ** 2, {}

    return FailsOnce()


def _command_sigint(signum, frame) -> None:
    raise KeyboardInterrupt


def _alive_train_controllers(within_s: float) -> int:
    """How many Train controllers are still alive after waiting up to ``within_s`` for none to be."""
    import time

    import ray
    from ray.util.state import list_actors

    deadline = time.monotonic() + within_s
    while True:
        alive = list_actors(address=ray.get_runtime_context().gcs_address,  # this session's (xdist: one of two)
                            filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")])
        if not alive or time.monotonic() > deadline:
            return len(alive)
        time.sleep(0.5)


def _checkpoint_copies_of(run_root: Path) -> list[Path]:
    """Ray's temporary checkpoint copies (``checkpoint_tmp_*`` in the temporary folder) of runs under ``run_root``
    (recognised by the output folder in their config), so that other tests' runs beside this one do not count."""
    copies = Path(tempfile.gettempdir()).glob("checkpoint_tmp_*/config.json")
    return [c.parent for c in copies if str(run_root) in c.read_text(errors="replace")]


@pytest.mark.slow
def test_worker_failure_recovers_from_checkpoint(ray_session, grid_store, tmp_path):
    """A Ray Train worker (not local mode) dies in epoch 1; its replacement resumes there from the epoch-0
    checkpoint. The run has no validation part, so every kept checkpoint scores NaN: its ``best`` is the final
    epoch's, as in local mode, not the older of the two kept checkpoints (the suite's one such worker run)."""
    from xmw_ray.models.checkpoint import METRICS_FILE

    split = {"kind": "temporal", "train_years": [2000, 2002], "test_years": [2003, 2003], "val_fraction": 0.0}
    cfg = make_cfg(grid_store, tmp_path, "faulty", resources__num_workers=1, optim__epochs=3,
                   optim__scheduler="none", data__split=split, run__keep_checkpoints=2)
    log = tmp_path / "epochs.log"
    assert threading.current_thread() is threading.main_thread()  # where Ray Train installs its Ctrl-C handler
    ours = signal.signal(signal.SIGINT, _command_sigint)  # what a command's Ctrl-C does before and after the run
    try:
        out = run_training(cfg, objective=failing_objective(log, fail_at=1))
        # after the run Ctrl-C is the command's again, not the finished run's (Ray's handler swallowed two Ctrl-C
        # and exited 0 on the third), and the run's controller, no longer held by that handler, goes away
        assert signal.getsignal(signal.SIGINT) is _command_sigint
    finally:
        signal.signal(signal.SIGINT, ours)
    assert _alive_train_controllers(within_s=60) == 0
    assert [h["epoch"] for h in out.history] == [0, 1, 2]
    # the worker died in epoch 1 and its replacement resumed there from the epoch-0 checkpoint, not from scratch
    assert log.read_text().split() == ["0", "1", "1", "2"]
    assert json.loads((out.best_checkpoint / METRICS_FILE).read_text())["epoch"] == 2
    # neither the replacement worker's resume nor the driver's reading of the results left a copy of a checkpoint
    # in the temporary folder (``Checkpoint.to_directory()`` without a path made one per call, never removed)
    assert _checkpoint_copies_of(tmp_path) == []


def test_without_validation_the_final_epochs_checkpoint_is_kept(tmp_path):
    """With no validation part every kept checkpoint scores NaN: the run keeps the final epoch's (the latest,
    ``result.checkpoint``), not the older kept one that a minimum over all-infinite scores returns."""
    from types import SimpleNamespace

    from ray.train import Checkpoint

    from xmw_ray.train.runner import _best_checkpoint_dir

    older, final = (Checkpoint.from_directory(str(tmp_path / d)) for d in ("epoch_0001", "epoch_0002"))
    nan = float("nan")
    history = [{"epoch": e, "val_loss": nan} for e in range(3)]
    result = SimpleNamespace(best_checkpoints=[(older, {"epoch": 1, "val_loss": nan}),
                                               (final, {"epoch": 2, "val_loss": nan})], checkpoint=final)
    with _best_checkpoint_dir(result, tmp_path, False, history) as best:
        assert best == final.path
    # with validation the lowest finite loss wins, whichever epoch it is
    result.best_checkpoints = [(older, {"epoch": 1, "val_loss": 0.3}), (final, {"epoch": 2, "val_loss": 0.5})]
    with _best_checkpoint_dir(result, tmp_path, False, history) as best:
        assert best == older.path



def test_a_workers_checkpoint_folder_is_removed_also_when_writing_or_uploading_fails(tmp_path, monkeypatch):
    """On workers each checkpoint goes to a temporary folder that Ray uploads during ``report``: it goes whether
    that succeeds or fails (a full disk, a storage error), so a run's retries leave no model copies behind;
    local mode writes into the run folder and keeps it."""
    from xmw_ray.train.loop import checkpoint_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with checkpoint_folder(None, 3) as directory:
        assert Path(directory).parent == tmp_path / "tmp"
        (Path(directory) / "model.pt").write_bytes(b"weights")
    with pytest.raises(OSError, match="upload failed"), checkpoint_folder(None, 4) as directory:
        (Path(directory) / "model.pt").write_bytes(b"weights")
        raise OSError("upload failed")
    assert list((tmp_path / "tmp").iterdir()) == []
    with checkpoint_folder(str(tmp_path / "run"), 5) as directory:
        assert directory == f"{tmp_path / 'run'}/epoch_0005"

def test_training_progress_moves_per_step_and_stays_in_range():
    assert training_progress(0, 0, 4, 10) == 0.0
    assert training_progress(0, 1, 4, 10) == pytest.approx(1 / 40)  # the first epoch already moves
    assert training_progress(2, 5, 4, 10) == pytest.approx(25 / 40)
    assert training_progress(3, 15, 4, 10) == 1.0  # more steps than counted: the epoch ends at its share
    assert training_progress(2, 5, 4, None) == 0.5  # steps unknown: per epoch


def _bucket_checkpoint(path: str, files: dict[str, bytes]):
    """A Ray checkpoint on an object store (fsspec's in-memory one behind pyarrow): not a local folder."""
    import pyarrow.fs
    from fsspec.implementations.memory import MemoryFileSystem
    from ray.train import Checkpoint

    mem = MemoryFileSystem()
    for name, data in files.items():
        mem.pipe_file(f"{path}/{name}", data)
    return Checkpoint(path=path, filesystem=pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(mem)))


def test_a_checkpoint_read_from_a_bucket_leaves_nothing_in_the_temporary_folder(tmp_path, monkeypatch):
    """Resuming and publishing read Ray's checkpoints from run storage: from a bucket that is a download, which goes
    afterwards, also when the download fails (Ray's ``as_directory`` left its download folder, a lock file beside
    it and lock files under ``_ray_lockfiles``)."""
    from types import SimpleNamespace

    from xmw_ray.train.runner import _best_checkpoint_dir

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    good = _bucket_checkpoint("/bucket/run/checkpoint_000001", {"model.pt": b"weights", "sub/config.json": b"{}"})
    result = SimpleNamespace(checkpoint=good, best_checkpoints=[(good, {"epoch": 1, "val_loss": 0.2})])
    with _best_checkpoint_dir(result, tmp_path, False, [{"epoch": 1, "val_loss": 0.2}]) as best:
        assert (Path(best) / "model.pt").read_bytes() == b"weights"
        assert (Path(best) / "sub" / "config.json").read_bytes() == b"{}"
    assert list(temp.iterdir()) == []
    gone = _bucket_checkpoint("/bucket/run/checkpoint_000002", {})
    result = SimpleNamespace(checkpoint=gone, best_checkpoints=[])
    with pytest.raises(FileNotFoundError), _best_checkpoint_dir(result, tmp_path, False, []):
        pass
    assert list(temp.iterdir()) == []


def test_publishing_a_run_to_a_bucket_replaces_best_whole_with_the_model_last(tmp_path, monkeypatch):
    """A run on object storage uploads ``best`` with the model file last, after removing what an earlier run's
    ``best`` held, so a reader (``xmw infer``) never pairs the new model with an old run's files; a user's
    object there is refused, not deleted."""
    import fsspec

    from xmw_ray.train.runner import _publish

    url = "memory://bucket/runs/r"
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/bucket/runs/r/best/model.pt", b"old weights")
    fs.pipe_file("/bucket/runs/r/best/train_state.pt", b"old state")
    run = tmp_path / "r"
    (run / "best").mkdir(parents=True)
    for name in ("config.json", "metrics.json", "model.pt"):
        (run / "best" / name).write_bytes(name.encode())
    (run / "history.json").write_text("[]")
    puts: list[str] = []
    real_put = type(fs).put_file
    monkeypatch.setattr(type(fs), "put_file", lambda self, lpath, rpath, **kw: puts.append(rpath.rsplit("/", 1)[1])
                        or real_put(self, lpath, rpath, **kw))
    try:
        _publish(run, url)
        assert sorted(fs.ls("/bucket/runs/r/best", detail=False)) == [
            f"/bucket/runs/r/best/{n}" for n in ("config.json", "metrics.json", "model.pt")]
        assert fs.cat_file("/bucket/runs/r/best/model.pt") == b"model.pt"
        assert sorted(puts) == ["config.json", "metrics.json", "model.pt"] and puts[-1] == "model.pt"
        assert fs.cat_file("/bucket/runs/r/history.json") == b"[]"
        fs.pipe_file("/bucket/runs/r/best/notes.txt", b"mine")
        with pytest.raises(XmwInputError, match="holds 'notes.txt'.*use another run.name"):
            _publish(run, url)
        assert fs.cat_file("/bucket/runs/r/best/notes.txt") == b"mine"
    finally:
        fs.rm("/bucket", recursive=True)
