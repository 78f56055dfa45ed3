"""``xmw report``: one HTML page a scientist can forward: the set-up, the definitions of the scores, the search
leaderboard, the transfer table, the budget, the seasonal cycle and every year's map.

It reads the files the other rooms write (it computes nothing): ``truth.json`` (the built-in world), the flux-map
store's attributes, ``budget.csv`` and ``plots/`` (infer), ``leaderboard.csv`` (tune), ``summary.csv`` /
``results.csv`` and each run's ``config.json`` (transfer), and the figures beside them. Score tables are drawn from
the CSV rows (``xmw_ray/train/results.py``) by the same functions that write their Markdown, never re-parsed. Images
are embedded, so the page is a single file that can be mailed or archived. Captions are words, and a path in the
text is shown relative to the page's folder, never as this machine's absolute path. Every table sits in a
container that scrolls sideways instead of widening the page.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd

from xmw_ray import console
from xmw_ray.data.contract import FLUX_UNIT
from xmw_ray.data.layout import TRUTH_FILE
from xmw_ray.errors import XmwInputError
from xmw_ray.infer.budget import BUDGET_UNIT, LITERATURE_BUDGET, TRUE_BUDGET_KEY
from xmw_ray.infer.plots import SCALE_FILE
from xmw_ray.storage import refuse_foreign_file, write_text_atomic
from xmw_ray.train.results import read_csv

T = TypeVar("T")

#: Column heads of the leaderboard and transfer tables, in words and with units.
HEADS = {
    "val_nse": "validation NSE", "val_loss": "validation loss (scaled)", "test_nse": "test NSE",
    "test_rmse": f"test RMSE ({FLUX_UNIT})", "test_kge": "test KGE", "test_pearson_r2": "test r²",
    "test_bias": f"test bias ({FLUX_UNIT})", "test_n": "test days (n)", "test_median_nse": "test NSE (median over towers)",
    "best_epoch": "best epoch", "weight_decay": "weight decay", "lr": "learning rate", "params": "hyper-parameters",
}
#: What each figure the pipeline writes shows (by file name); others get their name in words.
CAPTIONS = {
    "search_trials.png": "Best validation NSE of each search trial in start order, coloured by model; the line is "
                         "the best so far.",
    "search_by_model_strategy.png": "Best validation NSE of every search trial, grouped by model and transfer "
                                    "strategy; the bar marks the best of each group.",
    "skill_vs_fraction.png": "Test NSE of each transfer strategy on the towers' test split: against the fraction of "
                             "the observation training data used, or as bars where there is one fraction.",
    "budget.png": "Global wetland CH4 budget by year (Tg CH4 yr⁻¹, top) against the bottom-up wetland estimate of "
                  f"{LITERATURE_BUDGET['citation']}, {LITERATURE_BUDGET['central']:g} "
                  f"[{LITERATURE_BUDGET['low']:g}–{LITERATURE_BUDGET['high']:g}] Tg CH4 yr⁻¹ (shaded), and, when "
                  "the maps were made with the built-in world's truth (infer --truth), its true budget, and for an "
                  "ensemble the range from its lowest to its highest member's budget (grey); below, the latitude "
                  "bands.",
    "seasonal_cycle_by_band.png": f"Mean seasonal cycle of the mapped flux ({FLUX_UNIT}) in each latitude band, "
                                  "weighted by each cell's wetland area (cell area without a wetland extent); the "
                                  "shading spans the range over the years.",
    "annual_mean_all_years.png": f"Annual mean flux per unit wetland area ({FLUX_UNIT}) of every mapped year on "
                                 "one shared colour scale. Blue: ocean; sand: land without a mapped wetland; grey "
                                 "line: land outline.",
    "annual_spread_all_years.png": f"Spread of the ensemble's members ({FLUX_UNIT}): for each cell and year the "
                                   "standard deviation across the members of their annual-mean flux, on one colour "
                                   "scale of its own shared by all years; large where the members disagree.",
}
_ANNUAL = re.compile(r"annual_mean_(\d{4})\.png")
_ABS_PATH = re.compile(r"(?<![\w.:/])(/[^\s`'\"<>|,;()]+)")
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1320px;margin:auto;padding:0 16px;line-height:1.4;color:#222}"
    ".table-wrap{max-width:100%;overflow-x:auto;margin:8px 0}"
    "table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:2px 4px;vertical-align:top}td{white-space:nowrap}"
    "td.long{white-space:normal;min-width:14em;max-width:36em;overflow-wrap:anywhere}th{max-width:8em}"
    "th{background:#f3f3f3}img{max-width:100%;height:auto}figure{margin:12px 0}"
    "figcaption{font-size:13px;color:#444;max-width:60em}dt{font-weight:bold;margin-top:6px}"
    "details summary{cursor:pointer;font-weight:bold;margin:8px 0}"
    ".years figure{display:inline-block;width:48%;vertical-align:top;margin:4px}"
)


class _Paths:
    """Shows paths relative to the report's folder (never this machine's absolute paths)."""

    def __init__(self, base: Path):
        self.base = base.resolve()

    def show(self, path: str | Path) -> str:
        p = Path(path)
        if not p.is_absolute():
            return str(p)
        rel = os.path.relpath(p, self.base)
        return rel if not rel.startswith("../../") else p.name

    def in_text(self, text: str) -> str:
        return _ABS_PATH.sub(lambda m: self.show(m.group(1)), text)


#: A cell longer than this (characters of HTML) wraps anywhere (JSON hyper-parameters); shorter ones never break.
LONG_CELL = 40


def _table(head: list[str], body: list[list[str]]) -> str:
    def cell(c: str) -> str:
        return f'<td class="long">{c}</td>' if len(c) > LONG_CELL else f"<td>{c}</td>"

    return ('<div class="table-wrap"><table><tr>' + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
            + "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in body)
            + "</table></div>")


def _cells(cells: list[str], paths: _Paths) -> list[str]:
    return [html.escape(paths.in_text(c)) for c in cells]


def _leaderboard_html(path: Path, paths: _Paths) -> str:
    """A search's ``leaderboard.csv`` as the leaderboard table (the columns ``leaderboard.md`` shows)."""
    from xmw_ray.tune.leaderboard import best_line, best_of, shown_table, title

    rows = read_csv(path)
    cols, body = shown_table(rows)
    parts = [f"<h3>{html.escape(title(path.parent.name, rows))}</h3>",
             _table([html.escape(HEADS.get(c, c)) for c in cols], [_cells(r, paths) for r in body])]
    best = best_of(rows)
    if best is not None:
        parts.append(f"<p>{html.escape(best_line(best))}<code>{html.escape(paths.in_text(best.checkpoint))}</code></p>")
    return "\n".join(parts)


