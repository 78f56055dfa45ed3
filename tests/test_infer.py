"""Global inference: maps equal the model applied directly to the same cells; a crash after the first year then a
rerun gives the uninterrupted run's store; the budget of a constant flux equals the hand computation, each day
weighted by its month's wetland extent; without an extent the maps are written and the budget is refused; xarray
opens the maps with CF coordinates; bad input is one line."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from builders import write_tiny_extent, write_tiny_temmdm

from xmw_ray.cli import main
from xmw_ray.data.contract import DAYS_IN_MONTH, FLUX_UNIT_CF, grid_coords
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.infer.budget import CSV_COLUMNS, LAT_BANDS, NO_EXTENT, BudgetAccumulator, band_of_lat
from xmw_ray.infer.run import run_inference
from xmw_ray.models import build_model
from xmw_ray.models.checkpoint import write_checkpoint

REPO = Path(__file__).resolve().parents[1]
YEARS = (2000, 2001)
NORM = {"dynamic": {"mean": [10.0, 175.0, 0.0, 15.5, 30.0], "std": [6.0, 100.0, 17.0, 8.0, 17.0]},
        "static": {"mean": [5.0] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
        "target": {"mean": 40.0, "std": 10.0}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A 10° Grid store of two years (9 chunks of 16 cells per year) with a monthly wetland extent, and a tiny LSTM
    checkpoint."""
    root = tmp_path_factory.mktemp("infer_world")
    write_tiny_temmdm(root / "src", res=10.0, years=YEARS, seed=3, spoil_cells=0, keep_arrays=False)
    extent, fraction = write_tiny_extent(root / "src", res=10.0, seed=3)
    prepare_grid(root / "src", root / "grid.zarr", cells_per_chunk=16, wetland_area=extent)
    torch.manual_seed(0)
    model = build_model("lstm", 5, 10, norm=NORM, hidden_size=4, num_layers=1, dropout=0.0).eval()
    model.features = GridStore.open(root / "grid.zarr").features  # what training on this grid records
    write_checkpoint(root / "ckpt", model, {"model": {"name": "lstm"}}, {})
    return {"root": root, "grid": root / "grid.zarr", "ckpt": root / "ckpt", "model": model, "fraction": fraction}


@pytest.fixture(scope="module")
def mapped(ray_session, world) -> dict:
    """One uninterrupted run; units of 40 cells round to 3 chunks of 16, the last unit of a year is shorter."""
    out = world["root"] / "maps.zarr"
    res = run_inference(world["ckpt"], world["grid"], out, YEARS, batch_size=40, actors=1)
    return {"out": out, "result": res}


#: Ray core's error-level log lines: ``[2026-01-01 00:00:00,000 E 123 123] core_worker.cc:1: …``.
RAY_ERROR_LINE = re.compile(r"^\[[^\]]* E \d+ \d+\]")


def test_a_healthy_run_prints_no_ray_error_line(ray_session, world, tmp_path, capfd):
    """Ray Data's actor pool passed its own arguments through the object store, and Ray printed at error level that
    the actors could not be restarted safely; the actors are now built from small values. ``-v`` keeps Ray's own
    output on the terminal (otherwise it goes to the log), so the line would show here."""
    capfd.readouterr()
    assert main(["infer", "--checkpoint", str(world["ckpt"]), "--grid", str(world["grid"]), "--out",
                 str(tmp_path / "maps.zarr"), "--years", "2000-2000", "--actors", "1", "-v"]) == 0
    err = capfd.readouterr().err
    bad = [line for line in err.splitlines() if RAY_ERROR_LINE.match(line) or "max_restarts" in line]
    assert not bad, err
    assert "years: 1/1 mapped, 2000" in err


