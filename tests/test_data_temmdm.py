"""The TEM-MDM reader and the Grid store, against small files written in the published layout."""

from __future__ import annotations

import numpy as np
import pytest
from builders import write_tiny_temmdm

from xmw_ray.data import schema
from xmw_ray.data.contract import DAILY_VARS, STATIC_VARS, cell_area_m2, grid_coords
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.temmdm import open_temmdm


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tem")
    truth = write_tiny_temmdm(root / "src", res=10.0, years=(2000, 2001, 2002), seed=1)
    prepare_grid(root / "src", root / "grid.zarr", cells_per_chunk=16, chunks_per_shard=2)
    return root, truth, GridStore.open(root / "grid.zarr")


def test_reader_derives_grid_and_years_and_reads_days(world):
    root, truth, _ = world
    src = open_temmdm(root / "src" / "TEM-MDM")  # the TEM-MDM folder itself works too
    assert (src.res, src.nlat, src.nlon, src.years) == (10.0, 18, 36, (2000, 2001, 2002))
    reader = src.daily("TAIR", 2001)
    np.testing.assert_array_equal(reader.rows(3, 7), truth["daily"][("TAIR", 2001)][3:7])
    reader.close()
    with src.npp(2002) as r:
        np.testing.assert_array_equal(r.rows(0, 18), truth["npp"][2002])
    assert src.annual("CO2")[2001] == pytest.approx(dict(zip(*truth["annual"]["CO2"], strict=True))[2001])


def test_reader_flips_a_north_to_south_file(tmp_path):
    import xarray as xr

    truth = write_tiny_temmdm(tmp_path, res=10.0, years=(2000,), seed=2)
    path = tmp_path / "TEM-MDM" / "clelev.nc"
    ds = xr.open_dataset(path).load()
    ds.close()
    ds.isel(lat=slice(None, None, -1)).to_netcdf(path, engine="h5netcdf")
    with open_temmdm(tmp_path).static("clelev") as r:
        np.testing.assert_array_equal(r.rows(0, 18), truth["static"]["clelev"])


def test_grid_store_matches_what_was_written_cell_by_cell(world):
    _, truth, g = world
    ilat, ilon = np.nonzero(truth["valid"])
    assert g.n_cells == len(ilat)
    np.testing.assert_array_equal(g.cell_ilat, ilat)
    np.testing.assert_array_equal(g.cell_ilon, ilon)
    assert g.years == (2000, 2001, 2002) and g.res == 10.0
    lat, _ = grid_coords(10.0)
    np.testing.assert_allclose(g.cell_area, cell_area_m2(lat[ilat], 10.0))
    assert g.wetland_fraction is None and g.attrs["wetland_extent"] is None  # no --wetland-area: no extent
    ch4 = dict(zip(*truth["annual"]["CH4"], strict=True))
    for yi, year in enumerate(g.years):
        for ci in range(g.n_chunks):
            b = g.read_block(yi, ci)
            c0, c1 = g.chunk_cells(ci)
            rows, cols = ilat[c0:c1], ilon[c0:c1]
            assert b[schema.DYNAMIC].shape == (c1 - c0, 365, 5) and b[schema.DYNAMIC].dtype == np.float32
            for j, var in enumerate(DAILY_VARS):
                np.testing.assert_array_equal(b[schema.DYNAMIC][:, :, j], truth["daily"][(var, year)][rows, cols])
            npp_days = truth["npp"][year][rows, cols][:, [0] * 31 + [1] * 28]
            np.testing.assert_array_equal(b[schema.DYNAMIC][:, :59, 4], npp_days)
            np.testing.assert_array_equal(b[schema.TARGET], truth["target"][year][rows, cols])
            for j, var in enumerate(STATIC_VARS):
                np.testing.assert_array_equal(b[schema.STATIC][:, j], truth["static"][var][rows, cols])
            np.testing.assert_allclose(b[schema.STATIC][:, len(STATIC_VARS)], ch4[year])
            assert list(b[schema.ENTITY]) == [schema.cell_entity(a, o) for a, o in zip(rows, cols, strict=True)]
            np.testing.assert_array_equal(b[schema.YEAR], year)


def test_invalid_cells_are_excluded(world):
    _, truth, g = world
    # the builder spoils one wetland cell with a NaN driver day in the last year: it must not be stored
    wet = np.nan_to_num(truth["static"]["wetlandtype"]) > 0
    spoiled = np.argwhere(wet & ~truth["valid"])
    assert len(spoiled) == 1
    assert g.cell_index(spoiled[:, 0], spoiled[:, 1])[0] == -1
    assert np.all(np.isfinite(g.read_block(0, 0)[schema.DYNAMIC]))


def test_random_samples_equal_block_rows(world):
    _, _, g = world
    rng = np.random.default_rng(0)
    yi = rng.integers(0, 3, 40)
    ci = rng.integers(0, g.n_cells, 40)
    s = g.read_samples(yi, ci)
    for k in range(40):
        b = g.read_block(int(yi[k]), int(ci[k]) // g.cells_per_chunk)
        r = int(ci[k]) % g.cells_per_chunk
        np.testing.assert_array_equal(s[schema.DYNAMIC][k], b[schema.DYNAMIC][r])
        np.testing.assert_array_equal(s[schema.STATIC][k], b[schema.STATIC][r])
        assert s[schema.ENTITY][k] == b[schema.ENTITY][r]


def test_store_is_sharded_and_years_selectable(world, tmp_path):
    root, truth, g = world
    meta = g.root["dynamic"].metadata.to_dict()
    assert [c["name"] for c in meta["codecs"]] == ["sharding_indexed"]
    assert g.root["dynamic"].chunks == (1, 16, 365, 5)
    prepare_grid(root / "src", tmp_path / "one.zarr", years=(2001, 2001), cells_per_chunk=16)
    one = GridStore.open(tmp_path / "one.zarr")
    assert one.years == (2001,)
    # 2002's spoiled cell does not matter for 2001 alone
    assert one.n_cells == g.n_cells + 1


def test_rerun_gives_an_identical_store(world, tmp_path):
    root, _, _ = world
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    prepare_grid(root / "src", a, cells_per_chunk=16, chunks_per_shard=2)
    prepare_grid(root / "src", b, cells_per_chunk=16, chunks_per_shard=2)
    prepare_grid(root / "src", b, cells_per_chunk=16, chunks_per_shard=2)  # over an existing store
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert not list(tmp_path.glob(".*tmp*"))
