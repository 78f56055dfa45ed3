"""The one store interface (``data/stores.py``): both kinds are found, described and fingerprinted through it, and
no other module of the package switches on a store's kind or knows a store's commit file."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from builders import write_tiny_fluxnet, write_tiny_temmdm

from xmw_ray.data.grid_store import prepare_grid
from xmw_ray.data.site_store import prepare_sites
from xmw_ray.data.stores import STORE_KINDS, detect_kind, store_fingerprint, store_info
from xmw_ray.errors import XmwInputError

ROOT = Path(__file__).resolve().parents[1]
#: The interface and the two stores' own writers and readers.
STORE_MODULES = {"xmw_ray/data/stores.py", "xmw_ray/data/grid_store.py", "xmw_ray/data/site_store.py"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("stores")
    write_tiny_temmdm(tmp / "tem", res=10.0, years=(2015, 2016), land_fraction=1.0, wetland_fraction=1.0,
                      spoil_cells=0, seed=3)
    prepare_grid(tmp / "tem", tmp / "grid.zarr", cells_per_chunk=64)
    write_tiny_fluxnet(tmp / "flux", {"XX-Aaa": (47.3, 2.28)}, start="2015-01-01", end="2016-12-31")
    prepare_sites(tmp / "flux", tmp / "sites", wetland_types={"XX-Aaa": 4})
    (tmp / "empty").mkdir()
    return {"grid": tmp / "grid.zarr", "sites": tmp / "sites", "empty": tmp / "empty"}


def test_each_kind_is_detected_and_described(stores):
    assert detect_kind(str(stores["grid"])) == "grid" and detect_kind(str(stores["sites"])) == "sites"
    assert detect_kind(str(stores["empty"])) is None
    grid, sites = store_info(str(stores["grid"])), store_info(str(stores["sites"]))
    assert (grid.kind, grid.all_years, grid.years_of) == ("grid", [2015, 2016], None)
    assert (sites.kind, sites.entities, sites.years_of) == ("sites", ["XX-Aaa"], {"XX-Aaa": (2015, 2016)})
    with pytest.raises(XmwInputError, match="not a Grid store"):  # no store: the Grid reader says what is wrong
        store_info(str(stores["empty"]))


def test_fingerprint_follows_the_commit_file(stores):
    for kind, path in (("grid", stores["grid"]), ("sites", stores["sites"])):
        before = store_fingerprint(str(path))
        assert before.startswith(f"{path.resolve()}@")
        commit = path / STORE_KINDS[kind].commit_file
        st = commit.stat()
        os.utime(commit, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the store was prepared again
        assert store_fingerprint(str(path)) != before
    assert store_fingerprint(str(stores["empty"])) == str(stores["empty"])


def kind_switches_outside_the_interface() -> list[str]:
    """``… kind == "grid"``-style comparisons and uses of a store's commit-file name outside ``STORE_MODULES``."""
    kinds = set(STORE_KINDS)
    found = []
    for path in sorted((ROOT / "xmw_ray").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in STORE_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = {getattr(n, "attr", getattr(n, "id", None)) for n in (node.left, *node.comparators)}
                values = {n.value for n in (node.left, *node.comparators) if isinstance(n, ast.Constant)}
                if "kind" in names and values & kinds:
                    found.append(f"{rel}:{node.lineno}")
            if isinstance(node, (ast.Name, ast.alias)) and "COMMON_METADATA" in (getattr(node, "id", None),
                                                                                 getattr(node, "name", None)):
                found.append(f"{rel}:{getattr(node, 'lineno', 0)}")
    return found


def test_no_kind_switch_outside_the_store_interface():
    assert kind_switches_outside_the_interface() == []


def test_passes_over_a_site_store_start_no_footer_reader_actors(ray_session, stores):
    """Ray Data 2.60's default Parquet reader lists the files at every pass through a pool of FooterReader actors
    (process starts each epoch, ~6x slower passes over a small Site store on 2 cores); the Site store reads through
    the V1 reader, which reads the footers once, and leaves the caller's Ray Data setting as it was."""
    import ray.data
    from ray.util.state import list_actors

    ctx = ray.data.DataContext.get_current()
    before = ctx.use_datasource_v2
    info = store_info(str(stores["sites"]))
    ds = STORE_KINDS["sites"].dataset(info, None, "all")
    assert ctx.use_datasource_v2 == before
    for _ in range(2):  # two epochs
        assert sum(len(b["year"]) for b in ds.iter_batches(batch_size=64, batch_format="numpy")) == 2
    footer_readers = list_actors(address=ray_session.get_runtime_context().gcs_address,
                                 filters=[("class_name", "=", "FooterReader")], limit=1000)
    assert footer_readers == []
