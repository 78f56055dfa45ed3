"""The report page of a small run (a built-in world, its Grid store with the world's wetland extent, a tiny model
mapped over three years with the world's truth, a search leaderboard and a transfer table written by their own
writers): set-up and definitions present, units on every table of scores, captions in words without this machine's
paths, no Markdown backticks, every table in a scrolling container, every year's map reachable, one seed shown
without a spread."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from xmw_ray.cli import main
from xmw_ray.data.contract import FLUX_UNIT
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.layout import WETLAND_EXTENT_FILE
from xmw_ray.infer.budget import BUDGET_UNIT, read_true_budget
from xmw_ray.infer.run import run_inference
from xmw_ray.models import build_model
from xmw_ray.models.checkpoint import write_checkpoint
from xmw_ray.sim.world import SimulationSpec, simulate

YEARS = (2000, 2002)
NORM = {"dynamic": {"mean": [10.0, 175.0, 0.0, 15.5, 30.0], "std": [6.0, 100.0, 17.0, 8.0, 17.0]},
        "static": {"mean": [5.0] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
        "target": {"mean": 40.0, "std": 10.0}}


@pytest.fixture(scope="module")
def small_run(ray_session, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report_run")
    world = root / "world"
    simulate(SimulationSpec(out=world, res=10.0, years=YEARS, sites=4, seed=1), log=lambda m: None)
    prepare_grid(world, root / "grid.zarr", cells_per_chunk=64, wetland_area=world / WETLAND_EXTENT_FILE)
    torch.manual_seed(0)
    model = build_model("lstm", 5, 10, norm=NORM, hidden_size=4, num_layers=1, dropout=0.0).eval()
    model.features = GridStore.open(root / "grid.zarr").features
    write_checkpoint(root / "ckpt", model, {"model": {"name": "lstm"}}, {})
    run_inference(root / "ckpt", root / "grid.zarr", root / "maps", YEARS, batch_size=256, actors=1,
                  truth_budget=read_true_budget(world))

    from xmw_ray.train.results import ResultRow
    from xmw_ray.transfer.table import write_results
    from xmw_ray.tune.leaderboard import FILES, plot_groups, plot_trials, to_csv, to_markdown

    transfer = root / "runs" / "transfer"
    transfer.mkdir(parents=True)
    write_results([ResultRow(model=m, setting=s, fraction=0.25, seed=0, strategy=st,
                             test={"nse": 0.6, "rmse": 31.5, "kge": 0.5})
                   for m, st in (("lstm", "scratch"), ("lstm", "finetune"), ("gbt", "gbt"))
                   for s in ("temporal", "spatial")], transfer)
    search = root / "runs" / "tune" / "transfer-search"
    search.mkdir(parents=True)
    rows = [ResultRow(rank=i + 1, trial=i + 1, model=m, strategy=st, status="completed", epochs=4, best_epoch=2,
                      val_nse=0.5 - 0.1 * i, val_loss=0.1, lr=0.01, weight_decay=0.0,
                      test={"nse": 0.4, "rmse": 40.0, "kge": 0.3, "pearson_r2": 0.5, "bias": -2.0, "n": 600},
                      params=json.dumps({"model": {"hidden_size": 8, "dropout": 0.0123456789} | {
                          f"long_parameter_name_{k}": 0.123456789 for k in range(12)}}),
                      checkpoint=str(search / "trials" / f"t{i}" / "checkpoint_000003"))
            for i, (m, st) in enumerate((("lstm", "scratch"), ("tcn", "adversarial")))]
    (search / FILES["markdown"]).write_text(to_markdown(rows, "transfer-search"))
    (search / FILES["csv"]).write_text(to_csv(rows))
    plot_trials(rows, search / FILES["plot_trials"])
    plot_groups(rows, search / FILES["plot_groups"])
    out = root / "report.html"
    assert main(["report", str(world), str(root / "runs"), str(root / "maps"), "--out", str(out)]) == 0
    return {"root": root, "page": out.read_text()}


class _Page(HTMLParser):
    """Tables with the classes of their enclosing elements, captions and headings of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []
        self.tables_in_wrap: list[bool] = []
        self.captions: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag == "table":
            self.tables_in_wrap.append(any(t == "div" and "table-wrap" in c for t, c in self.stack))
        if tag == "figcaption":
            self._in = "caption"
            self.captions.append("")
        self.stack.append((tag, cls))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break
        if tag == "figcaption":
            self._in = None

    def handle_data(self, data):
        if self._in == "caption":
            self.captions[-1] += data
        self.text.append(data)


