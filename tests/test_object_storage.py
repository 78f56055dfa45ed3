"""Object storage: a Grid store and a Site store prepared straight to S3 equal the local ones (and Ray Data reads
the Site store from S3); training reads the Grid store from S3 and keeps its run storage (Ray checkpoints, best
checkpoint, history, normalisation statistics) on S3; inference reads the Grid store from S3 and writes its flux
maps to S3, resuming year by year there. The S3 endpoint is a real one (moto in server mode on loopback), reached
only through the standard ``AWS_*`` variables that s3fs, zarr and pyarrow (Ray's run storage, Parquet) honour."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from builders import write_tiny_fluxnet
from train_world import YEARS, make_grid_store

from xmw_ray.cli import main
from xmw_ray.data import schema
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.site_store import SiteStore, prepare_sites
from xmw_ray.errors import XmwInputError

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


TOWERS = {"XX-Aaa": (50.0, 10.0), "XX-Bbb": (60.0, 20.0)}


@pytest.fixture(scope="module")
def site_stores(s3_env, tmp_path_factory) -> dict:
    """Two towers' FLUXNET-CH4 files prepared twice: locally, and through ``xmw prepare sites --out s3://…``."""
    root = tmp_path_factory.mktemp("s3_sites")
    write_tiny_fluxnet(root / "flux", TOWERS)
    prepare_sites(root / "flux", root / "sites")
    url = f"s3://{BUCKET}/prepared/sites"
    assert main(["prepare", "sites", "--src", str(root / "flux"), "--out", url]) == 0
    return {"local": root / "sites", "url": url, "src": root / "flux", "root": root}


def _assert_same_samples(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b) == {schema.DYNAMIC, schema.STATIC, schema.TARGET, schema.ENTITY, schema.YEAR}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _sorted_samples(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    joined = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.lexsort((joined[schema.YEAR], joined[schema.ENTITY]))
    return {k: v[order] for k, v in joined.items()}


def test_prepare_sites_to_s3_equals_local_store(site_stores, capsys):
    local, remote = SiteStore.open(site_stores["local"]), SiteStore.open(site_stores["url"])
    assert remote.meta == local.meta and remote.sites == tuple(TOWERS)
    assert remote.table().schema == local.table().schema
    for name in ("site", "year", "lat", "lon", "n_target_days"):  # the list columns are compared as samples
        assert remote.table().column(name).equals(local.table().column(name)), name
    _assert_same_samples(remote.samples(), local.samples())
    keys = sorted(k.split("prepared/sites/", 1)[1] for k in _s3().find(f"{BUCKET}/prepared/sites"))
    assert keys == ["_common_metadata", *(f"site={s}/part-0.parquet" for s in sorted(TOWERS))]
    assert not any("s3:" in str(p) for p in site_stores["root"].rglob("*"))
    capsys.readouterr()
    assert main(["inspect", site_stores["url"]]) == 0
    assert capsys.readouterr().out.startswith(f"Site store {site_stores['url']}\ntarget: FCH4; sites: 2; samples: 4")


def test_site_store_on_s3_is_replaced_whole_and_never_read_half_written(site_stores, tmp_path, monkeypatch):
    """A failed preparation keeps the previous store; an upload cut before its commit object leaves a store that
    readers refuse; the next run replaces it, deleting partitions the new store does not have."""
    url, s3 = f"s3://{BUCKET}/rewritten/sites", _s3()
    assert main(["prepare", "sites", "--src", str(site_stores["src"]), "--out", url]) == 0
    before = sorted(s3.find(f"{BUCKET}/rewritten/sites"))
    bad = tmp_path / "bad"
    write_tiny_fluxnet(bad, {"XX-Aaa": TOWERS["XX-Aaa"]})
    next(bad.glob("FLX_XX-Aaa_*.csv")).write_text("TIMESTAMP,FCH4\n20150101,x\n")
    assert main(["prepare", "sites", "--src", str(bad), "--out", url]) == 2
    s3.invalidate_cache()
    assert sorted(s3.find(f"{BUCKET}/rewritten/sites")) == before
    assert SiteStore.open(url).sites == tuple(TOWERS)

    one = tmp_path / "one"
    write_tiny_fluxnet(one, {"XX-Ccc": (55.0, 15.0)}, seed=3)
    real_put = s3.put_file

    def cut_before_commit(lpath, rpath, *args, **kwargs):
        if rpath.endswith("_common_metadata"):
            raise ConnectionError("connection lost")
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3, "put_file", cut_before_commit)  # s3fs instances are cached: the writer gets this one
    with pytest.raises(ConnectionError):
        prepare_sites(one, url)
    monkeypatch.undo()
    with pytest.raises(XmwInputError, match="did not finish"):
        SiteStore.open(url)

    prepare_sites(one, url)
    s3.invalidate_cache()
    assert SiteStore.open(url).sites == ("XX-Ccc",)
    assert not [k for k in s3.find(f"{BUCKET}/rewritten/sites") if "site=XX-Aaa" in k]
    prepare_sites(one, tmp_path / "local_one")
    _assert_same_samples(SiteStore.open(url).samples(), SiteStore.open(tmp_path / "local_one").samples())


