"""The one storage module: atomic publish of ``best`` under crashes, URL and run-path helpers, and the acceptance
check that no other module renames files or tests for URLs itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import xmw_ray
from xmw_ray import storage
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import (
    aside_target,
    is_url,
    join_path,
    local_mirror,
    local_run_dir,
    publish_dir,
    published_dir,
    run_path,
    url_scheme,
    write_bytes_atomic,
    write_text_atomic,
)

PACKAGE = Path(xmw_ray.__file__).parent
#: What only the storage module may do: rename a file or folder into place, or decide whether a path is a URL.
STORAGE_ONLY = re.compile(r"os\.replace\(|\.rename\(|os\.renames\(|['\"]://['\"]")


def test_no_rename_or_url_check_outside_storage():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "storage.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if STORAGE_ONLY.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_url_helpers(tmp_path, monkeypatch):
    assert is_url("s3://bucket/x") and is_url("gs://b") and not is_url("runs/x") and not is_url(tmp_path)
    assert url_scheme("GS://b/x") == "gs" and url_scheme("/a/b") == ""
    assert run_path("s3://b/runs/", "exp", "trials") == "s3://b/runs/exp/trials"
    assert join_path("gs://b/x", "pretrain") == "gs://b/x/pretrain" and join_path("x", "y") == str(Path("x/y"))
    monkeypatch.chdir(tmp_path)
    assert run_path("runs", "exp") == str(tmp_path / "runs" / "exp")
    assert local_run_dir("runs", "exp") == tmp_path / "runs" / "exp"
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    assert local_mirror("s3://bucket/runs/") == tmp_path / "cache" / "runs" / "s3" / "bucket" / "runs"
    assert local_run_dir("s3://bucket/runs", "exp") == tmp_path / "cache" / "runs" / "s3" / "bucket" / "runs" / "exp"


def test_aside_target():
    assert aside_target(f".truth.json.tmp-{os.getpid()}@host.0123abcd") == "truth.json"
    assert aside_target(".best.old-12") == "best"
    assert aside_target("truth.json") is None and aside_target(".truth.json.tmp-x") is None


def test_write_atomic_files(tmp_path):
    write_bytes_atomic(tmp_path / "a" / "b.bin", b"\x00\x01")
    write_text_atomic(tmp_path / "a" / "c.txt", "é", encoding="utf-8-sig")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a" / "c.txt").read_bytes() == "é".encode("utf-8-sig")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin", "c.txt"]


def _fill(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _content(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


OLD = {"model.pt": "old weights", "config.json": "old config"}
NEW = {"model.pt": "new weights", "config.json": "new config", "metrics.json": "new metrics"}

def test_publishing_a_checkpoint_replaces_an_earlier_one_and_nothing_else(tmp_path):
    """A run's ``best`` is replaced by the next best checkpoint; a ``best`` that holds a user's file too is
    refused in one line and left as it was (also when the file arrives while the run trains: checked again at the
    swap)."""
    from xmw_ray.models.checkpoint import publish_checkpoint

    # the epoch folder published holds what a write killed there left: it is not copied (the next publish would
    # refuse it as not a checkpoint's)
    new = _fill(tmp_path / "new", {**NEW, ".metrics.json.tmp-123@host.0a1b2c3d": "half"})
    dest = _fill(tmp_path / "run" / "best", {**OLD, "train_state.pt": "old state"})
    publish_checkpoint(new, dest)
    assert _content(dest) == NEW
    publish_checkpoint(new, dest)
    assert _content(dest) == NEW
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(XmwInputError, match=r"best: holds 'notes.txt', which is not part of a checkpoint"):
        publish_checkpoint(_fill(tmp_path / "newer", OLD), dest)
    assert _content(dest) == {**NEW, "notes.txt": "mine"}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["best"]


#: Runs ``publish_dir`` and dies (``os._exit``, no cleanup, like a kill) at its ``step``-th storage operation;
#: prints "done" when it got through. With ``exchange`` off it takes the two-rename path.
_CRASHING_PUBLISH = textwrap.dedent("""
    import os, shutil, sys
    from xmw_ray import storage
    src, dest, step, use_exchange = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    calls = [0]

    def crashing(fn):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == step:
                os._exit(9)
            return fn(*args, **kwargs)
        return wrapped

    if not use_exchange:
        storage.exchange = lambda a, b: False
    storage.exchange = crashing(storage.exchange)
    storage._remove = crashing(storage._remove)
    storage.shutil.copytree = crashing(shutil.copytree)
    os.rename = crashing(os.rename)
    storage.publish_dir(src, dest, lambda key: True, "checkpoint")
    print("done")
""")


@pytest.mark.parametrize("use_exchange", [True, False], ids=["exchange", "two-renames"])
def test_publish_dir_survives_a_crash_at_every_step(tmp_path, use_exchange):
    """A writer killed at any point of publishing ``best`` leaves the old or the new checkpoint there, whole, for
    the next reader; the next publish then succeeds and leaves no asides behind."""
    if use_exchange and storage._renameat2 is None:
        pytest.skip("no renameat2 on this system")
    new = _fill(tmp_path / "new", NEW)
    seen_old = seen_new = False
    for step in range(1, 20):
        dest = tmp_path / f"run{step}" / "best"
        _fill(dest, OLD)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", _CRASHING_PUBLISH, str(new), str(dest), str(step),
                               "1" if use_exchange else "0"], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode in (0, 9), proc.stderr
        got = _content(published_dir(dest))
        assert got in (OLD, NEW), (step, got)
        seen_old |= got == OLD
        seen_new |= got == NEW
        publish_dir(new, dest, lambda key: True, "checkpoint")  # the next writer: sweeps what the dead one left
        assert _content(dest) == NEW
        assert sorted(p.name for p in dest.parent.iterdir()) == ["best"], step
        if proc.returncode == 0:
            assert "done" in proc.stdout
            break
    else:
        pytest.fail("publish_dir never got through")
    assert seen_old and seen_new and step >= 3  # crashes landed before and after the commit point


def test_sweep_restores_best_left_aside_by_a_killed_writer(tmp_path):
    """The two-rename path killed between its renames: ``best`` missing, the old one aside under a dead pid. The
    next writer's sweep puts it back rather than deleting it as a stale aside."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = _fill(tmp_path / f".best.old-{dead.pid}@{os.uname().nodename}.0123abcd", OLD)
    assert storage.sweep_stale_asides(tmp_path / "best") == []
    assert not aside.exists() and _content(tmp_path / "best") == OLD


def test_a_file_created_once_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    """Some SMB and FUSE mounts have no hard links: the file is then created in place, exclusively, instead of the
    first ``xmw tune`` failing there for good ("operation not permitted" on the aside)."""
    import errno

    from xmw_ray.storage import create_file_once

    def no_links(_src, _dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    key = tmp_path / "run.key"
    assert create_file_once(key, b"secret\n") is True
    assert create_file_once(key, b"other\n") is False
    assert key.read_bytes() == b"secret\n" and (key.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["run.key"]
