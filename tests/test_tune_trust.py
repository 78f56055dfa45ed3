"""Resuming a search runs only state this installation wrote: the signature over every file that ``Tuner.restore``
unpickles, checked before anything is unpickled (``xmw_ray/tune/trust.py``)."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
from test_object_storage import BUCKET, s3_env  # noqa: F401  (fixture)

from xmw_ray.errors import XmwInputError
from xmw_ray.tune.trust import SIGNATURE_FILE, run_key, sign_run, verify_run

REPO = Path(__file__).resolve().parents[1]
KEY_VARS = ("XMW_RUN_KEY", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class Planted:
    """Unpickling it creates ``marker``: stands in for a command planted in a shared run folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture
def key(monkeypatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XMW_RUN_KEY", "key-of-this-installation")


def write_search_files(run: Path) -> None:
    """The files a Tune run folder holds: root state, a trial's pickles, and xmw's own training checkpoints."""
    run.mkdir(parents=True)
    (run / "tuner.pkl").write_bytes(pickle.dumps({"state": 1}))
    (run / "experiment_state-2026.json").write_text('{"trial_data": []}')
    (run / "searcher-state-2026.pkl").write_bytes(pickle.dumps([1, 2]))
    (run / "leaderboard.csv").write_text("rank\n1\n")
    (run / "trial_a").mkdir()
    (run / "trial_a" / "params.pkl").write_bytes(pickle.dumps({"lr": 0.01}))
    (run / "trial_a" / "result.json").write_text("{}")
    (run / "trials" / "a" / "checkpoint_000000").mkdir(parents=True)
    (run / "trials" / "a" / "checkpoint_000000" / "model.pt").write_bytes(b"weights")


def test_signature_covers_what_restore_unpickles_and_verifies(key, tmp_path):
    run = tmp_path / "search"
    write_search_files(run)
    assert sign_run(str(run)) == 4
    signed = json.loads((run / SIGNATURE_FILE).read_text())["files"]
    assert sorted(signed) == ["experiment_state-2026.json", "searcher-state-2026.pkl", "trial_a/params.pkl",
                              "tuner.pkl"]
    verify_run(str(run))  # untouched: accepted
    (run / "leaderboard.csv").write_text("rank\n2\n")  # never unpickled: free to change
    verify_run(str(run))


@pytest.mark.parametrize("change, named", [
    (lambda run: (run / "tuner.pkl").write_bytes(pickle.dumps({"state": 2})), "tuner.pkl: changed"),
    (lambda run: (run / "trial_a" / "params.pkl").write_bytes(b"x"), "trial_a/params.pkl: changed"),
    (lambda run: (run / "callback-states-evil.pkl").write_bytes(b"x"), "callback-states-evil.pkl: not covered"),
    (lambda run: (run / "trial_b").mkdir() or (run / "trial_b" / "error.pkl").write_bytes(b"x"),
     "trial_b/error.pkl: not covered"),
    (lambda run: (run / "searcher-state-2026.pkl").unlink(), "searcher-state-2026.pkl: listed in"),
    (lambda run: (run / SIGNATURE_FILE).unlink(), f"{SIGNATURE_FILE}: missing"),
    (lambda run: (run / SIGNATURE_FILE).write_text("{"), f"{SIGNATURE_FILE}: not a signature file"),
])
def test_tampered_planted_or_unsigned_run_is_refused_naming_the_file(key, tmp_path, change, named):
    run = tmp_path / "search"
    write_search_files(run)
    sign_run(str(run))
    change(run)
    with pytest.raises(XmwInputError) as err:
        verify_run(str(run))
    msg = str(err.value)
    assert msg.startswith(f"{run}/") and named in msg and "\n" not in msg and "another run.name" in msg


def test_a_signature_made_with_another_key_is_refused(key, tmp_path, monkeypatch):
    run = tmp_path / "search"
    write_search_files(run)
    monkeypatch.setenv("XMW_RUN_KEY", "someone-elses-key")
    sign_run(str(run))  # e.g. written, and signed, by whoever can write to the shared bucket
    monkeypatch.setenv("XMW_RUN_KEY", "key-of-this-installation")
    with pytest.raises(XmwInputError, match=rf"{SIGNATURE_FILE}: not signed with this installation's key"):
        verify_run(str(run))
    # rewriting the manifest's entries to match the planted files does not help without the key
    doc = json.loads((run / SIGNATURE_FILE).read_text())
    doc["files"]["tuner.pkl"] = "0" * 64
    (run / SIGNATURE_FILE).write_text(json.dumps(doc))
    with pytest.raises(XmwInputError, match="not signed with this installation's key"):
        verify_run(str(run))


def test_key_comes_from_xmw_run_key_then_the_ray_token_then_a_private_user_key(tmp_path, monkeypatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    user_key = tmp_path / ".config" / "xmw_ray" / "run.key"
    first = run_key()  # no variable, no Ray token: a per-user key, created private
    assert user_key.is_file() and stat.S_IMODE(user_key.stat().st_mode) == 0o600
    assert len(user_key.read_text().strip()) == 64 and run_key() == first  # created once, then reused
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("ray-token\n")
    from_token_file = run_key()
    assert from_token_file != first
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-token")
    assert run_key() == from_token_file  # the same token, however Ray is given it
    monkeypatch.setenv("XMW_RUN_KEY", "explicit")
    assert run_key() not in (first, from_token_file)
    assert run_key() != b"explicit"  # a derived key, never the raw secret


def test_signature_on_s3_is_checked_through_the_run_storage_filesystem(key, s3_env):  # noqa: F811
    import s3fs

    fs = s3fs.S3FileSystem()
    url = f"s3://{BUCKET}/trust/search"
    fs.pipe({f"{BUCKET}/trust/search/tuner.pkl": pickle.dumps({"state": 1}),
             f"{BUCKET}/trust/search/trial_a/error.pkl": pickle.dumps("boom")})
    assert sign_run(url) == 2
    verify_run(url)
    fs.pipe({f"{BUCKET}/trust/search/tuner.pkl": pickle.dumps({"state": "planted"})})
    with pytest.raises(XmwInputError, match=rf"^{url}/tuner.pkl: changed"):
        verify_run(url)


def test_cli_refuses_to_resume_a_planted_search_without_unpickling_it(key, ray_session, tmp_path, capsys):
    """A planted ``tuner.pkl`` under the run name: one line, exit 2, and the planted code never ran."""
    from train_world import make_emission_store

    from xmw_ray.cli import main

    store = make_emission_store(tmp_path / "world")  # a store that is there: the stores are checked first
    run = tmp_path / "tune-smoke"
    run.mkdir()
    marker = tmp_path / "planted-code-ran"
    (run / "tuner.pkl").write_bytes(pickle.dumps(Planted(marker)))
    rc = main(["tune", "--config", str(REPO / "configs/tune/smoke.yaml"), "--set", f"data.store={store}",
               "--set", f"run.output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert not marker.exists()
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"xmw: error: {run}/{SIGNATURE_FILE}: missing") and "refusing to resume" in err
    assert sorted(os.listdir(run)) == ["tuner.pkl"]  # nothing written, nothing signed



LISTENERS = """
import json, os, socket, time
from pathlib import Path
from xmw_ray.train.runner import ensure_ray

ensure_ray()
time.sleep(4)  # the agents and the first workers open their ports after ray.init returns
parent = {int(p.name): int(p.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
          for p in Path("/proc").iterdir() if p.name.isdigit() and p.joinpath("stat").exists()}
ours, grew = {os.getpid()}, True
while grew:
    new = {pid for pid, ppid in parent.items() if ppid in ours} - ours
    ours |= new
    grew = bool(new)
owner = {}
for pid in ours:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            link = os.readlink(fd)
            if link.startswith("socket:["):
                owner[link[8:-1]] = name
    except OSError:
        continue
seen = set()
for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
    for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] != "0A" or f[9] not in owner:  # 0A: LISTEN
            continue
        raw, port = f[1].split(":")
        b = bytes.fromhex(raw)
        b = b"".join(b[i:i + 4][::-1] for i in range(0, len(b), 4))  # /proc holds 32-bit words host-order
        seen.add((owner[f[9]], socket.inet_ntop(family, b), int(port, 16)))
print(json.dumps(sorted(seen)))
"""


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc")
def test_local_ray_instance_listens_on_loopback_only():
    """A local instance has no token authentication: none of its ports may be reachable from other hosts."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update(PYTHONPATH=str(REPO), XMW_NUM_CPUS="1")
    out = subprocess.run([sys.executable, "-c", LISTENERS], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    listeners = json.loads(out.stdout.strip().splitlines()[-1])
    names = {name for name, _, _ in listeners}
    assert {"gcs_server", "raylet"} <= names  # Ray's own servers were seen
    wide = [(name, ip, port) for name, ip, port in listeners if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not wide, f"listening beyond loopback: {wide}"


RESIGN_ON_A_FULL_DISK = """
import resource, signal, sys
from xmw_ray.tune.trust import sign_run
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    sign_run(sys.argv[1])
except OSError as exc:
    print("failed:", exc.errno)
"""


def test_a_signature_that_cannot_be_written_whole_leaves_the_old_one(key, tmp_path):
    """Re-signing on a full disk (the search's checkpoints fill it) must not truncate the signature in place: a
    truncated one would make the next launch refuse to resume the whole search."""
    import subprocess
    import sys

    run = tmp_path / "search"
    write_search_files(run)
    sign_run(str(run))
    old = (run / SIGNATURE_FILE).read_bytes()
    for i in range(40):  # Tune saved more trials since: the new signature is larger than the old one
        (run / f"trial_{i:02d}").mkdir()
        (run / f"trial_{i:02d}" / "params.pkl").write_bytes(pickle.dumps({"lr": i}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", RESIGN_ON_A_FULL_DISK, str(run), str(len(old) + 100)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "failed: 27", out.stdout + out.stderr[-2000:]  # EFBIG
    assert (run / SIGNATURE_FILE).read_bytes() == old
    assert sorted(p.name for p in run.iterdir() if p.is_file()) == sorted(
        [SIGNATURE_FILE, "tuner.pkl", "experiment_state-2026.json", "searcher-state-2026.pkl", "leaderboard.csv"])

def test_run_signer_re_signs_during_the_search_at_its_interval(key, tmp_path):
    """Signed while Tune runs, a search killed outright can still be resumed; a later change is refused."""
    from xmw_ray.tune.trust import RunSigner

    run = tmp_path / "search"
    write_search_files(run)
    signer = RunSigner(str(run), interval_s=3600)
    signer.setup()
    signer.on_step_end(iteration=1, trials=[])
    assert not (run / SIGNATURE_FILE).exists()  # not yet: once per interval
    signer.interval_s = 0
    signer.on_step_end(iteration=2, trials=[])
    verify_run(str(run))
    (run / "experiment_state-2027.json").write_text("{}")  # Tune saved again: signed at the next interval
    with pytest.raises(XmwInputError, match="experiment_state-2027.json: not covered"):
        verify_run(str(run))
    signer.on_step_end(iteration=3, trials=[])
    verify_run(str(run))


def test_a_kill_while_the_user_key_is_written_leaves_no_empty_key(tmp_path, monkeypatch):
    """The per-user key appears whole or not at all: a process killed while writing it (here: once the file is
    open) left an empty key file, and every later ``xmw tune`` was refused ("the run signing key is empty")."""
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".config" / "xmw_ray"

    def killed(fd, *_args, **_kwargs):
        os.close(fd)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "fdopen", killed)
        with pytest.raises(KeyboardInterrupt):
            run_key()
    assert list(folder.iterdir()) == []  # neither the key nor its aside
    first = run_key()
    assert len((folder / "run.key").read_text().strip()) == 64 and run_key() == first
    assert [p.name for p in folder.iterdir()] == ["run.key"]


def test_a_failed_trials_error_is_read_back_as_text_never_unpickled(ray_session, tmp_path):
    """Tune writes a failed trial's exception as ``error.txt`` and ``error.pkl``, and building the result grid at the
    end of every search unpickled ``error.pkl`` from run storage (no signature checked then): with
    ``PlainTextErrors`` the trial's metadata no longer names the pickle, so the text is read instead."""
    from ray import tune

    from xmw_ray.tune.trust import PlainTextErrors

    def failing_trial(config: dict) -> None:  # nested: shipped to the worker by value
        raise ValueError("trial broke")

    tuner = tune.Tuner(failing_trial, run_config=tune.RunConfig(
        name="broken", storage_path=str(tmp_path), callbacks=[PlainTextErrors()], verbose=0))
    grid = tuner.fit()
    assert len(grid) == 1 and grid.errors
    error = grid[0].error
    assert isinstance(error, str) and "trial broke" in error  # the text file's content, not an unpickled exception
    assert list((tmp_path / "broken").rglob("error.pkl"))  # Tune still writes it; nothing reads it
    state = json.loads(max((tmp_path / "broken").glob("experiment_state-*.json")).read_text())
    assert '"pickled_error_filename": null' in json.dumps(state).replace('\\"', '"')


def test_no_trial_leaves_the_search_naming_a_pickled_error():
    """Whatever path a failure took, no trial names ``error.pkl`` when the search ends (the result grid is built
    right after), and the state Tune saves says so too."""
    from types import SimpleNamespace

    from ray.tune.trainable.metadata import _TrainingRunMetadata

    from xmw_ray.tune.trust import PlainTextErrors

    trials = [SimpleNamespace(run_metadata=_TrainingRunMetadata()) for _ in range(2)]
    for trial in trials:
        trial.run_metadata.pickled_error_filename = "error.pkl"
    PlainTextErrors().on_experiment_end(trials=trials)
    assert [t.run_metadata.pickled_error_filename for t in trials] == [None, None]
    assert '"pickled_error_filename": null' in trials[0].run_metadata.get_json_state()  # the saved state too
