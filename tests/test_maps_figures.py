"""Figures of the flux maps: one colour scale from every year (read one map at a time), ocean and land without
wetland told apart with the land outline, units on every colour bar, the seasonal cycle by latitude band against a
hand computation, the budget figure with the literature range and the true budget, and the transfer table with one
seed (no ``± 0.000``) and one fraction (one panel of bars, not empty curves)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fresh_python import run_fresh_python

from xmw_ray.data.contract import FLUX_UNIT, grid_coords
from xmw_ray.errors import XmwInputError
from xmw_ray.infer import plots
from xmw_ray.infer.budget import BUDGET_UNIT, read_true_budget


def _years_of_maps(seed: int = 0) -> dict[int, np.ndarray]:
    """Three years of a 10° map whose values grow year by year (so a per-year scale would differ)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, year in enumerate((2000, 2001, 2002)):
        m = np.full((18, 36), np.nan)
        m[5:12, 3:30] = rng.gamma(2.0, 10.0 * (i + 1), size=(7, 27))
        out[year] = m
    return out


def test_one_colour_scale_from_every_year_read_one_map_at_a_time():
    maps = _years_of_maps()
    reads: list[int] = []

    def read(year: int) -> np.ndarray:
        reads.append(year)
        return maps[year]

    scale = plots.shared_scale(read, list(maps), "percentile")
    assert sorted(reads) == sorted(list(maps) * 2)  # two passes, one map in hand at a time
    every = np.concatenate([m[np.isfinite(m)] for m in maps.values()])
    lo, hi = np.percentile(every, plots.PERCENTILE_RANGE, method="inverted_cdf")  # what a histogram gives
    step = (every.max() - every.min()) / 8192
    assert scale.vmin == 0.0 and lo > 0  # positive flux: the scale starts at zero emission
    assert scale.vmax == pytest.approx(hi, abs=2 * step)
    first_year_alone = np.percentile(maps[2000][np.isfinite(maps[2000])], plots.PERCENTILE_RANGE[1])
    assert scale.vmax > 1.5 * first_year_alone  # not the first year's own scale
    assert scale.extend() == "max" and FLUX_UNIT in scale.label() and "all years" in scale.label()

    linear = plots.shared_scale(read, list(maps), "linear")
    assert (linear.vmin, linear.vmax) == (0.0, pytest.approx(every.max()))
    log = plots.shared_scale(read, list(maps), "log")
    assert log.kind == "log" and 0 < log.vmin < np.percentile(every, 2) and log.vmax == pytest.approx(every.max())
    negative = {2000: -np.abs(maps[2000])}
    assert plots.shared_scale(negative.__getitem__, [2000], "log").kind == "linear"  # nothing positive to log


def test_year_maps_drawn_by_other_processes_are_the_same_pngs(monkeypatch, capsys):
    """Several year maps are drawn by separate processes (``YearMapDrawer``) while inference's driver draws the
    all-years grid: each PNG must be byte for byte the one drawn here; a process that fails costs time, never a
    map; one or two maps are not worth a process."""
    maps = _years_of_maps()
    land = np.isfinite(maps[2000])
    scale = plots.shared_scale(maps.__getitem__, list(maps), "percentile")
    here = [plots.annual_map_bytes(m, year, scale, land) for year, m in maps.items()]
    assert len(set(here)) == len(maps)  # three different maps

    drawer = plots.YearMapDrawer(scale, land, True, plots.MEAN_TITLE, workers=2)
    drawer.start(list(maps), maps.__getitem__)
    assert [png for _, png in drawer.results()] == here and drawer.delivered == len(maps)

    monkeypatch.setattr(plots, "DRAWING_MODULE", "xmw_ray.no_such_module")  # every drawing process fails
    failed = plots.YearMapDrawer(scale, land, True, plots.MEAN_TITLE, workers=2)
    failed.start(list(maps), maps.__getitem__)
    assert [png for _, png in failed.results()] == here and failed.delivered == 0
    assert "drawing process 0 ended with 1: " in capsys.readouterr().err  # and says why, once per process
    monkeypatch.setattr(plots.sys, "executable", str(Path(sys.executable).parent / "no-such-python"))
    unstarted = plots.YearMapDrawer(scale, land, True, plots.MEAN_TITLE, workers=2)
    unstarted.start(list(maps), maps.__getitem__)  # the interpreter cannot even start: drawn here
    assert [png for _, png in unstarted.results()] == here and unstarted.delivered == 0
    monkeypatch.undo()

    with plots.YearMapDrawer(scale, land, True, plots.MEAN_TITLE, workers=2) as abandoned:  # the caller failed
        abandoned.start(list(maps), maps.__getitem__)
        folder = Path(abandoned._dir.name)
    assert all(p.poll() is not None for p in abandoned._procs) and not folder.exists()

    two = plots.YearMapDrawer(scale, land, True, plots.MEAN_TITLE, workers=2)
    two.start(list(maps)[:2], maps.__getitem__)
    assert not two._procs and [png for _, png in two.results()] == here[:2]