def _summary_html(path: Path, paths: _Paths) -> str:
    """A transfer experiment's ``summary.csv`` as its table (the one ``summary.md`` shows) and the note."""
    from xmw_ray.transfer.table import summary_table

    head, body, note = summary_table(read_csv(path))
    return "\n".join([_table([html.escape(HEADS.get(c, c)) for c in head], [_cells(r, paths) for r in body]),
                      f"<p>{html.escape(note)}</p>"])


def _caption(png: Path) -> str:
    if png.name in CAPTIONS:
        return CAPTIONS[png.name]
    m = _ANNUAL.fullmatch(png.name)
    if m:
        shared = (png.parent / SCALE_FILE).is_file()  # maps drawn before the shared scale have one scale each
        return (f"Annual mean flux per unit wetland area ({FLUX_UNIT}), {m.group(1)}"
                + (", on the colour scale shared by all years." if shared else ", on its own colour scale."))
    return png.stem.replace("_", " ").capitalize() + "."


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    caption = _caption(path)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


# --- the set-up --------------------------------------------------------------------------------------------------
def _span(values) -> str:
    values = sorted(values)
    return f"{values[0]}–{values[-1]}" if values and values[0] != values[-1] else (str(values[0]) if values else "")


def _world_rows(truth_file: Path) -> list[tuple[str, str]]:
    t = json.loads(truth_file.read_text())
    budget = [float(v) for v in t.get(TRUE_BUDGET_KEY, {}).values()]
    towers = t.get("towers", {}).get("sites", {})
    rows = [("world", f"built-in simulated world, seed {t.get('seed')}, {t.get('res')}° grid, years "
                      f"{_span(t.get('years', []))}, {len(towers)} pseudo-observation towers")]
    if budget:
        rows.append(("true budget of the world", f"{min(budget):.0f}–{max(budget):.0f} {BUDGET_UNIT} "
                                                  f"(mean {sum(budget) / len(budget):.0f})"))
    if "wetland_area_km2" in t:
        rows.append(("true wetland area", f"{t['wetland_area_km2'] / 1e6:.2f} million km²"))
    return rows