def test_report_of_a_small_run_is_a_page_to_forward(small_run):
    page, root = small_run["page"], small_run["root"]
    parsed = _Page()
    parsed.feed(page)
    text = "".join(parsed.text)
    # set-up and definitions
    assert "Set-up" in text and "Definitions" in text
    assert re.search(r"built-in simulated world, seed 1, 10\.0° grid, years 2000–2002, \d+ pseudo-observation", text)
    assert "strategies finetune, scratch" in text and "n=1" in text
    for term in ("NSE (Nash–Sutcliffe efficiency, unitless)", "KGE (Kling–Gupta efficiency, unitless)",
                 f"RMSE ({FLUX_UNIT})", f"budget ({BUDGET_UNIT})"):
        assert term in text, term
    # units on scores and budget
    assert f"test RMSE ({FLUX_UNIT})" in text and f"RMSE ({FLUX_UNIT})" in text and f"global ({BUDGET_UNIT})" in text
    # one seed: the value alone
    assert "± 0.000" not in text and "0.600" in text
    # captions are words; no path of this machine anywhere in the visible text; no Markdown backticks
    assert len(parsed.captions) >= 8
    assert all(c.strip() and not re.search(r"(^|\s)/\w", c) and ".png" not in c for c in parsed.captions)
    assert str(root) not in page and "/tmp/" not in text
    assert "`" not in text
    assert "checkpoint_000003" in text  # the best checkpoint, shown relative to the page
    # every table scrolls inside its container instead of widening the page
    assert parsed.tables_in_wrap and all(parsed.tables_in_wrap)
    assert ".table-wrap{max-width:100%;overflow-x:auto" in page
    # every year reachable: the small multiples and one full-size map per year, on the shared scale
    for year in range(YEARS[0], YEARS[1] + 1):
        assert f"Annual mean flux per unit wetland area ({FLUX_UNIT}), {year}, on the colour scale shared" in text
    assert "of every mapped year on one shared colour scale" in text
    assert "Saunois et al. 2024" in text and "159 [119–203]" in text
    assert "seasonal cycle of the mapped flux" in text


def test_maps_of_the_small_run_have_the_figures_and_one_scale(small_run):
    plots = small_run["root"] / "maps" / "plots"
    names = {p.name for p in plots.iterdir()}
    assert {"annual_mean_all_years.png", "seasonal_cycle_by_band.png", "budget.png", "map_scale.json",
            *(f"annual_mean_{y}.png" for y in range(YEARS[0], YEARS[1] + 1))} <= names
    scale = json.loads((plots / "map_scale.json").read_text())
    assert scale["kind"] == "percentile" and scale["land_mask"] is True and scale["years"] == [2000, 2001, 2002]
    land = GridStore.open(small_run["root"] / "grid.zarr").land_mask
    assert land is not None and 0 < land.mean() < 1  # the world has ocean and land


def test_another_map_scale_redraws_every_map_without_recomputing(small_run):
    root = small_run["root"]
    plots = root / "maps" / "plots"
    before = {y: (plots / f"annual_mean_{y}.png").read_bytes() for y in range(YEARS[0], YEARS[1] + 1)}
    res = run_inference(root / "ckpt", root / "grid.zarr", root / "maps", YEARS, actors=1, map_scale="log")
    assert res.computed == []
    assert json.loads((plots / "map_scale.json").read_text())["kind"] in ("log", "linear")
    after = {y: (plots / f"annual_mean_{y}.png").read_bytes() for y in before}
    assert all(after[y] != before[y] for y in before)
    assert np.all([b[:8] == b"\x89PNG\r\n\x1a\n" for b in after.values()])


def test_infer_refuses_a_truth_that_is_not_a_world(small_run, tmp_path, capsys):
    root = small_run["root"]
    rc = main(["infer", "--checkpoint", str(root / "ckpt"), "--grid", str(root / "grid.zarr"),
               "--out", str(tmp_path / "m.zarr"), "--truth", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("xmw: error: --truth") and "\n" not in err
    assert not (tmp_path / "m.zarr").exists()


def test_report_paths_are_relative_to_the_page(tmp_path):
    from xmw_ray.report.html import _Paths

    paths = _Paths(tmp_path)
    assert paths.show(tmp_path / "runs" / "best") == str(Path("runs") / "best")
    assert paths.in_text(f"checkpoint `{tmp_path}/runs/x/ck`") == "checkpoint `runs/x/ck`"


_BROWSERS = ("chromium-headless-shell", "chromium", "google-chrome", "chrome")
_LAYOUT_PROBE = """<script>
document.querySelectorAll('details').forEach(d => d.open = true);
const vw = document.documentElement.clientWidth;
const tables = [...document.querySelectorAll('table')].map(t => {
  const wrap = t.closest('.table-wrap'); const box = (wrap || t).getBoundingClientRect();
  return {right: box.right, left: box.left, wraps: !!wrap, table_width: t.scrollWidth};
});
const out = document.createElement('pre'); out.id = 'xmw-layout';
out.textContent = JSON.stringify({vw: vw, page_width: document.documentElement.scrollWidth, tables: tables,
  images: [...document.images].map(i => i.complete && i.naturalWidth > 0)});
document.body.appendChild(out);
</script>"""


def _browser() -> str | None:
    import shutil

    return next((path for name in _BROWSERS if (path := shutil.which(name))), None)


def test_report_renders_in_a_headless_browser_without_overflow(small_run, tmp_path):
    """In a real browser at 1,400 px: the page never scrolls sideways, every table's box fits the window (a table
    wider than that would scroll inside its container), every figure decodes; a screenshot is taken. Needs a Chromium binary (Debian:
    ``apt-get install chromium-headless-shell``); skipped where there is none."""
    import html as html_lib
    import subprocess

    browser = _browser()
    if browser is None:
        pytest.skip("no headless Chromium on this machine (apt-get install chromium-headless-shell)")
    page = tmp_path / "probe.html"
    page.write_text(small_run["page"].replace("</body>", _LAYOUT_PROBE + "</body>"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,900",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="xmw-layout">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    layout = json.loads(html_lib.unescape(found.group(1)))
    assert layout["vw"] == 1400 and layout["page_width"] <= layout["vw"], layout
    assert layout["tables"] and all(t["wraps"] and t["left"] >= 0 and t["right"] <= layout["vw"]
                                    for t in layout["tables"]), layout["tables"]
    assert layout["images"] and all(layout["images"])
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", (small_run["root"] / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[1] == 1400 and pixels[..., :3].std() > 0.05  # drawn, not a blank page