def test_a_killed_inference_actor_is_rebuilt_and_its_unit_retried(ray_session, world):
    from xmw_ray.data.tower_features import file_sha256
    from xmw_ray.infer.run import start_actors
    from xmw_ray.models.checkpoint import MODEL_FILE

    ray = ray_session
    sha = file_sha256(world["ckpt"] / MODEL_FILE)
    [actor] = start_actors(1, str(world["ckpt"]), sha, str(world["grid"]), use_gpu=False)
    try:
        first = ray.get(actor.predict.remote(1, 16, 48))
        ray.kill(actor, no_restart=False)  # a crash: Ray restarts it from its constructor arguments
        again = ray.get(actor.predict.remote(1, 16, 48), timeout=120)
    finally:
        ray.kill(actor)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, _direct(world)[YEARS[1]][16:48], rtol=1e-5, atol=1e-4)
    with pytest.raises(ray.exceptions.RayActorError, match="changed since this inference started"):
        [stale] = start_actors(1, str(world["ckpt"]), "0" * 64, str(world["grid"]), use_gpu=False)
        ray.get(stale.predict.remote(0, 0, 16), timeout=120)


def test_an_actor_runs_as_many_threads_as_ray_gave_it_cpus_whatever_omp_num_threads_says(ray_session, world):
    """Ray leaves an inherited ``OMP_NUM_THREADS`` alone: with it set to 2 in the shell, two 1-CPU actors on 2 cores
    ran 4 threads and a 1° year took 7.1 s instead of 1.6 s (bench/infer.py). Each actor sizes torch itself."""
    import os

    from xmw_ray.data.tower_features import file_sha256
    from xmw_ray.infer.predictor import FluxWorker
    from xmw_ray.models.checkpoint import MODEL_FILE

    ray = ray_session
    actor = ray.remote(FluxWorker).options(num_cpus=1, runtime_env={"env_vars": {"OMP_NUM_THREADS": "3"}}).remote(
        str(world["ckpt"]), file_sha256(world["ckpt"] / MODEL_FILE), str(world["grid"]))
    try:
        env, threads = ray.get(actor.__ray_call__.remote(
            lambda self: (os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads())), timeout=120)
    finally:
        ray.kill(actor)
    assert env == "3" and threads == 1


def _direct(world: dict) -> dict[int, np.ndarray]:
    """The model applied directly to every cell of each year, in store cell order."""
    store = GridStore.open(world["grid"])
    out = {}
    for yi, year in enumerate(store.years):
        parts = []
        for ci in range(store.n_chunks):
            block = store.read_block(yi, ci)
            with torch.inference_mode():
                parts.append(world["model"](torch.from_numpy(block["dynamic"]), torch.from_numpy(block["static"]))
                             .numpy())
        out[year] = np.concatenate(parts)
    return out


def _read_budget(path: Path) -> dict[int, dict[str, float]]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    return {int(r["year"]): {k: float(v) for k, v in r.items() if k != "year"} for r in rows}


