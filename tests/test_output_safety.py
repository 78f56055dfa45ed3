"""``--out`` never destroys what is there: a user's folder, a file or another kind of store is refused with one line
(exit 2) and left byte for byte; our own store or world of the same kind is replaced, and says so. Writers of the
same target do not trip over each other, and the temporary folders of killed writers are swept on the next run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
from builders import write_tiny_fluxnet, write_tiny_temmdm

from xmw_ray import storage as atomic
from xmw_ray.cli import main
from xmw_ray.data import layout
from xmw_ray.storage import directory_aside, sweep_stale_asides, write_text_atomic

SIM_ARGS = ["--res", "30", "--years", "2000-2000", "--sites", "0"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """The tiny sources, and one store of each kind built from them (copied into each case that needs one)."""
    root = tmp_path_factory.mktemp("sources")
    write_tiny_temmdm(root / "tem", res=10.0, years=(2000, 2001), seed=5)
    write_tiny_fluxnet(root / "flux", {"XX-Aaa": (50.0, 10.0), "XX-Bbb": (60.0, 20.0)})
    assert main(["prepare", "grid", "--src", str(root / "tem"), "--out", str(root / "grid")]) == 0
    assert main(["prepare", "sites", "--src", str(root / "flux"), "--out", str(root / "sites")]) == 0
    return {"tem": root / "tem", "flux": root / "flux", "grid": root / "grid", "sites": root / "sites"}


def _argv(command: str, sources: dict[str, Path], out: Path) -> list[str]:
    if command == "grid":
        return ["prepare", "grid", "--src", str(sources["tem"]), "--out", str(out)]
    if command == "sites":
        return ["prepare", "sites", "--src", str(sources["flux"]), "--out", str(out)]
    return ["simulate", "--out", str(out), *SIM_ARGS]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file under ``root`` with its bytes, and every folder (``None``)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _asides(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*") if ".tmp-" in p.name or ".old-" in p.name)


def _thesis_folder(tmp: Path, sources: dict[str, Path]) -> Path:
    (tmp / "work").mkdir()
    (tmp / "work" / "thesis.txt").write_text("four years of my life\n")
    return tmp / "work"


def _a_file(tmp: Path, sources: dict[str, Path]) -> Path:
    (tmp / "notes.txt").write_text("do not delete\n")
    return tmp / "notes.txt"


def _copy(kind: str) -> Callable[[Path, dict[str, Path]], Path]:
    def setup(tmp: Path, sources: dict[str, Path]) -> Path:
        return Path(shutil.copytree(sources[kind], tmp / f"{kind}-store"))
    return setup


def _dataset_root(tmp: Path, sources: dict[str, Path]) -> Path:
    """An X-MethaneWet-like dataset root (TEM-MDM/ and FLUXNET-CH4/) that ``simulate`` did not write."""
    shutil.copytree(sources["tem"], tmp / "dataset" / layout.TEM_DIR)
    shutil.copytree(sources["flux"], tmp / "dataset" / layout.FLUX_DIR)
    return tmp / "dataset"


def _long_name(tmp: Path, sources: dict[str, Path]) -> Path:
    return tmp / ("x" * 300) / "store"


def _long_out_name(tmp: Path, sources: dict[str, Path]) -> Path:
    """A name that fits the file system's limit, but not once written aside as ``.NAME.tmp-…``."""
    return tmp / ("y" * 250)


def _below_a_file(tmp: Path, sources: dict[str, Path]) -> Path:
    (tmp / "plain").write_text("a file, not a folder\n")
    return tmp / "plain" / "store"


