"""Skill of flux maps against the built-in world's true flux (``xmw_ray/infer/skill.py``, ``xmw score-maps``): the
metrics on arrays with known answers, and the whole path on a tiny simulated world."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from xmw_ray.cli import main
from xmw_ray.data import layout
from xmw_ray.data.contract import cell_area_m2, grid_coords, slots_to_days
from xmw_ray.infer.maps import FluxMaps, MapSpec
from xmw_ray.infer.skill import (
    GROUPS,
    SKILL_BUDGET_CSV,
    SKILL_CSV,
    SKILL_JSON,
    SkillSums,
    budget_skill,
    open_maps,
    open_truth,
    score_sources,
    trend,
)
from xmw_ray.sim.world import SimulationSpec, simulate

RES, YEARS = 10.0, (2000, 2001)


def test_nse_and_bias_known_answers() -> None:
    rng = np.random.default_rng(0)
    true = rng.gamma(2.0, 10.0, 1000)
    sums = SkillSums(n_groups=4)
    sums.add(np.int64(0), true, true)  # perfect
    sums.add(np.int64(1), np.full_like(true, true.mean()), true)  # the mean: NSE 0
    sums.add(np.int64(2), true + 2.0, true)  # offset by 2
    sums.add(np.int64(3), 2.0 * true, true)  # twice
    perfect, mean, offset, double = sums.scores()
    assert perfect["nse"] == pytest.approx(1.0) and perfect["bias"] == pytest.approx(0.0)
    assert mean["nse"] == pytest.approx(0.0, abs=1e-9)
    var_sum = ((true - true.mean()) ** 2).sum()
    assert offset["bias"] == pytest.approx(2.0)
    assert offset["nse"] == pytest.approx(1.0 - 4.0 * len(true) / var_sum)
    assert offset["relative_bias"] == pytest.approx(2.0 * len(true) / true.sum())
    assert double["relative_bias"] == pytest.approx(1.0)
    assert double["nse"] == pytest.approx(1.0 - (true**2).sum() / var_sum)
    assert all(s["n"] == len(true) for s in sums.scores())


def test_group_indices_split_the_sums() -> None:
    sums = SkillSums(n_groups=3)
    sums.add(np.array([0, 0, 1, 1]), np.array([1.0, 3.0, 5.0, 5.0]), np.array([1.0, 2.0, 4.0, 6.0]))
    a, b, empty = sums.scores()
    assert (a["n"], b["n"], empty["n"]) == (2, 2, 0)
    assert a["bias"] == pytest.approx(0.5) and b["bias"] == pytest.approx(0.0)
    assert a["nse"] == pytest.approx(1.0 - 1.0 / 0.5) and b["nse"] == pytest.approx(1.0 - 2.0 / 2.0)
    assert np.isnan(empty["nse"])


def test_budget_and_trend_errors() -> None:
    years = range(2000, 2010)
    true = {y: 150.0 + 2.0 * (y - 2000) for y in years}
    predicted = {y: 160.0 + 3.0 * (y - 2000) for y in years}
    assert trend(list(true), list(true.values())) == pytest.approx(2.0)
    b = budget_skill(predicted, true)
    assert b["trend_true"] == pytest.approx(2.0) and b["trend_predicted"] == pytest.approx(3.0)
    assert b["trend_error"] == pytest.approx(1.0)
    assert b["years"][2000]["error"] == pytest.approx(10.0) and b["years"][2009]["error"] == pytest.approx(19.0)
    assert b["mean_error"] == pytest.approx(14.5)
    assert np.isnan(trend([2000], [1.0]))
    with pytest.raises(ValueError, match="different years"):
        budget_skill({2000: 1.0}, {2001: 1.0})


# --- end to end on a tiny world ------------------------------------------------------------------------------
def _year_grid(path: Path) -> np.ndarray:
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return slots_to_days(np.asarray(ds[layout.TARGET_VAR].values, dtype=np.float32))  # (nlat, nlon, 365)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A tiny world and two map stores on its wetland cells: one holding the true flux, one the simulator's."""
    root = tmp_path_factory.mktemp("skill")
    world = root / "world"
    summary = simulate(SimulationSpec(out=world, res=RES, years=YEARS, sites=2, seed=0), log=lambda m: None)
    with xr.open_dataset(layout.static_path(world, "wetlandtype"), engine="h5netcdf") as ds:
        wtype = np.nan_to_num(ds["wetlandtype"].values)
    with xr.open_dataset(world / layout.WETLAND_EXTENT_FILE, engine="h5netcdf") as ds:
        fraction = np.asarray(ds["Fw"].values, dtype=np.float64)  # (12, nlat, nlon)
    ilat, ilon = np.nonzero(wtype > 0)  # row-major: the Grid store's cell order
    lat, _ = grid_coords(RES)
    area = np.full(fraction.shape, np.nan)
    area[:, ilat, ilon] = cell_area_m2(lat[ilat], RES)[None, :] * fraction[:, ilat, ilon]
    stores = {}
    for name, path_of in (("truth", layout.true_target_path), ("simulator", layout.target_path)):
        spec = MapSpec(res=RES, years=YEARS, checkpoint=name, checkpoint_sha256="0" * 64, grid_store="grid",
                       grid_cells=len(ilat), model={}, wetland_extent="world")
        maps = FluxMaps.open_or_create(str(root / f"maps-{name}"), spec, ilat, ilon, area)
        for year in YEARS:
            maps.write_year(year, _year_grid(path_of(world, year))[ilat, ilon])
            maps.commit_year(year, None)
        stores[name] = root / f"maps-{name}"
    other = root / "other-world"  # another seed: other wetlands on the same continents
    simulate(SimulationSpec(out=other, res=RES, years=YEARS, sites=0, seed=5), log=lambda m: None)
    return {"root": root, "world": world, "summary": summary, "stores": stores, "cells": (ilat, ilon),
            "other_world": other}


