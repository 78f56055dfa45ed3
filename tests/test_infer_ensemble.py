"""Inference of an ensemble checkpoint keeps the members' disagreement: each cell's spread (the standard deviation
across the members of their annual-mean flux) in the map store with CF attributes and as maps, and the members'
budget range in budget.csv and on the budget figure; it survives a rerun; a single model's maps have none of it
(tests/test_infer.py checks that side)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
import zarr
from test_infer import NORM, YEARS, world  # noqa: F401  (module fixture: the small Grid store)

from xmw_ray.data.contract import grid_coords
from xmw_ray.data.grid_store import GridStore
from xmw_ray.errors import XmwInputError
from xmw_ray.infer.budget import CSV_COLUMNS, MEMBER_COLUMNS, BudgetAccumulator, band_of_lat
from xmw_ray.infer.maps import ANNUAL_VAR, FLUX_VAR, SPREAD_VAR, FluxMaps, MapSpec
from xmw_ray.infer.run import run_inference, wetland_area_cells
from xmw_ray.models import build_model, ensemble_from_models
from xmw_ray.models.checkpoint import write_checkpoint

MEMBERS = 3


@pytest.fixture(scope="module")
def ensemble(world) -> dict:  # noqa: F811
    """A three-member ensemble checkpoint (LSTM seeds that disagree) over the tests' Grid store, and its maps."""
    store = GridStore.open(world["grid"])
    parts = []
    for seed in range(MEMBERS):
        torch.manual_seed(10 + seed)
        parts.append(build_model("lstm", 5, 10, norm=NORM, hidden_size=4, num_layers=1, dropout=0.0).eval())
    model = ensemble_from_models(parts)
    model.features = store.features
    ckpt = write_checkpoint(world["root"] / "ens_ckpt", model, {"model": {"name": "ensemble"}}, {})
    return {"ckpt": ckpt, "members": parts, "out": world["root"] / "ens_maps.zarr"}


@pytest.fixture(scope="module")
def ens_mapped(ray_session, world, ensemble) -> dict:  # noqa: F811
    res = run_inference(ensemble["ckpt"], world["grid"], ensemble["out"], YEARS, batch_size=40, actors=1)
    return {"result": res, "out": ensemble["out"]}


def _member_flux(world: dict, parts: list, year_index: int) -> np.ndarray:  # noqa: F811
    """Each member applied directly to every cell of one year: ``(members, cells, 365)``."""
    store = GridStore.open(world["grid"])
    dynamic, static = store.read_inputs(year_index, 0, store.n_cells)
    with torch.inference_mode():
        return np.stack([m(torch.from_numpy(dynamic), torch.from_numpy(static)).numpy() for m in parts])


def test_spread_is_the_std_of_the_members_annual_means(ens_mapped, ensemble, world):  # noqa: F811
    store = GridStore.open(world["grid"])
    ilat, ilon = store.cell_ilat, store.cell_ilon
    root = zarr.open_group(str(ens_mapped["out"]), mode="r")
    assert root.attrs["ensemble_members"] == MEMBERS and ens_mapped["result"].members == MEMBERS
    spread = root[SPREAD_VAR]
    for yi in range(len(YEARS)):
        each = _member_flux(world, ensemble["members"], yi)
        want = each.mean(axis=2).std(axis=0)  # numpy's std (ddof 0) of each member's annual mean, per cell
        got = spread[yi][ilat, ilon]
        assert np.all(got >= 0) and want.max() > 1e-3  # the members do disagree
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        off = np.ones(spread.shape[1:], dtype=bool)
        off[ilat, ilon] = False
        assert np.isnan(spread[yi][off]).all()
        # the maps themselves stay the ensemble's mean
        np.testing.assert_allclose(root[ANNUAL_VAR][yi][ilat, ilon], each.mean(axis=0).mean(axis=1),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(root[FLUX_VAR][yi * 365:(yi + 1) * 365][:, ilat, ilon].T, each.mean(axis=0),
                                   rtol=1e-5, atol=1e-4)
    attrs = spread.attrs
    assert attrs["units"] == root[ANNUAL_VAR].attrs["units"]
    assert "standard deviation" in attrs["long_name"] and f"{MEMBERS} ensemble members" in attrs["long_name"]
    assert attrs["cell_methods"].startswith("year_time: mean") and "standard deviation" in attrs["cell_methods"]
    assert root[ANNUAL_VAR].attrs["ancillary_variables"] == SPREAD_VAR


def test_budget_range_brackets_the_ensemble_and_equals_each_members_budget(ens_mapped, ensemble, world):  # noqa: F811
    res = ens_mapped["result"]
    with (ens_mapped["out"] / "budget.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS + MEMBER_COLUMNS
    store = GridStore.open(world["grid"])
    bands = band_of_lat(grid_coords(store.res)[0][store.cell_ilat])
    for yi, row in enumerate(rows):
        year = int(row["year"])
        low, high, std = (float(row[k]) for k in MEMBER_COLUMNS)
        assert low < float(row["global"]) < high and std > 0
        by_hand = []
        for member_flux in _member_flux(world, ensemble["members"], yi):
            acc = BudgetAccumulator(wetland_area_cells(store), bands)
            acc.add(np.arange(store.n_cells), member_flux)
            by_hand.append(acc.tg()["global"])
        assert [m["global"] for m in res.member_budget[year]] == pytest.approx(by_hand, rel=1e-5)
        assert (low, high, std) == pytest.approx((min(by_hand), max(by_hand), float(np.std(by_hand))), rel=1e-5)
        # the budget is linear in the flux: the ensemble's is its members' mean
        assert float(row["global"]) == pytest.approx(float(np.mean(by_hand)), rel=1e-5)


def test_spread_maps_are_drawn_and_a_rerun_keeps_the_range(ens_mapped, ensemble, world):  # noqa: F811
    plots = ens_mapped["out"] / "plots"
    for name in [f"annual_spread_{y}.png" for y in YEARS] + ["annual_spread_all_years.png", "budget.png"]:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    again = run_inference(ensemble["ckpt"], world["grid"], ens_mapped["out"], YEARS, batch_size=40, actors=1)
    assert again.computed == [] and again.member_budget == ens_mapped["result"].member_budget


def test_the_netcdf_copy_with_the_spread_passes_the_cf_checker(ens_mapped, tmp_path):
    pytest.importorskip("compliance_checker.runner", reason="the dev extra installs compliance-checker")
    from test_cf_output import checker_findings

    from xmw_ray.infer.maps import write_netcdf

    nc = tmp_path / "ens.nc"
    write_netcdf(str(ens_mapped["out"]), str(nc))
    assert checker_findings(nc, tmp_path) == {"high": [], "medium": []}


def test_an_ensembles_store_made_without_the_spread_is_refused(tmp_path):
    """Maps an earlier xmw_ray made of the same ensemble have no spread array; resuming into them is refused."""
    ilat, ilon = np.array([3, 4]), np.array([5, 6])
    spec = MapSpec(res=10.0, years=(2000,), checkpoint="ckpt", checkpoint_sha256="0" * 64, grid_store="grid",
                   grid_cells=2, model={"name": "ensemble"})
    area = np.full((12, 18, 36), np.nan)
    FluxMaps.open_or_create(str(tmp_path / "maps.zarr"), spec, ilat, ilon, area)
    with pytest.raises(XmwInputError, match="without its member spread"):
        FluxMaps.open_or_create(str(tmp_path / "maps.zarr"), dataclasses.replace(spec, members=3), ilat, ilon, area)