def test_drawing_processes_do_not_run_the_callers_script_again(tmp_path):
    """A user's script without a ``__main__`` guard that maps several years: multiprocessing's spawned children
    would import that script, i.e. run it (its inference) once more in each drawing process. Ours run only the
    drawing module."""
    runs = tmp_path / "runs.txt"
    script = tmp_path / "user_script.py"
    script.write_text(
        "import numpy as np\n"
        "from xmw_ray.infer import plots\n"
        f"open({str(runs)!r}, 'a').write('ran\\n')\n"
        "land = np.ones((18, 36), dtype=bool)\n"
        "scale = plots.ColourScale('linear', 0.0, 1.0, 0.0, 1.0)\n"
        "drawer = plots.YearMapDrawer(scale, land, True, plots.MEAN_TITLE, workers=2)\n"
        "drawer.start([2000, 2001, 2002], lambda y: np.full((18, 36), (y - 2000) / 3))\n"
        "assert len(list(drawer.results())) == 3 and drawer.delivered == 3\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert runs.read_text() == "ran\n"


def test_drawing_a_map_a_year_does_not_hold_every_years_figure():
    """A drawing process draws one map per year of its share: its memory must not grow with the years (each 1°
    figure, ~25 MiB, used to stay until a rare cyclic garbage collection). Measured in a fresh interpreter."""
    code = ("import numpy as np, psutil\n"
            "from xmw_ray.infer import plots\n"
            "rng = np.random.default_rng(0)\n"
            "land = rng.random((180, 360)) < 0.3\n"
            "scale = plots.ColourScale('log', 0.1, 100.0, 0.0, 200.0)\n"
            "rss = []\n"
            "for year in range(2000, 2010):\n"
            "    plots.annual_map_bytes(np.where(land, rng.gamma(2, 10, land.shape), np.nan), year, scale, land)\n"
            "    rss.append(psutil.Process().memory_info().rss / 2**20)\n"
            "print(max(rss[2:]) - rss[1])\n")
    growth = float(run_fresh_python(code))
    assert growth < 60, f"{growth:.0f} MiB more after 10 maps than after 2"


def test_map_tells_ocean_from_land_without_wetland_and_outlines_land(tmp_path):
    land = np.zeros((18, 36), dtype=bool)
    land[4:14, 2:32] = True
    flux = np.full((18, 36), np.nan)
    flux[6:10, 5:20] = 50.0
    scale = plots.ColourScale("percentile", 0.0, 100.0, 50.0, 50.0)
    fig = plots.annual_map_figure(flux, 2001, scale, land)
    cbar_axis = fig.axes[-1]
    assert FLUX_UNIT in cbar_axis.get_ylabel()
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["ocean", "land without a mapped wetland", plots.outline_name(True)]
    assert fig.axes[0].collections, "the land outline (a contour) is drawn"
    path = tmp_path / "map.png"
    plots.annual_map_png(flux, 2001, str(path), scale, land)
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    pixels = imread(path)[..., :3].reshape(-1, 3)

    def share(colour: str) -> float:
        return float(np.mean(np.all(np.abs(pixels - np.array(to_rgb(colour))) < 0.01, axis=1)))

    assert share(plots.OCEAN_COLOUR) > 0.05 and share(plots.LAND_COLOUR) > 0.05  # both visible, and distinct
    assert plots.OCEAN_COLOUR != plots.LAND_COLOUR


def test_small_multiples_of_every_year_on_one_scale(tmp_path):
    maps = _years_of_maps()
    scale = plots.shared_scale(maps.__getitem__, list(maps), "percentile")
    land = np.isfinite(maps[2000])
    path = tmp_path / "all.png"
    plots.annual_maps_grid_png(maps.__getitem__, list(maps), str(path), scale, land, land_from_store=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seasonal_cycle_by_band_is_the_weighted_mean_of_each_band():
    lat, _ = grid_coords(10.0)
    monthly = np.full((12, 18, 36), np.nan)
    weight = np.zeros((12, 18, 36))
    months = np.arange(12, dtype=float)
    monthly[:, 15, 0] = 10.0 + months  # 65N: band 60N-90N
    monthly[:, 15, 1] = 30.0 + months
    weight[:, 15, 0], weight[:, 15, 1] = 1.0, 3.0
    monthly[:, 2, 4] = 5.0  # 65S: band 90S-30S, weight only in July
    weight[6, 2, 4] = 2.0
    cycle = plots.seasonal_cycle_by_band([monthly, monthly + 1.0], weight, lat)
    np.testing.assert_allclose(cycle["60N-90N"][0], (1 * (10 + months) + 3 * (30 + months)) / 4)
    np.testing.assert_allclose(cycle["60N-90N"][1], (1 * (11 + months) + 3 * (31 + months)) / 4)
    south = cycle["90S-30S"][0]
    assert south[6] == 5.0 and np.isnan(np.delete(south, 6)).all()  # no wetland area, no mean
    assert np.isnan(cycle["0-30N"]).all()


def test_budget_figure_draws_literature_range_and_truth(tmp_path):
    rows = [(y, {"global": 150.0 + y - 2000, "90S-30S": 10.0, "30S-0": 40.0, "0-30N": 60.0, "30N-60N": 30.0,
                 "60N-90N": 10.0 + y - 2000}) for y in (2000, 2001, 2002)]
    truth = {2000: 140.0, 2001: 141.0, 2002: 139.0, 1999: 120.0}
    fig = plots.budget_figure(rows, truth)
    top = fig.axes[0]
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert any("Saunois et al. 2024" in t and "159 [119-203]" in t for t in labels)
    assert "true budget of the built-in world" in labels
    true_line = next(line for line in top.get_lines() if line.get_label() == "true budget of the built-in world")
    assert list(true_line.get_xdata()) == [2000, 2001, 2002] and list(true_line.get_ydata()) == [140.0, 141.0, 139.0]
    assert all(BUDGET_UNIT in ax.get_ylabel() for ax in fig.axes)
    without = plots.budget_figure(rows)
    assert "true budget of the built-in world" not in [t.get_text() for t in without.axes[0].get_legend().get_texts()]


def test_true_budget_is_read_from_the_worlds_truth_file(tmp_path):
    (tmp_path / "truth.json").write_text(json.dumps({"true_wetland_budget_Tg_per_year": {"2000": 157.5}}))
    assert read_true_budget(tmp_path) == {2000: 157.5} == read_true_budget(tmp_path / "truth.json")
    with pytest.raises(XmwInputError, match="--truth .*no truth.json"):
        read_true_budget(tmp_path / "elsewhere")
    (tmp_path / "bad" / "truth.json").parent.mkdir()
    (tmp_path / "bad" / "truth.json").write_text("{}")
    with pytest.raises(XmwInputError, match="true_wetland_budget_Tg_per_year"):
        read_true_budget(tmp_path / "bad")


def _summary_rows(seeds: int, fractions=(0.25,)) -> list:
    from xmw_ray.train.results import ResultRow
    from xmw_ray.transfer.table import summarise

    rows = []
    for fraction in fractions:
        for strategy, model in (("scratch", "lstm"), ("finetune", "lstm"), ("gbt", "gbt")):
            for setting in ("temporal", "spatial"):
                for seed in range(seeds):
                    rows.append(ResultRow(model=model, setting=setting, fraction=fraction, strategy=strategy, seed=seed,
                                          test={"nse": 0.5 + 0.1 * seed, "rmse": 20.0 + seed, "kge": 0.4}))
    return summarise(rows)


def test_transfer_table_shows_one_seed_without_a_spread_and_rmse_with_units():
    from xmw_ray.transfer.table import markdown

    one = markdown(_summary_rows(1))
    assert "±" not in one and "n=1" in one and f"RMSE ({FLUX_UNIT})" in one
    assert "| 0.500 |" in one
    two = markdown(_summary_rows(2))
    assert "0.550 ± 0.050" in two


def test_skill_plot_with_one_fraction_is_one_panel_of_bars(tmp_path):
    from matplotlib.image import imread

    from xmw_ray.transfer.table import _bars_of_one_fraction, plot

    summary = _summary_rows(1)
    fig = _bars_of_one_fraction(summary, sorted({(r.model, r.setting) for r in summary}))
    assert len(fig.axes) == 1
    assert len(fig.axes[0].patches) == 3 * 2  # (model, strategy) bars x settings, none empty
    assert "n=1" in fig.axes[0].get_title()
    path = tmp_path / "skill_vs_fraction.png"
    plot(summary, path)
    one_panel_width = imread(path).shape[1]
    plot(_summary_rows(1, fractions=(0.25, 1.0)), path)  # several fractions: curves, a panel per model x setting
    assert imread(path).shape[1] > one_panel_width


def test_grid_store_keeps_the_land_mask_that_maps_outline(tmp_path):
    from builders import write_tiny_temmdm

    from xmw_ray.data.grid_store import GridStore, prepare_grid

    truth = write_tiny_temmdm(tmp_path / "src", res=10.0, years=(2000,), seed=4, spoil_cells=0)
    prepare_grid(tmp_path / "src", tmp_path / "grid.zarr", cells_per_chunk=16)
    store = GridStore.open(tmp_path / "grid.zarr")
    land = np.isfinite(truth["static"]["clelev"])  # the writer leaves every static map NaN off land
    np.testing.assert_array_equal(store.land_mask, land)
    assert land[store.cell_ilat, store.cell_ilon].all() and land.sum() > store.n_cells  # land without wetland too