def _maps_rows(attrs: dict) -> list[tuple[str, str]]:
    model = json.loads(attrs.get("model", "{}") or "{}")  # the model's config: name and hyper-parameters
    skip = {"name", "n_dynamic", "n_static", "norm", "members"}
    params = ", ".join(f"{k}={v}" for k, v in sorted(model.items()) if k not in skip and v not in (None, False))
    if model.get("members"):
        params = f"{len(model['members'])} members" + (f", {params}" if params else "")
    extent = attrs.get("wetland_extent")
    return [
        ("maps", f"{attrs.get('grid_cells')} wetland cells at {attrs.get('grid_resolution_deg')}°, years "
                 f"{_span(attrs.get('years', []))}, daily flux in {FLUX_UNIT}"),
        ("mapped model", f"{model.get('name', '?')}" + (f" ({params})" if params else "")),
        ("wetland extent of the budget", Path(extent).name if extent else "none: no budget"),
        *([("uncertainty", _uncertainty(attrs))] if model.get("members") else []),
    ]


def _uncertainty(attrs: dict) -> str:
    """What the page shows of an ensemble's disagreement: its spread maps and budget range, or (maps made before
    xmw infer kept them) that there are none."""
    members = int(attrs.get("ensemble_members") or 0)
    if not members:
        return ("the maps and the budget are the ensemble's mean; these maps were made without the members' spread, "
                "so no band or spread map is shown")
    return (f"the maps and the budget are the mean of the ensemble's {members} members; the members' spread "
            "(standard deviation of their annual-mean flux, cell by cell) is mapped, and the budget figure and table "
            "show the lowest and highest member's budget")


def _describe_split(split: dict) -> str:
    kind = split.get("kind", "?")
    years = f"train years {_span(split.get('train_years', []))}, test years {_span(split.get('test_years', []))}"
    if kind == "spatial":
        text = f"spatial: towers in {split.get('n_folds')} folds, fold {split.get('test_fold')} held out for test"
    elif kind == "all":
        text = "all samples (deployment)"
    else:
        text = f"{kind.replace('_', ' ')}: {years}"
    val = float(split.get("val_fraction") or 0.0)
    return text + (f"; validation {val:.0%} of the training towers' samples" if val else "")


def _transfer_rows(folder: Path) -> list[tuple[str, str]]:
    rows = read_csv(folder / "results.csv")
    if not rows:
        return []
    learned = [r for r in rows if r.strategy != "gbt"]
    baseline = " (and a gradient-boosted-trees baseline)" if len(learned) < len(rows) else ""
    seeds = sorted({r.seed for r in rows if r.seed is not None})
    out = [("transfer experiment", f"models {', '.join(sorted({r.model for r in learned}))}; strategies "
                                   f"{', '.join(sorted({r.strategy for r in learned}))}{baseline}"),
           ("observation training fractions", ", ".join(str(f) for f in sorted({r.fraction for r in rows
                                                                                if r.fraction is not None}))),
           ("seeds", f"{', '.join(map(str, seeds))} (n={len(seeds)} per row of the table)")]
    for setting in sorted({r.setting for r in learned}):
        for r in learned:
            if r.setting != setting or not r.checkpoint:
                continue
            config = folder / "runs" / Path(r.checkpoint).parent.name / "best" / "config.json"
            try:
                split = json.loads(config.read_text(encoding="utf-8")).get("data", {}).get("split", {})
            except (OSError, ValueError, AttributeError):  # not there, cut short, or not a config: the next run's
                continue
            out.append((f"split '{setting}'", _describe_split(split)))
            break
    return out