def test_site_store_refuses_to_overwrite_foreign_objects(s3_env, site_stores):
    s3 = _s3()
    s3.pipe_file(f"{BUCKET}/mixed/notes.txt", b"not a Site store object")
    with pytest.raises(XmwInputError, match="notes.txt"):
        prepare_sites(site_stores["src"], f"s3://{BUCKET}/mixed")
    assert s3.cat_file(f"{BUCKET}/mixed/notes.txt") == b"not a Site store object"
    assert not s3.exists(f"{BUCKET}/mixed/_common_metadata")


def test_ray_data_reads_site_store_from_s3(ray_s3, site_stores):
    from xmw_ray.data.ray_datasets import sample_dataset, store_info

    info = store_info(site_stores["url"])
    assert info.kind == "sites" and info.entities == list(TOWERS)
    batches = list(sample_dataset(info, None, "all").iter_batches(batch_size=None, batch_format="numpy"))
    _assert_same_samples(_sorted_samples(batches), SiteStore.open(site_stores["local"]).samples())


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
def test_infer_from_s3_to_s3_equals_local_and_resumes_there(ray_s3, stores, tmp_path):
    import torch
    import xarray as xr

    from xmw_ray.infer.run import run_inference
    from xmw_ray.models import build_model
    from xmw_ray.train.checkpoint import write_checkpoint

    torch.manual_seed(0)
    norm = {"dynamic": {"mean": [10.0, 175.0, 0.0, 15.5, 30.0], "std": [6.0, 100.0, 17.0, 8.0, 17.0]},
            "static": {"mean": [5.0] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
            "target": {"mean": 40.0, "std": 10.0}}
    model = build_model("lstm", 5, 10, norm=norm, hidden_size=4, num_layers=1, dropout=0.0).eval()
    write_checkpoint(tmp_path / "ckpt", model, {"model": {"name": "lstm"}}, {})
    s3 = _s3()
    s3.put_file(str(tmp_path / "ckpt" / "model.pt"), f"{BUCKET}/runs/demo/best/model.pt")
    ckpt_url = f"s3://{BUCKET}/runs/demo/best"  # where run storage on S3 publishes a run's best checkpoint
    years = (YEARS[-2], YEARS[-1])
    maps_url, maps_key = f"s3://{BUCKET}/maps/flux.zarr", f"{BUCKET}/maps/flux.zarr"
    with pytest.raises(XmwInputError, match="model.pt missing"):
        run_inference(f"s3://{BUCKET}/runs/none", stores["url"], maps_url, years, actors=1)
    to_s3 = run_inference(ckpt_url, stores["url"], maps_url, years, actors=1)
    local = run_inference(tmp_path / "ckpt", stores["local"], tmp_path / "maps_local.zarr", years, actors=1)
    assert to_s3.cells == GridStore.open(stores["url"]).n_cells and to_s3.computed == list(years)
    assert to_s3.budget == local.budget
    assert not any("s3:" in str(p) for p in tmp_path.rglob("*"))
    assert s3.cat_file(f"{maps_key}/budget.csv") == (tmp_path / "maps_local.zarr" / "budget.csv").read_bytes()
    assert s3.exists(f"{maps_key}/plots/annual_mean_{years[0]}.png")

    def maps_equal_local() -> None:
        remote = xr.open_zarr(maps_url)
        here = xr.open_zarr(tmp_path / "maps_local.zarr")
        assert remote.attrs["complete"] is True and np.isfinite(remote["ch4_flux"].values).sum() == to_s3.cells * 730
        for name in ("ch4_flux", "ch4_flux_monthly", "ch4_flux_annual", "wetland_area"):
            np.testing.assert_array_equal(remote[name].values, here[name].values, err_msg=name)

    maps_equal_local()
    # a rerun computes nothing; once a year's commit marker is gone (a crash before the commit), only that year
    assert run_inference(ckpt_url, stores["url"], maps_url, years, actors=1).computed == []
    s3.rm_file(f"{maps_key}/_done/{years[1]}.json")
    redone = run_inference(ckpt_url, stores["url"], maps_url, years, actors=1)
    assert redone.computed == [years[1]] and redone.budget == local.budget
    maps_equal_local()


def test_flux_map_store_on_s3_is_created_whole(s3_env, monkeypatch):
    """An empty flux-map store is uploaded with its root ``zarr.json`` last: a creation cut before it is replaced by
    the next run, which then writes and commits a year; objects that are not the store's are never deleted."""
    from xmw_ray.data.contract import grid_shape
    from xmw_ray.infer.maps import FluxMaps, MapSpec

    spec = MapSpec(res=10.0, years=(2000, 2001), checkpoint="ckpt", checkpoint_sha256="0" * 64, grid_store="grid",
                   grid_cells=2, model={"name": "lstm"})
    ilat, ilon = np.array([3, 5]), np.array([1, 2])
    area = np.full(grid_shape(spec.res), np.nan)
    url, key = f"s3://{BUCKET}/maps/cut.zarr", f"{BUCKET}/maps/cut.zarr"
    s3 = _s3()
    real_put = s3.put_file

    def cut_before_root(lpath, rpath, *args, **kwargs):
        if rpath == f"{key}/zarr.json":
            raise ConnectionError("connection lost")
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3, "put_file", cut_before_root)  # s3fs instances are cached: the writer gets this one
    with pytest.raises(ConnectionError):
        FluxMaps.open_or_create(url, spec, ilat, ilon, area)
    monkeypatch.undo()
    s3.invalidate_cache()
    assert s3.exists(f"{key}/ch4_flux/zarr.json") and not s3.exists(f"{key}/zarr.json")

    maps = FluxMaps.open_or_create(url, spec, ilat, ilon, area)
    assert maps.years_done() == []
    flux = np.arange(2 * 365, dtype=np.float32).reshape(2, 365)
    maps.write_year(2001, flux)
    maps.commit_year(2001, {"global": 1.0})
    again = FluxMaps.open_or_create(url, spec, ilat, ilon, area)
    assert again.years_done() == [2001] and again.year_budget(2001) == {"global": 1.0}
    np.testing.assert_array_equal(again.annual_mean(2001)[ilat, ilon], flux.mean(axis=1))

    s3.pipe_file(f"{BUCKET}/maps/foreign.zarr/readme.txt", b"mine")
    with pytest.raises(XmwInputError, match="readme.txt"):
        FluxMaps.open_or_create(f"s3://{BUCKET}/maps/foreign.zarr", spec, ilat, ilon, area)
    assert s3.cat_file(f"{BUCKET}/maps/foreign.zarr/readme.txt") == b"mine"
