"""Shared by the object-storage tests (S3 on moto, GCS on an emulator, both on loopback): the environment switch,
the worlds prepared both locally and to a bucket, and the checks that what landed in the bucket (a store, a
training run, flux maps) equals its local twin. A check takes the bucket's fsspec filesystem; URLs carry the
scheme (``s3://bucket/…``), fsspec keys do not (``bucket/…``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders import write_tiny_fluxnet
from train_world import YEARS, make_grid_store

from xmw_ray.cli import main
from xmw_ray.data import schema
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.layout import WETLAND_EXTENT_FILE
from xmw_ray.data.site_store import SiteStore, prepare_sites
from xmw_ray.errors import XmwInputError

CONTENT_ARRAYS = ("dynamic", "target", "static", "annual", "cell_ilat", "cell_ilon", "cell_area", "land_mask",
                  "wetland_fraction")
SESSION_RAY_ARGS = {"num_cpus": 4, "num_gpus": 0, "include_dashboard": True, "log_to_driver": False,
                    "object_store_memory": 512 * 1024 * 1024}  # as tests/conftest.py's ray_session
TOWERS = {"XX-Aaa": (50.0, 10.0), "XX-Bbb": (60.0, 20.0)}


@contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in this process meanwhile; restore the previous values (or their absence) afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def restart_ray_with_env(ray: Any, env: dict[str, str]) -> Any:
    """The session's Ray instance, restarted so that its workers see ``env`` (workers take the environment of the
    process that started Ray, which ran before the endpoint existed)."""
    ray.shutdown()
    ray.init(runtime_env={"env_vars": env}, **SESSION_RAY_ARGS)
    return ray


def key_of(url: str) -> str:
    """The fsspec key of a URL: ``s3://bucket/a`` -> ``bucket/a``."""
    return url.split("://", 1)[1]


def _no_local_folder_named_after(url: str, root: Path) -> bool:
    scheme = url.split("://", 1)[0]
    return not any(f"{scheme}:" in str(p) for p in root.rglob("*"))


def prepare_grid_world(root: Path, url: str) -> dict:
    """The learnable training world prepared twice from the same TEM-MDM files: locally and straight to ``url``."""
    local = make_grid_store(root)  # the TEM-MDM files and their wetland extent
    extent = root / WETLAND_EXTENT_FILE
    prepare_grid(root / "src", local, cells_per_chunk=16, wetland_area=extent)  # the same extent path as the URL's
    summary = prepare_grid(root / "src", url, cells_per_chunk=16, wetland_area=extent)
    return {"local": local, "url": url, "summary": summary, "root": root, "extent": extent}


def prepare_site_world(root: Path, url: str) -> dict:
    """Two towers' FLUXNET-CH4 files prepared twice: locally, and through ``xmw prepare sites --out <url>``."""
    write_tiny_fluxnet(root / "flux", TOWERS)
    prepare_sites(root / "flux", root / "sites")
    assert main(["prepare", "sites", "--src", str(root / "flux"), "--out", url]) == 0
    return {"local": root / "sites", "url": url, "src": root / "flux", "root": root}