# command, what is at --out, one-line message; every case exits 2 and leaves the folder as it was.
REFUSED = [
    pytest.param("grid", _thesis_folder, "holds 'thesis.txt', which is not part of a Grid store", id="grid-user-folder"),
    pytest.param("sites", _thesis_folder, "holds 'thesis.txt', which is not part of a Site store",
                 id="sites-user-folder"),
    pytest.param("simulate", _thesis_folder, "holds 'thesis.txt', which is not part of a built-in world folder",
                 id="simulate-user-folder"),
    pytest.param("grid", _a_file, "notes.txt: is a file, not a Grid store", id="grid-file"),
    pytest.param("sites", _a_file, "notes.txt: is a file, not a Site store", id="sites-file"),
    pytest.param("simulate", _a_file, "notes.txt: is a file, not a built-in world folder", id="simulate-file"),
    pytest.param("grid", _copy("sites"), "which is not part of a Grid store", id="grid-over-site-store"),
    pytest.param("sites", _copy("grid"), "which is not part of a Site store", id="sites-over-grid-store"),
    pytest.param("simulate", _copy("grid"), "which is not part of a built-in world folder",
                 id="simulate-over-grid-store"),
    pytest.param("simulate", _dataset_root, "holds data that xmw simulate did not write", id="simulate-dataset-root"),
    pytest.param("grid", _long_name, "File name too long", id="grid-name-too-long"),
    pytest.param("sites", _long_name, "File name too long", id="sites-name-too-long"),
    pytest.param("simulate", _long_name, "File name too long", id="simulate-name-too-long"),
    pytest.param("grid", _long_out_name, "name too long to write aside", id="grid-name-too-long-aside"),
    pytest.param("sites", _long_out_name, "name too long to write aside", id="sites-name-too-long-aside"),
    pytest.param("grid", _below_a_file, "plain: is a file, not a folder to write store into", id="grid-below-a-file"),
    pytest.param("sites", _below_a_file, "plain: is a file, not a folder to write store into",
                 id="sites-below-a-file"),
    pytest.param("simulate", _below_a_file, "plain: is a file, not a folder to write store into", id="simulate-below-a-file"),
]


