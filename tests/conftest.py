"""Shared fixtures: one Ray instance for the whole session, and the location of the shared real data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FLUXNET_DIR = SHARED / "data" / "fluxnet-ch4"
XMW_PRESETS_DIR = SHARED / "data" / "x-methanewet"
# searches sign their run folders (xmw_ray/tune/trust.py): with a key of the suite's own, never a key file in $HOME
os.environ.setdefault("XMW_RUN_KEY", "xmw-test-suite")
# The suite runs two test processes, their Ray workers and fresh `xmw` processes side by side on 2 cores, each with
# torch's OpenMP threads; by default an idle OpenMP thread spins, burning the cores the others wait for. Passive
# waiting (set before torch is first imported, inherited by Ray and every subprocess): the same tests in 12-15 % less
# wall time (test_reproducible, test_train and test_transfer_runs on 2 xdist processes, twice each, alternating:
# 148.7 and 160.2 s against 174.2 and 181.8 s). It changes no number a test checks; a user's runs keep the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The suite's models are tiny and its two test processes already fill both cores: one OpenMP thread per process
# (torch in the test processes, Train's local mode, fresh `xmw` processes) spends less CPU on splitting small
# operations across threads (a local-mode module alone: 24-32 CPU-s against 36-37). Ray's workers set their own
# count from the CPUs they were given (xmw_ray.train.resources.use_assigned_cpus), as in a user's runs.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The suite's own Ray instance (ray_session) is local like the ones ensure_ray starts, which run Train without its
# preemption watcher (xmw_ray/train/runner.py, PREEMPTION_WATCHER_ENV): the same here, a process fewer per run.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules holding a ``slow`` test run first (each module's tests, and the modules' order, otherwise kept):
    ``make test`` hands whole modules to two xdist processes in collection order (``--dist loadfile
    --no-loadscope-reorder``), so the long modules start early and the short ones fill in, instead of a
    one-test module of several minutes starting last and running alone."""
    slow_modules = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_modules)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def fluxnet_dir() -> Path:
    """The real FLUXNET-CH4 site files; tests that need them skip on a fresh clone without ../shared."""
    if not FLUXNET_DIR.is_dir():
        pytest.skip(f"real FLUXNET-CH4 files not found at {FLUXNET_DIR} (../shared is absent in a fresh clone)")
    return FLUXNET_DIR


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance per test session: 4 logical CPUs (fine on 2 cores), no GPU, with the dashboard
    (its state API lets Train/Tune clean up stopped runs)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=4, num_gpus=0, include_dashboard=True, log_to_driver=False,
                 object_store_memory=512 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread is fastest and leaves the shared cores to the rest of the suite."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def transfer_world(tmp_path_factory) -> dict[str, Path]:
    """A small built-in world for transfer runs and searches (read only): its Grid store (the simulations) and its
    towers' Site store prepared with ``--grid``; built once per test run, under a lock, and shared by the xdist
    processes of that run (both use it when its two modules land in different processes)."""
    from filelock import FileLock

    from xmw_ray.data.grid_store import prepare_grid
    from xmw_ray.data.site_store import prepare_sites
    from xmw_ray.sim.world import SimulationSpec, simulate

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this run's folder, above each xdist process's own
    root = base / "transfer_world"
    world = {"grid": root / "grid.zarr", "sites": root / "sites"}
    with FileLock(f"{root}.lock"):
        if not (root / "built").exists():
            shutil.rmtree(root, ignore_errors=True)  # what a process that failed to build it left
            simulate(SimulationSpec(out=root / "world", res=10.0, years=(2000, 2003), sites=12, seed=0),
                     log=lambda m: None)
            prepare_grid(root / "world", world["grid"], cells_per_chunk=64)
            prepare_sites(root / "world" / "FLUXNET-CH4", world["sites"], grid=world["grid"])
            (root / "built").touch()
    return world