def _search_rows(csv_path: Path) -> list[tuple[str, str]]:
    rows = read_csv(csv_path)
    if not rows:
        return []
    return [("search", f"{len(rows)} trials over models {', '.join(sorted({r.model for r in rows}))} and "
                       f"strategies {', '.join(sorted({r.strategy for r in rows}))}, ranked by validation NSE")]


DEFINITIONS = (
    ("NSE (Nash–Sutcliffe efficiency, unitless)",
     "1 − Σ(p − o)² / Σ(o − ō)² over the observed days (p prediction, o observation, ō their mean): 1 is perfect, "
     "0 is no better than predicting the observed mean, below 0 worse. Pooled over every observed day of the "
     "split unless named median (median over towers)."),
    ("KGE (Kling–Gupta efficiency, unitless)",
     "1 − √((r − 1)² + (σp/σo − 1)² + (μp/μo − 1)²) (Gupta et al. 2009): r correlation, σ spread, μ mean; 1 is "
     "perfect."),
    (f"RMSE ({FLUX_UNIT})", "√(mean (p − o)²) over the observed days."),
    (f"bias ({FLUX_UNIT})", "mean (p − o): positive when the model emits too much."),
    ("r² (unitless)", "squared Pearson correlation of predictions and observations."),
    (f"flux ({FLUX_UNIT})", "CH4 emitted per square metre of wetland per day (the maps are per unit wetland area)."),
    (f"budget ({BUDGET_UNIT})", "Σ over cells and days of flux × the cell's wetland area in that month, in teragrams "
                                "of CH4 per year; latitude bands by cell centre."),
    ("splits", "train: what the model learns from; validation: what picks the epoch and the best run; test: "
               "held out, scored once. Scores in the tables are on the test split unless named validation."),
)


#: What goes wrong reading a file that only shares a name with one of ours (a user's own ``budget.csv``, a
#: ``truth.json`` of another tool): it is left off the page with a note, the rest is reported.
_NOT_OURS = (XmwInputError, ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError)


def _read_or_skip(path: Path, draw: Callable[..., T], *args: object, empty: T) -> T:
    """``draw(path, *args)``, or ``empty`` and one line on stderr naming the file when it is not one of ours:
    the folders are searched by file name, so a name alone does not make a file ours, and one such file must
    neither end the report nor stop the rest from being shown."""
    try:
        return draw(path, *args)
    except _NOT_OURS as exc:
        reason = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).removeprefix(f"{path}: ")
        console.err(f"xmw report: {path}: left off the page, not readable as xmw's {path.name} ({reason})")
        return empty


def _setup(found: list[Path], paths: _Paths) -> str:
    rows: list[tuple[str, str]] = []
    for f in sorted({p for folder in found for p in folder.rglob(TRUTH_FILE)}):
        rows += _read_or_skip(f, _world_rows, empty=[])
    for store in sorted({p.parent for folder in found for p in folder.rglob("_done")}):  # flux-map stores
        try:
            attrs = json.loads((store / "zarr.json").read_text()).get("attributes", {})
        except (OSError, ValueError):
            continue
        if str(attrs.get("xmw_format", "")).startswith("xmw-fluxmaps"):
            rows += _maps_rows(attrs)
    for f in sorted({p.parent for folder in found for p in folder.rglob("results.csv")}):
        if (f / "summary.csv").is_file():
            rows += _read_or_skip(f / "results.csv", lambda p: _transfer_rows(p.parent), empty=[])
    for f in sorted({p for folder in found for p in folder.rglob("leaderboard.csv")}):
        rows += _read_or_skip(f, _search_rows, empty=[])
    if not rows:
        return ""
    return "<h2>Set-up</h2>" + _table(["", "what"], [[html.escape(k), html.escape(v)] for k, v in rows])


def _definitions() -> str:
    return "<h2>Definitions</h2><dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                                 for k, v in DEFINITIONS) + "</dl>"