def assert_same_samples(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b) == {schema.DYNAMIC, schema.STATIC, schema.TARGET, schema.ENTITY, schema.YEAR}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def sorted_samples(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    joined = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.lexsort((joined[schema.YEAR], joined[schema.ENTITY]))
    return {k: v[order] for k, v in joined.items()}


def check_grid_store_equals_local(stores: dict, fs: Any) -> None:
    local, remote = GridStore.open(stores["local"]), GridStore.open(stores["url"])
    assert stores["summary"]["cells"] == local.n_cells == remote.n_cells > 0
    assert remote.attrs == local.attrs and remote.attrs["complete"] is True
    for name in CONTENT_ARRAYS:
        np.testing.assert_array_equal(remote.root[name][:], local.root[name][:], err_msg=name)
    assert _no_local_folder_named_after(stores["url"], stores["root"])
    # sharded: a year of the dynamic array is a few large objects, not one per chunk
    shards = [k for k in fs.find(f"{key_of(stores['url'])}/dynamic") if "/c/" in k]
    assert 0 < len(shards) < local.n_chunks * len(local.years)


def check_site_store_equals_local(site_stores: dict, fs: Any, capsys: Any) -> None:
    local, remote = SiteStore.open(site_stores["local"]), SiteStore.open(site_stores["url"])
    assert remote.meta == local.meta and remote.sites == tuple(TOWERS)
    assert remote.table().schema == local.table().schema
    for name in ("site", "year", "lat", "lon", "n_target_days"):  # the list columns are compared as samples
        assert remote.table().column(name).equals(local.table().column(name)), name
    assert_same_samples(remote.samples(), local.samples())
    key = key_of(site_stores["url"])
    keys = sorted(k.split(f"{key}/", 1)[1] for k in fs.find(key))
    assert keys == ["_common_metadata", *(f"site={s}/part-0.parquet" for s in sorted(TOWERS))]
    assert _no_local_folder_named_after(site_stores["url"], site_stores["root"])
    capsys.readouterr()
    assert main(["inspect", site_stores["url"]]) == 0
    assert capsys.readouterr().out.startswith(f"Site store {site_stores['url']}\ntarget: FCH4; sites: 2; samples: 4")


def check_ray_data_reads_site_store(site_stores: dict) -> None:
    from xmw_ray.data.ray_datasets import sample_dataset, store_info

    info = store_info(site_stores["url"])
    assert info.kind == "sites" and info.entities == list(TOWERS)
    batches = list(sample_dataset(info, None, "all").iter_batches(batch_size=None, batch_format="numpy"))
    assert_same_samples(sorted_samples(batches), SiteStore.open(site_stores["local"]).samples())


def check_training_keeps_run_storage(stores: dict, runs_url: str, name: str, fs: Any, cache: Path) -> None:
    """Train 2 epochs (one Ray Train worker) reading the store at its URL with run storage at ``runs_url``: Ray's
    checkpoints, the best checkpoint, the history and the training-split statistics all land in the bucket."""
    from test_train import make_cfg

    from xmw_ray.models.checkpoint import load_checkpoint_model
    from xmw_ray.train.runner import run_training

    with environ({"XMW_CACHE_DIR": str(cache)}):
        out = run_training(make_cfg(stores["url"], runs_url, name, resources__num_workers=1, optim__epochs=2))
    assert [h["epoch"] for h in out.history] == [0, 1]
    run_root = f"{key_of(runs_url)}/{name}"
    # Ray's own checkpoints went to run storage (keep_checkpoints=2: both epochs), each self-contained
    ray_ckpts = sorted(k.rsplit("/", 1)[1] for k in fs.ls(run_root, detail=False)
                       if k.rsplit("/", 1)[1].startswith("checkpoint_") and not k.endswith(".json"))
    assert len(ray_ckpts) == 2
    for ck in ray_ckpts:
        assert fs.exists(f"{run_root}/{ck}/model.pt") and fs.exists(f"{run_root}/{ck}/train_state.pt")
    # the best checkpoint and the history are published beside them
    assert json.loads(fs.cat_file(f"{run_root}/history.json")) == out.history
    assert fs.cat_file(f"{run_root}/best/model.pt") == (out.best_checkpoint / "model.pt").read_bytes()
    # training-split statistics were cached in the store in the bucket
    assert fs.find(f"{key_of(stores['url'])}/normstats")
    # the local copy lives under the cache folder, and loads
    assert str(out.best_checkpoint).startswith(str(cache))
    assert load_checkpoint_model(out.best_checkpoint).n_dynamic == 5


def check_inference_equals_local_and_resumes(stores: dict, bucket_url: str, fs: Any, tmp_path: Path) -> None:
    """Infer two years from the store at its URL with a checkpoint in the bucket, to flux maps in the bucket: they
    equal the maps of the same run done locally; a rerun computes nothing, and only a year whose commit marker is
    gone is computed again."""
    import torch
    import xarray as xr

    from xmw_ray.data.grid_store import GridStore
    from xmw_ray.infer.run import run_inference
    from xmw_ray.models import build_model
    from xmw_ray.models.checkpoint import write_checkpoint

    torch.manual_seed(0)
    norm = {"dynamic": {"mean": [10.0, 175.0, 0.0, 15.5, 30.0], "std": [6.0, 100.0, 17.0, 8.0, 17.0]},
            "static": {"mean": [5.0] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
            "target": {"mean": 40.0, "std": 10.0}}
    model = build_model("lstm", 5, 10, norm=norm, hidden_size=4, num_layers=1, dropout=0.0).eval()
    model.features = GridStore.open(stores["local"]).features  # what training on this grid records
    write_checkpoint(tmp_path / "ckpt", model, {"model": {"name": "lstm"}}, {})
    bucket = key_of(bucket_url)
    fs.put_file(str(tmp_path / "ckpt" / "model.pt"), f"{bucket}/runs/demo/best/model.pt")
    ckpt_url = f"{bucket_url}/runs/demo/best"  # where run storage in a bucket publishes a run's best checkpoint
    years = (YEARS[-2], YEARS[-1])
    maps_url = f"{bucket_url}/maps/flux.zarr"
    maps_key = key_of(maps_url)
    with pytest.raises(XmwInputError, match="model.pt missing"):
        run_inference(f"{bucket_url}/runs/none", stores["url"], maps_url, years, actors=1)
    remote = run_inference(ckpt_url, stores["url"], maps_url, years, actors=1)
    local = run_inference(tmp_path / "ckpt", stores["local"], tmp_path / "maps_local.zarr", years, actors=1)
    assert remote.cells == GridStore.open(stores["url"]).n_cells and remote.computed == list(years)
    assert remote.budget == local.budget
    assert _no_local_folder_named_after(maps_url, tmp_path)
    assert fs.cat_file(f"{maps_key}/budget.csv") == (tmp_path / "maps_local.zarr" / "budget.csv").read_bytes()
    assert fs.exists(f"{maps_key}/plots/annual_mean_{years[0]}.png")

    def maps_equal_local() -> None:
        there = xr.open_zarr(maps_url)
        here = xr.open_zarr(tmp_path / "maps_local.zarr")
        assert there.attrs["complete"] == 1 and np.isfinite(there["ch4_flux"].values).sum() == remote.cells * 730
        for name in ("ch4_flux", "ch4_flux_monthly", "ch4_flux_annual", "wetland_area"):
            np.testing.assert_array_equal(there[name].values, here[name].values, err_msg=name)

    maps_equal_local()
    # a rerun computes nothing; once a year's commit marker is gone (a crash before the commit), only that year
    assert run_inference(ckpt_url, stores["url"], maps_url, years, actors=1).computed == []
    fs.rm_file(f"{maps_key}/_done/{years[1]}.json")
    redone = run_inference(ckpt_url, stores["url"], maps_url, years, actors=1)
    assert redone.computed == [years[1]] and redone.budget == local.budget
    maps_equal_local()
