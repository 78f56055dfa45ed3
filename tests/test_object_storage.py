"""Object storage: a Grid store prepared straight to S3 equals the local one; training reads it from S3 and keeps
its run storage (Ray checkpoints, best checkpoint, history, normalisation statistics) on S3; inference reads the
Grid store from S3. The S3 endpoint is a real one (moto in server mode on loopback), reached only through the
standard ``AWS_*`` variables that s3fs, zarr and pyarrow (Ray's run storage) honour."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from train_world import YEARS, make_grid_store

from xmw_ray.data.grid_store import GridStore, prepare_grid

BUCKET = "xmw-test"
CONTENT_ARRAYS = ("dynamic", "target", "static", "annual", "cell_ilat", "cell_ilon", "cell_area", "wetland_fraction")
SESSION_RAY_ARGS = {"num_cpus": 4, "num_gpus": 0, "include_dashboard": True, "log_to_driver": False,
                    "object_store_memory": 512 * 1024 * 1024}  # as tests/conftest.py's ray_session


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on a free loopback port with one bucket; the AWS_* variables point at it meanwhile."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def ray_s3(ray_session, s3_env):
    """The session's Ray instance, restarted if needed so that its workers see the endpoint (workers take the
    environment of the process that started Ray, which ran before the endpoint existed)."""
    ray = ray_session
    ray.shutdown()
    ray.init(runtime_env={"env_vars": s3_env}, **SESSION_RAY_ARGS)
    yield ray


@pytest.fixture(scope="module")
def stores(s3_env, tmp_path_factory) -> dict:
    """The learnable training world prepared twice from the same TEM-MDM files: locally and straight to S3."""
    root = tmp_path_factory.mktemp("s3_world")
    local = make_grid_store(root)
    url = f"s3://{BUCKET}/prepared/grid.zarr"
    summary = prepare_grid(root / "src", url, cells_per_chunk=16)
    return {"local": local, "url": url, "summary": summary, "root": root}


def _s3():
    import s3fs

    return s3fs.S3FileSystem()


def test_prepare_grid_to_s3_equals_local_store(stores):
    local, remote = GridStore.open(stores["local"]), GridStore.open(stores["url"])
    assert stores["summary"]["cells"] == local.n_cells == remote.n_cells > 0
    assert remote.attrs == local.attrs and remote.attrs["complete"] is True
    for name in CONTENT_ARRAYS:
        np.testing.assert_array_equal(remote.root[name][:], local.root[name][:], err_msg=name)
    # nothing was written to a local folder named after the URL
    assert not any("s3:" in str(p) for p in stores["root"].rglob("*"))
    # sharded: a year of the dynamic array is a few large objects, not one per chunk
    shards = [k for k in _s3().find(f"{BUCKET}/prepared/grid.zarr/dynamic") if "/c/" in k]
    assert 0 < len(shards) < local.n_chunks * len(local.years)


@pytest.mark.slow
def test_train_reads_s3_and_keeps_run_storage_on_s3(ray_s3, stores, tmp_path, monkeypatch):
    from test_train import make_cfg

    from xmw_ray.train.checkpoint import load_checkpoint_model
    from xmw_ray.train.runner import run_training

    monkeypatch.setenv("XMW_CACHE_DIR", str(tmp_path / "cache"))
    runs = f"s3://{BUCKET}/runs"
    cfg = make_cfg(stores["url"], runs, "s3run", resources__num_workers=1, optim__epochs=2)
    out = run_training(cfg)
    assert [h["epoch"] for h in out.history] == [0, 1]
    s3 = _s3()
    run_root = f"{BUCKET}/runs/s3run"
    # Ray's own checkpoints went to run storage on S3 (keep_checkpoints=2: both epochs), each self-contained
    ray_ckpts = sorted(k.rsplit("/", 1)[1] for k in s3.ls(run_root, detail=False)
                       if k.rsplit("/", 1)[1].startswith("checkpoint_") and not k.endswith(".json"))
    assert len(ray_ckpts) == 2
    for ck in ray_ckpts:
        assert s3.exists(f"{run_root}/{ck}/model.pt") and s3.exists(f"{run_root}/{ck}/train_state.pt")
    # the best checkpoint and the history are published beside them
    assert json.loads(s3.cat_file(f"{run_root}/history.json")) == out.history
    assert s3.cat_file(f"{run_root}/best/model.pt") == (out.best_checkpoint / "model.pt").read_bytes()
    # training-split statistics were cached in the store on S3
    assert s3.find(f"{BUCKET}/prepared/grid.zarr/normstats")
    # the local copy lives under the cache folder, and loads
    assert str(out.best_checkpoint).startswith(str(tmp_path / "cache"))
    assert load_checkpoint_model(out.best_checkpoint).n_dynamic == 5


@pytest.mark.slow
def test_infer_reads_grid_store_from_s3(ray_s3, stores, tmp_path):
    import torch

    from xmw_ray.infer.run import run_inference
    from xmw_ray.models import build_model
    from xmw_ray.train.checkpoint import write_checkpoint

    torch.manual_seed(0)
    norm = {"dynamic": {"mean": [10.0, 175.0, 0.0, 15.5, 30.0], "std": [6.0, 100.0, 17.0, 8.0, 17.0]},
            "static": {"mean": [5.0] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
            "target": {"mean": 40.0, "std": 10.0}}
    model = build_model("lstm", 5, 10, norm=norm, hidden_size=4, num_layers=1, dropout=0.0).eval()
    write_checkpoint(tmp_path / "ckpt", model, {"model": {"name": "lstm"}}, {})
    year = (YEARS[-1], YEARS[-1])
    from_s3 = run_inference(tmp_path / "ckpt", stores["url"], tmp_path / "maps_s3.zarr", year, actors=1)
    from_local = run_inference(tmp_path / "ckpt", stores["local"], tmp_path / "maps_local.zarr", year, actors=1)
    assert from_s3.cells == GridStore.open(stores["url"]).n_cells and from_s3.computed == [YEARS[-1]]
    assert from_s3.budget == from_local.budget
    import xarray as xr

    a = xr.open_zarr(tmp_path / "maps_s3.zarr")["ch4_flux"].values
    b = xr.open_zarr(tmp_path / "maps_local.zarr")["ch4_flux"].values
    assert np.isfinite(a).sum() == from_s3.cells * 365
    np.testing.assert_array_equal(a, b)
