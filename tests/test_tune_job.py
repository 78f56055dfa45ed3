"""The search as a user submits it: a real local Ray cluster (``ray start --head`` on loopback, token
authentication on), ``ray job submit --working-dir . -- python jobs/tune.py --config configs/tune/smoke.yaml``,
then the leaderboard and best checkpoint it leaves. The cluster lives in its own temporary directory and ports,
so it never touches the session's Ray instance; it is always stopped at the end.

Stopping: ``ray stop`` kills EVERY Ray process on the host (other sessions' too), so the test stops exactly the
processes of its own cluster (those whose command line names its temporary directory, and their children).
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from train_world import make_grid_store

from xmw_ray.train.runner import PREEMPTION_WATCHER_ENV

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, read from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(d.name)] = (ppid, cmd)
    return out


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs. An exited process stays in /proc as a zombie until its parent reaps it, and a
    daemon of ``ray start`` has the host's (or container's) PID 1 as parent, which may never reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


#: Seconds the cluster's processes get to exit on SIGTERM before SIGKILL. Its GCS server and autoscaler monitor
#: never exit on SIGTERM alone (measured: still running 15 s later, every time), and the cluster's files are deleted
#: right after, so a long grace buys nothing.
STOP_GRACE_S = 3.0


def stop_cluster(temp_dir: str) -> None:
    """Terminate the processes of the cluster rooted at ``temp_dir`` and their descendants, by pid: SIGTERM, a
    short grace (``STOP_GRACE_S``), then SIGKILL to whatever outlived it."""
    procs = _processes()
    mine = {pid for pid, (_, cmd) in procs.items() if temp_dir in cmd}
    grew = True
    while grew:
        kids = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        grew = bool(kids)
        mine |= kids
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + (STOP_GRACE_S if sig == signal.SIGTERM else 15)
        while time.monotonic() < deadline and any(_running(p) for p in mine):
            time.sleep(0.5)


@pytest.mark.slow
def test_ray_job_submit_smoke_search_with_token_auth(tmp_path):
    store = make_grid_store(tmp_path / "world")
    temp_dir = tempfile.mkdtemp(prefix="xt", dir="/tmp")  # short: Ray's unix sockets live under it
    gcs, dash = free_port(), free_port()
    token = secrets.token_hex(32)
    # a cluster runs Train with Ray's defaults, the preemption watcher on (only local instances turn it off)
    env = {k: v for k, v in os.environ.items() if k != PREEMPTION_WATCHER_ENV}
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_TMPDIR": temp_dir,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           # several Ray instances may share this host: name ours for the state API of its own processes
           "RAY_ADDRESS": f"127.0.0.1:{gcs}", "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dash}"}
    address = f"http://127.0.0.1:{dash}"
    try:
        start = subprocess.run(
            [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--temp-dir={temp_dir}",
             "--num-cpus=4", "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
             "--disable-usage-stats"],
            env=env, capture_output=True, text=True, timeout=180)
        assert start.returncode == 0, start.stderr[-3000:]

        # without the token the cluster refuses the submission
        bad = {**env, "RAY_AUTH_TOKEN": "0" * 64}
        denied = subprocess.run([RAY, "job", "list", "--address", address], env=bad, capture_output=True,
                                text=True, timeout=120)
        assert denied.returncode != 0

        out = tmp_path / "runs"
        sub_id = "xmw-tune-smoke-test"
        # without --no-wait the CLI tails the job's logs over one connection until it ends (exit 1 on failure),
        # instead of a `ray job status` process every few seconds taking CPU from the job on a small machine
        submit = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--submission-id", sub_id,
             "--working-dir", ".", "--", "python", "jobs/tune.py", "--config", "configs/tune/smoke.yaml",
             "--set", f"data.store={store}", "--set", f"run.output_dir={out}", "--set", "search.num_samples=1",
             "--set", "optim.epochs=1"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        logs = submit.stdout + submit.stderr
        assert submit.returncode == 0 and f"'{sub_id}' succeeded" in logs, logs[-4000:]
        search = out / "tune-smoke"
        with open(search / "leaderboard.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 1 and all(r["val_loss"] for r in rows)
        assert rows[0]["test_nse"] != ""
        assert (search / "best" / "model.pt").is_file()
        assert f"best checkpoint: {search / 'best'}" in logs
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