def test_scores_of_the_truth_itself_and_of_the_simulator(tiny: dict) -> None:
    world = open_truth(tiny["world"])
    sim_row, truth_maps, sim_maps = score_sources(
        [("sim", None), ("truth", open_maps(tiny["stores"]["truth"])), ("sim maps", open_maps(tiny["stores"]["simulator"]))],
        world)
    assert [g["group"] for g in truth_maps.groups] == list(GROUPS)
    glob = truth_maps.group("global")
    assert glob["nse"] == pytest.approx(1.0) and glob["bias"] == pytest.approx(0.0, abs=1e-6)
    assert truth_maps.budget["mean_error"] == pytest.approx(0.0, abs=1e-6)
    # the budgets agree with what simulate computed from its own arrays (float32 files: a small rounding)
    for year in YEARS:
        true_tg = tiny["summary"]["true_wetland_budget_Tg_per_year"][year]
        sim_tg = tiny["summary"]["global_wetland_budget_Tg_per_year"][year]
        assert truth_maps.budget["years"][year]["true"] == pytest.approx(true_tg, rel=1e-4)
        assert sim_row.budget["years"][year]["predicted"] == pytest.approx(sim_tg, rel=1e-4)
    # the world's simulator output scored directly equals the same output read back from a map store
    for a, b in zip(sim_row.groups, sim_maps.groups, strict=True):
        assert a["n"] == b["n"]
        np.testing.assert_allclose([a["nse"], a["bias"]], [b["nse"], b["bias"]], rtol=1e-6, atol=1e-9)
    # ... and equals NSE computed on the whole arrays at once
    ilat, ilon = tiny["cells"]
    p = np.concatenate([_year_grid(layout.target_path(tiny["world"], y))[ilat, ilon] for y in YEARS])
    t = np.concatenate([_year_grid(layout.true_target_path(tiny["world"], y))[ilat, ilon] for y in YEARS])
    nse = 1.0 - ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum()
    assert sim_row.group("global")["nse"] == pytest.approx(nse, rel=1e-6)
    assert sim_row.group("global")["nse"] < 0.99  # the simulator's parameters are not the true world's
    assert sum(sim_row.group(f"lat {b}")["n"] for b in ("90S-30S", "30S-0", "0-30N", "30N-60N", "60N-90N")) == \
        sim_row.group("global")["n"]


def test_score_maps_command_writes_files_and_table(tiny: dict, capsys) -> None:
    out_csv = tiny["root"] / "comparison.csv"
    rc = main(["score-maps", "--truth", str(tiny["world"]), str(tiny["stores"]["truth"]),
               str(tiny["stores"]["simulator"]), "--names", "truth", "simulator maps", "--out", str(out_csv)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "process model (simulator)" in captured.out and "simulator maps" in captured.out
    for name in (SKILL_JSON, SKILL_CSV, SKILL_BUDGET_CSV):
        assert (tiny["stores"]["truth"] / name).is_file()
    payload = json.loads((tiny["stores"]["truth"] / SKILL_JSON).read_text())
    assert payload["groups"][0]["nse"] == pytest.approx(1.0)
    assert out_csv.read_text().count("\n") == 4  # header + simulator + two map stores
    again = ["score-maps", "--truth", str(tiny["world"]), str(tiny["stores"]["truth"]), "--out"]
    assert main([*again, str(out_csv)]) == 0  # its own table: replaced
    theirs = tiny["root"] / "notes.csv"  # a user's file, e.g. a typo in --out: refused before any scoring
    theirs.write_text("site,comment\nA,keep me\n")
    capsys.readouterr()
    assert main([*again, str(theirs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{theirs}: exists and is not a comparison table of xmw score-maps; choose another --out "
                        "or remove it") and len(err.splitlines()) == 1
    assert theirs.read_text() == "site,comment\nA,keep me\n"


def test_a_world_without_truth_is_one_line(tiny: dict, tmp_path: Path, capsys) -> None:
    old = tmp_path / "old-world"
    shutil.copytree(tiny["world"], old)
    summary = json.loads((old / "truth.json").read_text())
    del summary["true_flux"]  # what xmw simulate wrote before it kept the true flux
    (old / "truth.json").write_text(json.dumps(summary))
    shutil.rmtree(old / layout.TRUE_DIR)
    maps = tiny["stores"]["truth"]
    for argv, expected in (
        (["--truth", str(old), str(maps)], "holds no true flux"),
        (["--truth", str(tmp_path), str(maps)], "not a built-in world"),
        (["--truth", str(tiny["world"]), str(tmp_path)], "not a flux-map store"),
        (["--truth", str(tiny["world"]), str(maps), "--names", "a", "b"], "--names"),
        (["--truth", str(tiny["other_world"]), str(maps)], "the maps come from another world"),
    ):
        capsys.readouterr()
        assert main(["score-maps", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("xmw: error: ") and expected in err[0], err


def test_unfinished_maps_are_refused(tiny: dict, tmp_path: Path, capsys) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(tiny["stores"]["truth"], partial)
    (partial / "_done" / f"{YEARS[1]}.json").unlink()
    assert main(["score-maps", "--truth", str(tiny["world"]), str(partial)]) == 2
    assert f"year {YEARS[1]} not done" in capsys.readouterr().err