@pytest.mark.parametrize(("command", "setup", "needle"), REFUSED)
def test_out_refused(command, setup, needle, sources, tmp_path, capsys):
    out = setup(tmp_path, sources)
    before = _snapshot(tmp_path)
    assert main(_argv(command, sources, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("xmw: error: ") and needle in err[-1], err
    assert sum(line.startswith("xmw:") for line in err) == 1 and "Traceback" not in "\n".join(err), err
    assert _snapshot(tmp_path) == before  # nothing of the user's overwritten or deleted, nothing left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
@pytest.mark.parametrize("command", ["grid", "sites", "simulate"])
def test_out_in_read_only_folder(command, sources, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(_argv(command, sources, locked / "out")) == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("xmw: error: ") and "Permission denied" in err[-1], err
    assert not any(locked.iterdir())


@pytest.mark.parametrize("command", ["grid", "sites", "simulate"])
def test_out_in_unwritable_folder_as_root(command, sources, tmp_path, capsys, monkeypatch):
    """CI runs as root, which writes anywhere: the same refusal, with the folder's write permission denied by
    ``os.access`` (what a non-root user's run sees)."""
    import xmw_ray.storage as atomic

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(atomic.os, "access",
                        lambda path, mode, **kw: False if Path(path) == locked else real_access(path, mode, **kw))
    assert main(_argv(command, sources, locked / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"xmw: error: {locked}: Permission denied"], err
    assert not any(locked.iterdir())


@pytest.mark.parametrize("kind", ["grid", "sites"])
def test_own_store_replaced_and_said(kind, sources, tmp_path, capsys):
    out = _copy(kind)(tmp_path, sources)
    assert main(_argv(kind, sources, out)) == 0
    err = capsys.readouterr().err
    assert f"replacing existing {kind if kind == 'grid' else 'site'} store {out}" in err, err
    assert _snapshot(out).keys() == _snapshot(sources[kind]).keys()
    assert not _asides(out)


@pytest.mark.parametrize("kind", ["grid", "sites"])
def test_empty_folder_is_filled_silently(kind, sources, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(_argv(kind, sources, out)) == 0
    assert "replacing" not in capsys.readouterr().err
    assert _snapshot(out).keys() == _snapshot(sources[kind]).keys() and not _asides(out)


def test_own_world_rerun_and_resumed(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["simulate", "--out", str(out), *SIM_ARGS]) == 0
    assert "replacing" not in capsys.readouterr().err
    first = _snapshot(out)
    assert main(["simulate", "--out", str(out), *SIM_ARGS]) == 0
    assert f"replacing existing built-in world {out}" in capsys.readouterr().err
    assert _snapshot(out) == first  # same seed: the same world
    (out / "truth.json").unlink()  # as a run killed before its end leaves it: still ours, by its marker
    assert main(["simulate", "--out", str(out), *SIM_ARGS]) == 0
    assert _snapshot(out) == first



def test_a_rerun_stopped_midway_leaves_no_finished_looking_world(tmp_path, monkeypatch):
    """Rerun with another seed and stopped after its first year: the world holds the new year beside the old
    ones, so the old truth.json (which ``xmw demo``, ``infer --truth`` and ``score-maps`` trust) must be gone."""
    from xmw_ray.sim import world as sim_world

    out = tmp_path / "world"
    assert main(["simulate", "--out", str(out), *SIM_ARGS]) == 0
    assert (out / "truth.json").is_file()

    def stop_after_a_year(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim_world.TowerRecorder, "collect", stop_after_a_year)
    with pytest.raises(KeyboardInterrupt):
        sim_world.simulate(sim_world.SimulationSpec(out=out, res=30.0, years=(2000, 2001), sites=0, seed=9),
                           log=lambda msg: None)
    assert not (out / "truth.json").exists()
    monkeypatch.undo()
    assert main(["simulate", "--out", str(out), *SIM_ARGS]) == 0  # still ours: the rerun finishes it
    assert json.loads((out / "truth.json").read_text())["seed"] == 0

# --- atomic.py: concurrent writers and stale asides -------------------------------------------------------------
def _fill(tmp: Path, tag: str) -> None:
    tmp.mkdir()
    for i in range(20):
        (tmp / f"part-{i}").write_text(tag)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "leaf").write_text(tag)


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "unlocked-file-system"])
def test_concurrent_writers_of_one_target(locked, tmp_path, monkeypatch):
    """Two threads finish ``directory_aside`` on the same target together: both succeed, the target is one
    writer's whole output (never a mix), and no temporary or old folder is left. Without the lock (a file system
    with no ``flock``) the commit still tolerates the concurrent winner."""
    if not locked:
        monkeypatch.setattr(atomic, "_parent_lock", lambda out: nullcontext())
    out = tmp_path / "store"
    owned = lambda key: key.startswith(("part-", "sub/"))  # noqa: E731
    for round_ in range(50):
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def write(tag: str, barrier: threading.Barrier = barrier, errors: list = errors) -> None:
            try:
                with directory_aside(out, owned, "test store") as tmp:
                    _fill(tmp, tag)
                    barrier.wait()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(f"{round_}-{t}",)) for t in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        tags = {p.read_text() for p in out.rglob("*") if p.is_file()}
        assert len(tags) == 1 and tags < {f"{round_}-a", f"{round_}-b"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


_WRITER = """
import sys
from pathlib import Path
from xmw_ray.storage import directory_aside
out, tag = Path(sys.argv[1]), sys.argv[2]
for i in range(25):
    with directory_aside(out, lambda key: key.startswith("part-"), "test store") as tmp:
        tmp.mkdir()
        for j in range(10):
            (tmp / f"part-{j}").write_text(f"{tag}-{i}")
"""


def test_concurrent_writer_processes(tmp_path):
    """Two processes replacing the same target 25 times each: none fails, nothing aside is left."""
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(out), tag], env=env, stderr=subprocess.PIPE,
                              text=True) for tag in "ab"]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert len({p.read_text() for p in out.iterdir()}) == 1


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_asides_of_dead_writers_are_swept(tmp_path):
    """A killed writer's ``.NAME.tmp-PID`` folder (and ``.old-PID`` leftover) is removed by the next run; those of
    live processes are kept (they may still be writing)."""
    out = tmp_path / "store"
    dead, live = _dead_pid(), os.getppid()
    stale = [tmp_path / f".store.tmp-{dead}", tmp_path / f".store.old-{dead}",
             tmp_path / f".store.tmp-{dead}@{os.uname().nodename}.0123abcd"]
    kept = [tmp_path / f".store.tmp-{live}", tmp_path / ".store.tmp-1@another-host.0123abcd",
            tmp_path / f".other.tmp-{dead}"]
    for path in stale + kept:
        path.mkdir()
        (path / "chunk").write_text("x")
    with directory_aside(out) as tmp:
        _fill(tmp, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["store", *(p.name for p in kept)])
    assert sweep_stale_asides(out) == []