def test_maps_match_the_model_applied_directly(mapped, world):
    store = GridStore.open(world["grid"])
    ilat, ilon = store.cell_ilat, store.cell_ilon
    root = zarr.open_group(str(mapped["out"]), mode="r")
    daily, monthly, annual = root["ch4_flux"], root["ch4_flux_monthly"], root["ch4_flux_annual"]
    expected = _direct(world)
    off = np.ones((store.nlat, store.nlon), dtype=bool)
    off[ilat, ilon] = False
    fraction = world["fraction"][:, ilat, ilon].astype(np.float64)  # as written: 12 different months
    area = store.cell_area[None, :] * fraction  # (12, cells)
    budget = _read_budget(mapped["out"] / "budget.csv")
    for yi, year in enumerate(YEARS):
        want = expected[year]
        assert np.ptp(want) > 1.0  # the model's output varies over cells and days
        year_map = daily[yi * 365:(yi + 1) * 365]
        np.testing.assert_allclose(year_map[:, ilat, ilon].T, want, rtol=1e-5, atol=1e-4)
        assert np.isnan(year_map[:, off]).all()  # NaN off wetland
        month_means = np.add.reduceat(want, np.r_[0, np.cumsum(DAYS_IN_MONTH)[:-1]], axis=1) / DAYS_IN_MONTH
        np.testing.assert_allclose(monthly[yi * 12:(yi + 1) * 12][:, ilat, ilon].T, month_means, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(annual[yi][ilat, ilon], want.mean(axis=1), rtol=1e-5, atol=1e-4)
        assert np.isnan(annual[yi][off]).all()
        month_sums = np.add.reduceat(want.astype(np.float64), np.r_[0, np.cumsum(DAYS_IN_MONTH)[:-1]], axis=1)
        hand_tg = float((month_sums * area.T).sum()) / 1e15
        assert budget[year]["global"] == pytest.approx(hand_tg, rel=1e-6)
        assert sum(budget[year][b] for b, _, _ in LAT_BANDS) == pytest.approx(budget[year]["global"], rel=1e-12)
    res = mapped["result"]
    assert res.computed == list(YEARS) and res.cells == store.n_cells
    for png in ("annual_mean_2000.png", "annual_mean_2001.png", "budget.png"):
        assert (mapped["out"] / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_xarray_opens_the_maps_with_cf_coordinates(mapped, world):
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(mapped["out"], decode_times=False)
    lat, lon = grid_coords(10.0)
    assert ds["ch4_flux"].dims == ("time", "lat", "lon") and ds["ch4_flux"].shape == (730, 18, 36)
    assert ds["ch4_flux_monthly"].dims == ("month_time", "lat", "lon") and ds.sizes["month_time"] == 24
    assert ds["ch4_flux_annual"].dims == ("year_time", "lat", "lon") and ds.sizes["year_time"] == 2
    np.testing.assert_array_equal(ds["lat"].values, lat)
    np.testing.assert_array_equal(ds["lon"].values, lon)
    assert ds["lat"].attrs["units"] == "degrees_north" and ds["lat"].attrs["standard_name"] == "latitude"
    assert ds["lon"].attrs["units"] == "degrees_east" and ds["lon"].attrs["standard_name"] == "longitude"
    assert ds["time"].attrs["units"] == "days since 2000-01-01" and ds["time"].attrs["calendar"] == "noleap"
    np.testing.assert_array_equal(ds["time"].values, np.arange(730))
    assert ds["month_time"].values[12] == 365 and ds["month_time"].values[2] == 59  # 1 March, no leap day
    for var in ("ch4_flux", "ch4_flux_monthly", "ch4_flux_annual"):
        assert ds[var].attrs["units"] == FLUX_UNIT_CF
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["complete"] == 1
    # provenance relative to the map store's folder (no absolute machine path; tests/test_cf_output.py)
    assert ds.attrs["source_checkpoint"] == world["ckpt"].name == "ckpt"
    assert ds.attrs["source_grid_store"] == world["grid"].name == "grid.zarr"
    # one model: no member spread, no ensemble attributes, no spread maps (budget.csv's columns: _read_budget)
    assert "ch4_flux_annual_spread" not in ds and "ensemble_members" not in ds.attrs
    assert "ancillary_variables" not in ds["ch4_flux_annual"].attrs
    assert not list((mapped["out"] / "plots").glob("annual_spread_*")) and mapped["result"].members == 0
    assert json.loads(ds.attrs["model"])["name"] == "lstm"


def test_time_axis_decodes_to_a_noleap_calendar(mapped):
    cftime = pytest.importorskip("cftime", reason="xarray needs cftime to decode the CF 'noleap' calendar")
    import xarray as xr

    ds = xr.open_zarr(mapped["out"])
    assert ds["time"].values[0] == cftime.DatetimeNoLeap(2000, 1, 1)
    assert ds["time"].values[365] == cftime.DatetimeNoLeap(2001, 1, 1)  # 365-day years
    assert ds["month_time"].values[13] == cftime.DatetimeNoLeap(2001, 2, 1)
    assert ds["year_time"].values[1] == cftime.DatetimeNoLeap(2001, 1, 1)
    day = ds["ch4_flux"].sel(time=cftime.DatetimeNoLeap(2001, 12, 31))
    np.testing.assert_array_equal(day.values, ds["ch4_flux"].isel(time=729).values)


class _Crash(Exception):
    pass


def test_crash_after_first_year_then_rerun_gives_the_same_store(mapped, world):
    out = world["root"] / "resumed.zarr"

    def crash(year: int, budget: dict) -> None:
        raise _Crash(year)

    with pytest.raises(_Crash):
        run_inference(world["ckpt"], world["grid"], out, YEARS, batch_size=40, actors=1, on_year_done=crash)
    assert (out / "_done" / "2000.json").is_file() and not (out / "_done" / "2001.json").exists()
    root = zarr.open_group(str(out), mode="r+")
    assert root.attrs["complete"] == 0
    root["ch4_flux"][365:730] = 999.0  # a half-written, uncommitted year must be rewritten

    res = run_inference(world["ckpt"], world["grid"], out, YEARS, batch_size=40, actors=1)
    assert res.computed == [2001]  # only what was missing
    done, ref = zarr.open_group(str(out), mode="r"), zarr.open_group(str(mapped["out"]), mode="r")
    for var in ("ch4_flux", "ch4_flux_monthly", "ch4_flux_annual", "wetland_area", "time", "lat", "lon"):
        np.testing.assert_allclose(done[var][:], ref[var][:], rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=var)
    assert done.attrs["complete"] == 1
    resumed, uninterrupted = _read_budget(out / "budget.csv"), _read_budget(mapped["out"] / "budget.csv")
    for year in YEARS:
        for key in CSV_COLUMNS[1:]:
            assert resumed[year][key] == pytest.approx(uninterrupted[year][key], rel=1e-9)

    again = run_inference(world["ckpt"], world["grid"], out, YEARS, batch_size=40, actors=1)
    assert again.computed == [] and again.budget == res.budget  # a complete store is left as it is


def test_budget_of_a_constant_flux_equals_the_hand_computation():
    res, radius, flux = 10.0, 6_371_000.0, 2.5
    lat, _ = grid_coords(res)
    rows = np.array([0, 7, 9, 12, 17, 16])  # one cell in each band (-85, -15, 5, 35, 85) and a second at 75N
    fraction = np.array([1.0, 0.5, 0.25, 1.0, 0.1, 0.3])
    south, north = np.deg2rad(lat[rows] - 5.0), np.deg2rad(lat[rows] + 5.0)
    area = radius**2 * np.deg2rad(res) * (np.sin(north) - np.sin(south)) * fraction  # spherical-zone cell area
    acc = BudgetAccumulator(area, band_of_lat(lat[rows]))
    daily = np.full((len(rows), 365), flux, dtype=np.float32)
    acc.add(np.array([0, 2, 4]), daily[[0, 2, 4]])  # streamed in two blocks
    acc.add(np.array([1, 3, 5]), daily[[1, 3, 5]])
    tg = acc.tg()
    hand = flux * 365 * area / 1e15
    names = [name for name, _, _ in LAT_BANDS]
    assert [tg[n] for n in names] == pytest.approx([hand[0], hand[1], hand[2], hand[3], hand[4] + hand[5]],
                                                   rel=1e-12)
    assert tg["global"] == pytest.approx(hand.sum(), rel=1e-12)


def test_the_budget_does_not_depend_on_the_order_the_blocks_arrive_in():
    """Actors return cell ranges in whatever order they finish; budget.csv must come out the same every run."""
    band = np.zeros(3, dtype=np.int64)  # one band: the sum's order is all that differs
    daily = np.zeros((3, 365))
    daily[:, 0] = [1e20, 1.0, -1e20]  # float64 addition is not associative on these
    tgs = []
    for order in ([0, 1, 2], [0, 2, 1], [2, 1, 0]):
        acc = BudgetAccumulator(np.ones(3), band)
        for c in order:
            acc.add(np.array([c]), daily[[c]])
        tgs.append(acc.tg())
    assert tgs[0] == tgs[1] == tgs[2]


def test_each_day_counts_with_its_months_wetland_extent():
    res, flux = 10.0, 2.0
    lat, _ = grid_coords(res)
    rows = np.array([3, 14])
    cell_area = 6_371_000.0**2 * np.deg2rad(res) * (np.sin(np.deg2rad(lat[rows] + 5)) - np.sin(np.deg2rad(lat[rows] - 5)))
    fraction = np.zeros((12, 2))
    fraction[6, 0] = 0.5  # cell 0: wetland in July only
    fraction[:, 1] = np.linspace(0.1, 0.6, 12)  # cell 1: a seasonal extent
    acc = BudgetAccumulator(cell_area[None, :] * fraction, band_of_lat(lat[rows]))
    daily = np.full((2, 365), flux, dtype=np.float32)
    daily[1] = np.arange(365)  # a flux rising day by day
    acc.add(np.array([0, 1]), daily)
    hand0 = flux * 31 * 0.5 * cell_area[0]
    day_fraction = np.repeat(fraction[:, 1], DAYS_IN_MONTH)
    hand1 = float((np.arange(365) * day_fraction).sum()) * cell_area[1]
    assert acc.tg()["global"] == pytest.approx((hand0 + hand1) / 1e15, rel=1e-12)
    static = BudgetAccumulator(cell_area * fraction.mean(axis=0), band_of_lat(lat[rows]))
    static.add(np.array([0, 1]), daily)
    assert static.tg()["global"] != pytest.approx(acc.tg()["global"], rel=1e-3)  # the month matters


def test_without_a_wetland_extent_maps_are_written_and_the_budget_refused(ray_session, mapped, world, tmp_path,
                                                                         capsys):
    bare = tmp_path / "bare.zarr"
    prepare_grid(world["root"] / "src", bare, cells_per_chunk=16)  # the published layout alone: no extent
    out = tmp_path / "maps.zarr"
    capsys.readouterr()
    assert main(["infer", "--checkpoint", str(world["ckpt"]), "--grid", str(bare), "--out", str(out),
                 "--years", "2000-2000", "--actors", "1"]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if NO_EXTENT in line]
    assert notes == [f"xmw: {bare}: {NO_EXTENT}"], captured.err
    assert "budget" not in captured.out
    assert not (out / "budget.csv").exists() and not (out / "plots" / "budget.png").exists()
    assert (out / "plots" / "annual_mean_2000.png").is_file()
    store = GridStore.open(bare)
    root = zarr.open_group(str(out), mode="r")
    np.testing.assert_allclose(root["ch4_flux_annual"][0][store.cell_ilat, store.cell_ilon],
                               _direct(world)[2000].mean(axis=1), rtol=1e-5, atol=1e-4)
    assert np.isnan(root["wetland_area"][:]).all()
    assert json.loads((out / "_done" / "2000.json").read_text())["budget_tg"] is None


def _one_line_error(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xmw: error:") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_is_a_one_line_error(capsys, mapped, world, tmp_path):
    args = ["infer", "--grid", str(world["grid"]), "--out", str(tmp_path / "m.zarr")]
    _one_line_error(capsys, [*args, "--checkpoint", str(tmp_path / "nope")], "nope", "not a checkpoint")
    ckpt = ["--checkpoint", str(world["ckpt"])]
    _one_line_error(capsys, [*args, *ckpt, "--years", "1990-2000"], "--years 1990-2000", "2000-2001")
    _one_line_error(capsys, [*args, *ckpt, "--years", "20x0"], "--years 20x0")
    _one_line_error(capsys, [*args, *ckpt, "--batch-size", "0"], "--batch-size")
    _one_line_error(capsys, ["infer", *ckpt, "--grid", str(tmp_path), "--out", str(tmp_path / "m.zarr")],
                    "not a Grid store")
    # an existing store from another run (other years) is never mixed into
    _one_line_error(capsys, ["infer", *ckpt, "--grid", str(world["grid"]), "--years", "2000-2000",
                             "--out", str(mapped["out"])], "another run", "years")
    (tmp_path / "file.txt").write_text("x")
    _one_line_error(capsys, ["infer", *ckpt, "--grid", str(world["grid"]), "--out", str(tmp_path / "file.txt")],
                    "not a flux-map store")
    assert not (tmp_path / "m.zarr").exists()


def test_job_entry_point_runs_the_same_command(world, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "infer.py"), "--checkpoint", str(tmp_path / "none"),
                           "--grid", str(world["grid"]), "--out", str(tmp_path / "m.zarr")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("xmw: error:") and "not a checkpoint" in proc.stderr


def test_a_two_cpu_actor_runs_two_threads(ray_session):
    """The same sizing as the inference actors, used by every Ray Train worker (``cpus_per_worker`` threads)."""
    from xmw_ray.train.resources import use_assigned_cpus

    ray = ray_session

    @ray.remote(num_cpus=2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "3"}})
    def threads() -> int:
        return use_assigned_cpus()

    assert ray.get(threads.remote(), timeout=120) == 2
    assert use_assigned_cpus() == torch.get_num_threads()  # the driver (Train's local mode) is left as it is
