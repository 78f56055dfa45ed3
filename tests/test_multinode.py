"""Multi-node on one machine: a head node with no CPU for work and a second node that joins it (token auth,
loopback only); a training run submitted from a separate driver runs its worker on the second node, and its
checkpoints, best checkpoint and history arrive in the run storage both nodes share."""

from __future__ import annotations

import json
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

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
#: The training run in the driver: one worker (1 CPU) + Ray Data (1 CPU) need the second node's CPUs.
DRIVER = """
import json, sys
import ray
from ray.util.state import list_actors
sys.path.insert(0, {tests!r})
from test_train import make_cfg
from xmw_ray.train.runner import run_training

ray.init(address={address!r}, log_to_driver=False)
head = ray.get_runtime_context().get_node_id()
out = run_training(make_cfg({store!r}, {runs!r}, "multinode", resources__num_workers=1, optim__epochs=2))
workers = [a.node_id for a in list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True)]
print("RESULT " + json.dumps({{"head": head, "worker_nodes": workers, "best": str(out.best_checkpoint),
                              "epochs": [h["epoch"] for h in out.history],
                              "nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]]}}))
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_ports(ports: list[int]) -> list[str]:
    names = ("--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port")
    return [f"{name}={p}" for name, p in zip(names, ports, strict=True)]


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): tells a process from a later one reusing its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            started = _start_time(c)
            if started is not None:
                out.append((c, started))
            todo.append(c)
    return out


def _stop_nodes(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    """Stop the ``ray start --block`` processes we started and every process they spawned (by pid, never by
    name): SIGTERM to all at once, a short shared grace period, then SIGKILL to whatever outlived it."""
    families = [(p, _descendants(p.pid)) for p in procs]
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace
    for p, _ in families:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
    for _, family in families:
        for pid, started in family:  # still the same process (pids are reused)
            if _start_time(pid) != started:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def two_nodes(tmp_path):
    """Head (0 CPU: it runs only drivers and Ray's own services) + a worker node with 3 CPUs, on loopback."""
    tmpdir = tempfile.mkdtemp(prefix="xmwr", dir="/tmp")  # short: Ray's socket paths live under it
    gcs, dash, client, *ports = _free_ports(15)
    env = {**os.environ, "RAY_TMPDIR": tmpdir, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{gcs}"
    common = ["--block", "--node-ip-address=127.0.0.1", f"--temp-dir={tmpdir}", "--num-gpus=0"]
    procs = []
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", f"--port={gcs}", "--num-cpus=0", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
             *common, *_node_ports(ports[:6])], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for_nodes(env, address, 1)
        procs.append(subprocess.Popen(
            [RAY, "start", f"--address={address}", "--num-cpus=3", "--object-store-memory=200000000",
             *common, *_node_ports(ports[6:12])], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for_nodes(env, address, 2)
        yield {"env": env, "address": address}
    finally:
        _stop_nodes(procs)
        shutil.rmtree(tmpdir, ignore_errors=True)


def _wait_for_nodes(env: dict, address: str, n: int, timeout: float = 150.0) -> None:
    """Until the cluster has ``n`` live nodes. The deadline is generous: with the suite's other Ray tests beside
    it on 2 cores, a clean-clone run saw the second node take over 60 s to join (the test then errored in set-up)."""
    probe = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
             "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        if got.returncode == 0 and got.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1.0)
    raise AssertionError(f"Ray cluster at {address} did not reach {n} node(s): {got.stderr[-1500:]}")


@pytest.mark.slow
def test_training_workers_run_on_second_node_and_share_storage(two_nodes, tmp_path):
    store = make_grid_store(tmp_path / "world")
    runs = tmp_path / "shared_runs"
    script = DRIVER.format(tests=str(REPO / "tests"), address=two_nodes["address"], store=str(store), runs=str(runs))
    env = {**two_nodes["env"], "RAY_ADDRESS": two_nodes["address"]}  # the state API finds this cluster too
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    second = [n for n in result["nodes"] if n != result["head"]]
    assert len(result["nodes"]) == 2 and len(second) == 1
    assert result["worker_nodes"] and set(result["worker_nodes"]) == set(second)  # every worker ran there
    assert result["epochs"] == [0, 1]
    run = runs / "multinode"
    ray_ckpts = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())
    assert len(ray_ckpts) == 2 and all((p / "model.pt").is_file() for p in ray_ckpts)
    assert (run / "best" / "model.pt").is_file() and Path(result["best"]) == run / "best"
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [0, 1]
