"""Object storage: a Grid store and a Site store prepared straight to S3 equal the local ones (and Ray Data reads
the Site store from S3); training reads the Grid store from S3 and keeps its run storage (Ray checkpoints, best
checkpoint, history, normalisation statistics) on S3; inference reads the Grid store from S3 and writes its flux
maps to S3, resuming year by year there. The S3 endpoint is a real one (moto in server mode on loopback), reached
only through the standard ``AWS_*`` variables that s3fs, zarr and pyarrow (Ray's run storage, Parquet) honour."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from builders import write_tiny_fluxnet
from object_storage_env import (
    TOWERS,
    assert_same_samples,
    check_grid_store_equals_local,
    check_inference_equals_local_and_resumes,
    check_ray_data_reads_site_store,
    check_site_store_equals_local,
    check_training_keeps_run_storage,
    environ,
    prepare_grid_world,
    prepare_site_world,
    restart_ray_with_env,
)

from xmw_ray.cli import main
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.site_store import SiteStore, prepare_sites
from xmw_ray.errors import XmwInputError

BUCKET = "xmw-test"


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
    try:
        with environ(env):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
            fs = s3fs.S3FileSystem()
            if not fs.exists(BUCKET):  # moto's backend is one per process: a later module's server already has it
                fs.mkdir(BUCKET)
            yield env
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ray_s3(ray_session, s3_env):
    """The session's Ray instance, restarted so that its workers see the endpoint."""
    yield restart_ray_with_env(ray_session, s3_env)


@pytest.fixture(scope="module")
def stores(s3_env, tmp_path_factory) -> dict:
    """The learnable training world prepared twice from the same TEM-MDM files: locally and straight to S3."""
    return prepare_grid_world(tmp_path_factory.mktemp("s3_world"), f"s3://{BUCKET}/prepared/grid.zarr")


def _s3():
    import s3fs

    return s3fs.S3FileSystem()


@pytest.fixture(scope="module")
def site_stores(s3_env, tmp_path_factory) -> dict:
    """Two towers' FLUXNET-CH4 files prepared twice: locally, and through ``xmw prepare sites --out s3://…``."""
    return prepare_site_world(tmp_path_factory.mktemp("s3_sites"), f"s3://{BUCKET}/prepared/sites")


def test_prepare_sites_to_s3_equals_local_store(site_stores, capsys):
    check_site_store_equals_local(site_stores, _s3(), capsys)


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
    assert_same_samples(SiteStore.open(url).samples(), SiteStore.open(tmp_path / "local_one").samples())


def test_site_store_refuses_to_overwrite_foreign_objects(s3_env, site_stores):
    s3 = _s3()
    s3.pipe_file(f"{BUCKET}/mixed/notes.txt", b"not a Site store object")
    with pytest.raises(XmwInputError, match="notes.txt"):
        prepare_sites(site_stores["src"], f"s3://{BUCKET}/mixed")
    assert s3.cat_file(f"{BUCKET}/mixed/notes.txt") == b"not a Site store object"
    assert not s3.exists(f"{BUCKET}/mixed/_common_metadata")


def test_ray_data_reads_site_store_from_s3(ray_s3, site_stores):
    check_ray_data_reads_site_store(site_stores)


def test_prepare_grid_to_s3_equals_local_store(stores):
    check_grid_store_equals_local(stores, _s3())


def test_grid_store_on_s3_is_replaced_in_place_but_never_over_foreign_objects(stores):
    s3 = _s3()
    src, url = stores["root"] / "src", stores["url"]
    again = prepare_grid(src, url, cells_per_chunk=16, wetland_area=stores["extent"])  # a store already there is replaced
    assert again == stores["summary"] and GridStore.open(url).n_cells == again["cells"]
    s3.pipe_file(f"{BUCKET}/shared/results.csv", b"someone else's data")
    with pytest.raises(XmwInputError, match="results.csv"):
        prepare_grid(src, f"s3://{BUCKET}/shared", cells_per_chunk=16)
    assert s3.cat_file(f"{BUCKET}/shared/results.csv") == b"someone else's data"
    assert not s3.exists(f"{BUCKET}/shared/zarr.json")


def test_a_grid_store_that_fails_on_s3_leaves_no_objects(stores):
    """Object stores have no rename: a preparation that fails midway (here: the static maps written, then the first
    year fails) removes what it wrote, rather than leaving a partial store that readers refuse and the bucket keeps."""
    s3 = _s3()
    url = f"s3://{BUCKET}/failing/grid.zarr"

    def fail_at_the_first_year(msg):
        if str(msg).startswith("writing"):  # the years come after the statics are written
            s3.pipe_file(f"{BUCKET}/failing/grid.zarr/notes.txt", b"someone's, put there meanwhile")
            raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        prepare_grid(stores["root"] / "src", url, cells_per_chunk=16, progress=fail_at_the_first_year)
    s3.invalidate_cache()
    assert s3.find(f"{BUCKET}/failing/grid.zarr") == [f"{BUCKET}/failing/grid.zarr/notes.txt"]


@pytest.mark.slow
def test_train_reads_s3_and_keeps_run_storage_on_s3(ray_s3, stores, tmp_path):
    check_training_keeps_run_storage(stores, f"s3://{BUCKET}/runs", "s3run", _s3(), tmp_path / "cache")


@pytest.mark.slow
def test_infer_from_s3_to_s3_equals_local_and_resumes_there(ray_s3, stores, tmp_path):
    check_inference_equals_local_and_resumes(stores, f"s3://{BUCKET}", _s3(), tmp_path)


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