SECTIONS = (
    ("Search leaderboard (Ray Tune)", "leaderboard.csv", _leaderboard_html,
     "Each trial trains one model with one transfer strategy for a few epochs; trials are ranked by the NSE on the "
     "towers' validation split. Test scores are shown for information only: they chose nothing."),
    ("Transfer learning results", "summary.csv", _summary_html,
     "Each row is one model, observation split (setting), training fraction and strategy, scored on the towers' "
     "test split."),
)


def _budget_section(path: Path, paths: _Paths) -> str:
    table = pd.read_csv(path)
    head = [html.escape(c if c == "year" else f"{c} ({BUDGET_UNIT})") for c in table.columns]
    body = [[str(int(v)) if c == "year" else f"{v:.2f}" for c, v in zip(table.columns, row, strict=True)]
            for row in table.itertuples(index=False)]
    parts = [f"<h2>Global wetland CH4 budget ({BUDGET_UNIT})</h2>",
             f"<p>From <code>{html.escape(paths.show(path))}</code>: the mapped flux × wetland area, summed over the "
             "year, globally and by latitude band.</p>"]
    plots = path.parent / "plots"
    for name in ("budget.png", "seasonal_cycle_by_band.png", "annual_mean_all_years.png",
                 "annual_spread_all_years.png"):  # the last only for an ensemble
        if (plots / name).is_file():
            parts.append(_img(plots / name))
    parts.append(f"<details><summary>Budget table, {len(body)} years</summary>{_table(head, body)}</details>")
    years = sorted(plots.glob("annual_mean_[0-9][0-9][0-9][0-9].png"))
    if years:
        parts.append(f"<details><summary>Every year's map, full size ({len(years)} years, one colour scale)"
                     "</summary><div class='years'>" + "".join(_img(p) for p in years) + "</div></details>")
    return "".join(parts)


#: How every page begins, and the mark that names it ours (pages written before the mark begin with ``PAGE_HEAD``
#: and ``<title>``): ``--out`` replaces only such a page.
PAGE_HEAD = "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
GENERATOR = "<meta name='generator' content='xmw report'>"


def build_report(folders: list[Path], title: str = "Wetland CH4 emission: xmw_ray report",
                 base: Path | None = None) -> str:
    """The HTML page for everything found under ``folders``; paths are shown relative to ``base`` (the page's
    folder; default the working directory)."""
    found = [f for f in folders if f.exists()]
    if not found:
        raise XmwInputError(f"{', '.join(map(str, folders))}: nothing to report (no such folder)")
    paths = _Paths(base or Path.cwd())
    content: list[str] = []
    for heading, name, draw, intro in SECTIONS:
        for path in sorted(p for f in found for p in f.rglob(name)):
            table = _read_or_skip(path, draw, paths, empty="")
            if not table:
                continue
            content.append(f"<h2>{heading}</h2><p>{html.escape(intro)} From "
                           f"<code>{html.escape(paths.show(path.parent))}</code>.</p>")
            content.append(table)
            for png in sorted(path.parent.glob("*.png")):
                content.append(_img(png))
            best = path.parent / "best"
            if best.exists():
                content.append(f"<p>Best checkpoint: <code>{html.escape(paths.show(best))}</code></p>")
    for path in sorted(p for f in found for p in f.rglob("budget.csv")):
        content.append(_read_or_skip(path, _budget_section, paths, empty=""))
    content = [c for c in content if c]
    if not content:
        raise XmwInputError(f"{', '.join(map(str, found))}: no leaderboard, transfer table or budget found")
    parts = [f"<h1>{html.escape(title)}</h1>", _setup(found, paths), _definitions(), *content]
    return (f"{PAGE_HEAD}{GENERATOR}<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")


def is_report_page(head: bytes) -> bool:
    return head.startswith((f"{PAGE_HEAD}{GENERATOR}".encode(), f"{PAGE_HEAD}<title>".encode()))


def write_report(folders: list[Path], out: Path) -> Path:
    refuse_foreign_file(out, is_report_page, "a page of xmw report", "--out")
    page = build_report(folders, base=Path(out).resolve().parent)
    write_text_atomic(out, page)
    return out