def test_killed_prepare_leftover_swept(sources, tmp_path, capsys):
    """End to end: the aside a killed ``prepare grid`` left is gone after the next ``prepare grid``."""
    out = tmp_path / "grid"
    left = tmp_path / f".grid.tmp-{_dead_pid()}"
    shutil.copytree(sources["grid"], left)
    assert main(_argv("grid", sources, out)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid"]


def test_write_text_atomic_leaves_no_aside(tmp_path):
    path = tmp_path / "a.txt"
    (tmp_path / f".a.txt.tmp-{_dead_pid()}").write_text("half")
    write_text_atomic(path, "whole")
    assert path.read_text() == "whole" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


#: A command that holds a half-built folder aside (as ``prepare``, ``simulate sites`` and uploads do) and waits.
_HELD_ASIDE = """
import argparse, sys, time
from xmw_ray import cli, storage

def slow(args):
    with storage.directory_aside(sys.argv[1]) as tmp:
        tmp.mkdir()
        (tmp / "half.bin").write_bytes(b"x" * 1000)
        print("ready", flush=True)
        time.sleep(60)
    return 0

def parser():
    p = argparse.ArgumentParser()
    p.set_defaults(func=slow)
    return p

cli.build_parser = parser
sys.exit(cli.main([]))
"""


def test_sigterm_ends_a_command_through_its_cleanup(tmp_path):
    """A batch scheduler's time limit, ``timeout`` or a pod's stop sends SIGTERM: the command ends as on Ctrl-C,
    removing the half-built folder it held aside (by default the process died and left it), with status 143."""
    import signal

    out = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", _HELD_ASIDE, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".store.tmp-")]  # held aside
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert list(tmp_path.iterdir()) == []


def test_evaluating_a_checkpoint_on_a_read_only_share_logs_in_the_users_cache(tmp_path, monkeypatch):
    """``xmw evaluate`` keeps Ray's log beside the checkpoint; where this user may not write (a lab's published
    model), the log goes to the user's cache (the command failed on creating it: permission denied)."""
    from xmw_ray.train.commands import evaluate_log

    shared = tmp_path / "lab" / "model" / "best"
    shared.mkdir(parents=True)
    monkeypatch.setenv("XMW_CACHE_DIR", str(tmp_path / "cache"))
    assert evaluate_log(str(shared)) == tmp_path / "lab" / "model" / "evaluate-ray.log"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != shared.parent and real_access(p, mode, **kw))
    assert evaluate_log(str(shared)) == tmp_path / "cache" / "logs" / "evaluate-ray.log"
    monkeypatch.setattr(os, "access", real_access)
    (shared.parent / "evaluate-ray.log").write_text("another user's")  # a shared group folder
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p).name != "evaluate-ray.log" and real_access(p, mode, **kw))
    assert evaluate_log(str(shared)) == tmp_path / "cache" / "logs" / "evaluate-ray.log"
