"""PNG figures of a flux-map store: annual-mean maps on one colour scale shared by every year (one PNG per year
and one small-multiples grid of all years), the seasonal cycle by latitude band, and the budget over the years
against the literature range and, on the built-in world, its true budget.

Maps show three things apart: ocean (pale blue), land without a mapped wetland (pale sand) and the flux of each
mapped cell, with the land outline drawn as a contour of the land mask. The colour scale comes from every year's
annual map, read one year at a time (``shared_scale``), so years compare by colour.

Figures are drawn with matplotlib's Agg canvas (no display, no global backend switch) and written through a
temporary name, so a crash never leaves a truncated PNG.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xmw_ray.data.contract import FLUX_UNIT
from xmw_ray.infer.budget import (
    BAND_NAMES,
    BUDGET_UNIT,
    LAT_BANDS,
    LITERATURE_BUDGET,
    band_of_lat,
    member_range,
)
from xmw_ray.infer.maps import put_bytes
from xmw_ray.infer.options import MAP_SCALES
from xmw_ray.storage import write_bytes_atomic

#: Beside the maps in ``plots/``: the colour scale they were drawn with (when it changes, every map is redrawn).
SCALE_FILE = "map_scale.json"
OCEAN_COLOUR = "#d4e3ee"
LAND_COLOUR = "#ebe5d6"
OUTLINE_COLOUR = "#4d4d4d"
CMAP = "viridis"
#: Percentiles (over every cell of every year) that bound the ``percentile`` scale; ``log`` starts at the first.
PERCENTILE_RANGE = (2.0, 98.0)
LOG_LOW_PERCENTILE = 1.0
_HIST_BINS = 8192
MONTH_LABELS = ("J", "F", "M", "A", "M", "J", "J", "A", "S", "O", "N", "D")
#: What the annual maps show: the (ensemble's) mean flux, or for an ensemble each cell's spread across its members.
MEAN_TITLE = "Annual mean wetland CH4 emission per unit wetland area"


def spread_title(members: int) -> str:
    return f"Spread (standard deviation across {members} ensemble members) of the annual mean wetland CH4 emission"


#: One colour per latitude band (south to north), the same on every figure.
BAND_COLOURS = dict(zip(BAND_NAMES, ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"), strict=True))


def _ordinal(q: float) -> str:
    n = int(q)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{q:g}{suffix}"


def _png(fig, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes; the figure is emptied and its canvas's pixel buffer dropped after. Why: a Matplotlib
    figure is a web of reference cycles that only Python's rare cyclic collection frees, so a process drawing a map
    per year held every year's figure (~25 MiB each at 1°; ``bench/scale.py``'s profile found the drawing processes
    growing with the years). Emptying it frees its artists and arrays at once, without a full collection (0.1 s or
    more in a process that holds torch and Ray)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    fig.clear()
    canvas.renderer, canvas._lastKey = None, None  # the next draw (none is expected) makes a new buffer
    return buf.getvalue()


# --- the shared colour scale ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColourScale:
    """One colour scale for every map of a run: ``kind`` (``MAP_SCALES``), its limits and what it clips."""

    kind: str
    vmin: float
    vmax: float
    data_min: float
    data_max: float

    def norm(self):
        from matplotlib.colors import LogNorm, Normalize

        if self.kind == "log":
            return LogNorm(vmin=self.vmin, vmax=self.vmax)
        return Normalize(vmin=self.vmin, vmax=self.vmax)

    def extend(self) -> str:
        """Colour-bar arrows for values beyond the limits (``neither``/``min``/``max``/``both``)."""
        low, high = self.data_min < self.vmin, self.data_max > self.vmax
        return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get((low, high), "both")

    def label(self) -> str:
        """Colour-bar label: the unit, then how the scale was chosen."""
        lo, hi = PERCENTILE_RANGE
        how = {"percentile": f"linear, {_ordinal(lo)}-{_ordinal(hi)} percentile of all years",
               "linear": "linear, full range of all years",
               "log": f"log, from the {_ordinal(LOG_LOW_PERCENTILE)} percentile of positive values"}[self.kind]
        return f"{FLUX_UNIT} ({how})"

    def record(self) -> dict[str, float | str]:
        return asdict(self)


def _percentile_from_hist(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The value below which ``q`` % of the histogrammed values lie (upper edge of the bin that reaches it)."""
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, q / 100.0 * cum[-1], side="left"))
    return float(edges[min(k + 1, len(edges) - 1)])


def shared_scale(read_map: Callable[[int], np.ndarray], years: Sequence[int], kind: str) -> ColourScale:
    """One colour scale over every year's annual map, reading one map at a time (two passes: range, then a
    fine histogram for the percentiles), so memory does not grow with the number of years."""
    if kind not in MAP_SCALES:
        raise ValueError(f"unknown map scale {kind!r}")
    lo, hi, lo_pos, n, n_pos = np.inf, -np.inf, np.inf, 0, 0
    for year in years:
        v = np.asarray(read_map(year), dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            lo, hi, n = min(lo, float(v.min())), max(hi, float(v.max())), n + v.size
            pos = v[v > 0]
            if pos.size:
                lo_pos, n_pos = min(lo_pos, float(pos.min())), n_pos + pos.size
    if n == 0:
        return ColourScale(kind if kind != "log" else "linear", 0.0, 1.0, 0.0, 1.0)
    if kind == "log" and n_pos == 0:
        kind = "linear"  # nothing positive to put on a log axis
    if kind == "linear":
        vmin = min(0.0, lo)
        return ColourScale(kind, vmin, max(hi, vmin + 1e-12), lo, hi)
    if kind == "log":
        edges = np.linspace(np.log10(lo_pos), np.log10(hi) + 1e-12, _HIST_BINS + 1)
    else:
        edges = np.linspace(lo, hi + 1e-12 * max(1.0, abs(hi)), _HIST_BINS + 1)
    counts = np.zeros(_HIST_BINS, dtype=np.int64)
    for year in years:
        v = np.asarray(read_map(year), dtype=np.float64)
        v = v[np.isfinite(v)]
        if kind == "log":
            v = np.log10(v[v > 0])
        counts += np.histogram(v, bins=edges)[0]
    if kind == "log":
        vmin = 10.0 ** _percentile_from_hist(counts, edges, LOG_LOW_PERCENTILE)
        return ColourScale(kind, vmin, max(hi, vmin * 1.0001), lo, hi)
    p_lo, p_hi = (_percentile_from_hist(counts, edges, q) for q in PERCENTILE_RANGE)
    vmin = min(0.0, p_lo)
    return ColourScale(kind, vmin, max(p_hi, vmin + 1e-12), lo, hi)


# --- one map panel --------------------------------------------------------------------------------------------
def _outline_grid(land: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The land mask repeated k× per cell (k so the finer grid stays ≤ 1,440 columns) and its cell-centre
    coordinates: the 0.5 contour then follows cell edges instead of cutting corners between cell centres."""
    nlat, nlon = land.shape
    k = int(max(1, min(8, 1440 // nlon)))
    fine = np.kron(land.astype(np.float32), np.ones((k, k), dtype=np.float32))
    lat = -90.0 + (np.arange(nlat * k) + 0.5) * 180.0 / (nlat * k)
    lon = -180.0 + (np.arange(nlon * k) + 0.5) * 360.0 / (nlon * k)
    return lon, lat, fine


def _draw_map(ax, values: np.ndarray, scale: ColourScale, land: np.ndarray, outline_width: float = 0.6):
    """Ocean, land without a mapped cell, the flux of mapped cells and the land outline; returns the flux image."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    extent = (-180, 180, -90, 90)
    ax.set_facecolor(OCEAN_COLOUR)
    ax.imshow(np.ma.masked_where(~land, np.ones(land.shape)), origin="lower", extent=extent,
              cmap=ListedColormap([LAND_COLOUR]), interpolation="nearest")
    data = np.ma.masked_invalid(values)
    if scale.kind == "log":  # values at or below zero show as the colour bar's lower arrow, not as bare land
        data = np.ma.where(data <= scale.vmin, scale.vmin * 0.5, data)
    cmap = matplotlib.colormaps[CMAP].with_extremes(under="#f0027f" if scale.kind == "log" else None)
    im = ax.imshow(data, origin="lower", extent=extent, cmap=cmap, norm=scale.norm(), interpolation="nearest")
    if land.any() and not land.all():
        lon, lat, fine = _outline_grid(land)
        ax.contour(lon, lat, fine, levels=[0.5], colors=OUTLINE_COLOUR, linewidths=outline_width)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_aspect("equal")
    return im


def _legend_patches(ax, outline: str) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor=OCEAN_COLOUR, edgecolor="0.6", label="ocean"),
                       Patch(facecolor=LAND_COLOUR, edgecolor="0.6", label="land without a mapped wetland"),
                       Line2D([], [], color=OUTLINE_COLOUR, linewidth=1, label=outline)],
              loc="lower left", fontsize=7, framealpha=0.9)


def outline_name(from_store: bool) -> str:
    return "land outline (land mask of the Grid store)" if from_store else "outline of the mapped cells"


def annual_map_png(annual: np.ndarray, year: int, path: str, scale: ColourScale, land: np.ndarray,
                   land_from_store: bool = True, title: str = MEAN_TITLE) -> None:
    """Map of one year's annual-mean flux ``(nlat, nlon)`` (row 0 = south, column 0 = 180°W) on ``scale`` (or,
    with ``title = spread_title(k)``, of an ensemble's member spread: the same map, another quantity)."""
    put_bytes(path, annual_map_bytes(annual, year, scale, land, land_from_store, title))


def annual_map_bytes(annual: np.ndarray, year: int, scale: ColourScale, land: np.ndarray,
                     land_from_store: bool = True, title: str = MEAN_TITLE) -> bytes:
    """The PNG :func:`annual_map_png` writes, as bytes (what a drawing process returns: the caller writes it)."""
    return _png(annual_map_figure(annual, year, scale, land, land_from_store, title))


#: Fewer maps than this are drawn in the calling process: starting a drawing process (Python, NumPy, Matplotlib:
#: ~0.5 s) costs about what one map does.
POOL_MIN_MAPS = 3
#: At most this many drawing processes (each holds Matplotlib, ~100 MB), whatever the cores.
MAX_DRAWING_PROCESSES = 8
#: The module a drawing process runs (``python -m``).
DRAWING_MODULE = __name__


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: a container's or batch job's limit), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS, Windows)
        return os.cpu_count() or 1


class YearMapDrawer:
    """Year maps drawn by separate processes while the caller goes on (inference's driver draws the all-years grid
    meanwhile). Why: a map takes ~0.45 s of one core at 1° and a run draws one per year after its last year is
    committed (the colour scale is shared by all years), so a 10-year run spent ~5 s drawing after ~14 s of
    inference (``bench/infer.py``'s profile line).

    The processes are ``python -P -m xmw_ray.infer.plots FOLDER K N`` (not multiprocessing: its spawned children
    re-run the caller's main script, and a user's script without a ``__main__`` guard would run inference again in
    each; ``-P``: the working folder is not on their import path). Maps, land mask and scale go through a private
    temporary folder as ``.npy`` (loaded without pickle, written one map at a time as they are read) and JSON; each
    process writes its PNGs there and the caller reads them back. A map a process did not deliver (it failed to
    start, failed, or ran past its time) is drawn in the caller, with one line on stderr saying why: a failed
    process costs time, never a map. With fewer than ``POOL_MIN_MAPS`` maps or one usable core, every map is drawn
    in the caller. A context manager: leaving it stops the processes and removes the folder."""

    def __init__(self, scale: ColourScale, land: np.ndarray, land_from_store: bool, title: str,
                 workers: int | None = None) -> None:
        self.scale, self.land, self.land_from_store, self.title = scale, land, land_from_store, title
        self.workers = min(workers or usable_cores(), MAX_DRAWING_PROCESSES)
        self._years: list[int] = []
        self._read: Callable[[int], np.ndarray] | None = None
        self._procs: list[subprocess.Popen] = []
        self._dir: tempfile.TemporaryDirectory | None = None
        self.delivered = 0  # maps that came from the drawing processes (the rest were drawn here)

    def start(self, years: Sequence[int], read_map: Callable[[int], np.ndarray]) -> None:
        """Start drawing the maps of ``years`` that ``read_map`` gives (in other processes when worth it)."""
        self._years, self._read = list(years), read_map
        workers = min(len(self._years), self.workers)
        if len(self._years) < POOL_MIN_MAPS or workers < 2:
            return
        self._dir = tempfile.TemporaryDirectory(prefix="xmw-maps-")
        folder = Path(self._dir.name)
        np.save(folder / "land.npy", np.asarray(self.land, dtype=bool))
        for i, year in enumerate(self._years):  # one map in memory at a time; its own dtype: the same PNG
            np.save(folder / f"map{i}.npy", np.asarray(read_map(year)))
        (folder / "job.json").write_text(json.dumps({
            "scale": asdict(self.scale), "land_from_store": self.land_from_store, "title": self.title,
            "years": self._years}))
        import xmw_ray

        package_parent = str(Path(xmw_ray.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)}
        try:
            for k in range(workers):
                with open(folder / f"err{k}.txt", "wb") as err:
                    self._procs.append(subprocess.Popen(
                        [sys.executable, "-P", "-m", DRAWING_MODULE, str(folder), str(k), str(workers)],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env))
        except OSError as exc:  # no interpreter to start: draw here
            self._warn(f"could not start a drawing process ({exc})")
            self._stop()
            self._procs = []

    def results(self) -> Iterator[tuple[int, bytes]]:
        """``(year, PNG bytes)`` of every year given to :meth:`start`, in its order."""
        try:
            folder = Path(self._dir.name) if self._dir is not None else None  # None: every map drawn here
            deadline = time.monotonic() + 60.0 + 10.0 * len(self._years)
            for k, proc in enumerate(self._procs):
                try:
                    rc = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    rc = "killed after its time"
                if rc != 0:
                    tail = (folder / f"err{k}.txt").read_text(errors="replace").strip()[-300:]
                    self._warn(f"drawing process {k} ended with {rc}{': ' + tail if tail else ''}")
            for i, year in enumerate(self._years):
                if folder is not None and (folder / f"map{i}.png").is_file():
                    self.delivered += 1
                    yield year, (folder / f"map{i}.png").read_bytes()
                    continue
                annual = np.load(folder / f"map{i}.npy", allow_pickle=False) if folder is not None else self._read(year)
                yield year, annual_map_bytes(annual, year, self.scale, self.land, self.land_from_store, self.title)
        finally:
            self.close()

    @staticmethod
    def _warn(why: str) -> None:
        print(f"xmw: year maps: {why}; drawing the rest in this process", file=sys.stderr, flush=True)

    def _stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop any drawing process still running and remove the temporary folder (also when the caller failed
        between :meth:`start` and :meth:`results`)."""
        self._stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> YearMapDrawer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _draw_share(folder: Path, k: int, n: int) -> None:
    """A drawing process's share of a :class:`YearMapDrawer` job: maps ``k``, ``k + n``, …; each PNG written
    whole or not at all (``storage.write_bytes_atomic``), so the caller reads whole files only."""
    job = json.loads((folder / "job.json").read_text())
    scale = ColourScale(**job["scale"])
    land = np.load(folder / "land.npy", allow_pickle=False)
    for i in range(k, len(job["years"]), n):
        annual = np.load(folder / f"map{i}.npy", allow_pickle=False)
        png = annual_map_bytes(annual, job["years"][i], scale, land, job["land_from_store"], job["title"])
        write_bytes_atomic(folder / f"map{i}.png", png)


def annual_map_figure(annual: np.ndarray, year: int, scale: ColourScale, land: np.ndarray,
                      land_from_store: bool = True, title: str = MEAN_TITLE):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5.2))
    ax = fig.add_subplot()
    im = _draw_map(ax, annual, scale, land)
    _legend_patches(ax, outline_name(land_from_store))
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(f"{title}, {year}", fontsize=12 if len(title) < 70 else 9)
    fig.colorbar(im, ax=ax, shrink=0.8, label=scale.label(), extend=scale.extend())
    fig.tight_layout()
    return fig


def annual_maps_grid_png(read_map: Callable[[int], np.ndarray], years: Sequence[int], path: str,
                         scale: ColourScale, land: np.ndarray, land_from_store: bool = True,
                         ncols: int = 6, title: str = MEAN_TITLE) -> None:
    """Every year's annual-mean map as small multiples on the one shared scale (maps read one at a time)."""
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, len(years)))
    nrows = max(1, -(-len(years) // ncols))
    fig = Figure(figsize=(2.5 * ncols + 1.2, 1.45 * nrows + 1.1))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= len(years):
            ax.set_axis_off()
            continue
        im = _draw_map(ax, read_map(years[i]), scale, land, outline_width=0.35)
        ax.set_title(str(years[i]), fontsize=9, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}, {years[0]}-{years[-1]} "
                 f"(one colour scale; {outline_name(land_from_store)})", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.86, bottom=0.03, top=1 - 0.55 / (1.45 * nrows + 1.1), wspace=0.05,
                        hspace=0.25)
    if im is not None:
        cax = fig.add_axes((0.88, 0.15, 0.015, 0.7))
        fig.colorbar(im, cax=cax, label=scale.label(), extend=scale.extend())
    put_bytes(path, _png(fig, dpi=90))


# --- seasonal cycle by latitude band ---------------------------------------------------------------------------
def seasonal_cycle_by_band(monthly_maps: Iterable[np.ndarray], weight: np.ndarray, lat: np.ndarray
                           ) -> dict[str, np.ndarray]:
    """Weighted mean monthly flux of each latitude band, ``band -> (years, 12)``.

    ``monthly_maps`` yields one ``(12, nlat, nlon)`` array per year; ``weight`` is ``(12, nlat, nlon)`` or
    ``(nlat, nlon)`` (m²: wetland area, or cell area without an extent); cells with NaN flux or no weight do not
    count. A band with no weight in a month gives NaN there."""
    band = band_of_lat(lat)  # (nlat,)
    w = np.nan_to_num(np.asarray(weight, dtype=np.float64), nan=0.0)
    w = np.broadcast_to(w, (12, *w.shape[-2:]))
    rows: dict[str, list[np.ndarray]] = {name: [] for name in BAND_NAMES}
    for month_maps in monthly_maps:
        m = np.asarray(month_maps, dtype=np.float64)
        ok = np.isfinite(m) & (w > 0)
        num = np.where(ok, m * w, 0.0).sum(axis=2)  # (12, nlat)
        den = np.where(ok, w, 0.0).sum(axis=2)
        for b, name in enumerate(BAND_NAMES):
            sel = band == b
            d = den[:, sel].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                rows[name].append(np.where(d > 0, num[:, sel].sum(axis=1) / d, np.nan))
    return {name: np.array(v).reshape(-1, 12) for name, v in rows.items()}


def seasonal_cycle_png(cycle: Mapping[str, np.ndarray], years: Sequence[int], path: str, weighting: str) -> None:
    """Mean seasonal cycle of each latitude band (line) and its range over the years (shading)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    months = np.arange(1, 13)
    for name, _, _ in reversed(LAT_BANDS):
        values = cycle.get(name)
        if values is None or not np.isfinite(values).any():
            continue
        with warnings.catch_warnings():  # an all-NaN month of a band: 'mean of empty slice'
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        ax.plot(months, mean, "-o", markersize=3, label=name, color=BAND_COLOURS[name])
        if len(values) > 1:
            ax.fill_between(months, lo, hi, color=BAND_COLOURS[name], alpha=0.15, linewidth=0)
    ax.set_xticks(months, MONTH_LABELS)
    ax.set_xlabel("month")
    ax.set_ylabel(f"mean flux ({FLUX_UNIT})")
    span = f"{years[0]}-{years[-1]}" if len(years) > 1 else str(years[0])
    ax.set_title(f"Seasonal cycle by latitude band, {span} ({weighting}-weighted)", fontsize=10)
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="band (line: mean,\nshading: range\nover years)" if len(years) > 1 else "band",
              title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    put_bytes(path, _png(fig))


# --- budget over the years ------------------------------------------------------------------------------------
def budget_png(rows: Sequence[tuple[int, Mapping[str, float]]], path: str,
               truth: Mapping[int, float] | None = None,
               members: Mapping[int, Sequence[Mapping[str, float]]] | None = None) -> None:
    """Global budget over the years with the literature range (and the true budget when known; for an ensemble
    the range of its members' budgets, ``members``: year -> each member's budget), and below it the latitude
    bands (Tg CH4 yr-1)."""
    put_bytes(path, _png(budget_figure(rows, truth, members)))


def budget_figure(rows: Sequence[tuple[int, Mapping[str, float]]], truth: Mapping[int, float] | None = None,
                  members: Mapping[int, Sequence[Mapping[str, float]]] | None = None):
    from matplotlib.figure import Figure

    rows = sorted(rows)
    years = [y for y, _ in rows]
    fig = Figure(figsize=(8.5, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    lit = LITERATURE_BUDGET
    top.axhspan(lit["low"], lit["high"], color="#f4a582", alpha=0.35, linewidth=0,
                label=f"wetlands, {lit['citation']}: {lit['central']:g} [{lit['low']:g}-{lit['high']:g}]")
    top.axhline(lit["central"], color="#d6604d", linewidth=1, linestyle=":")
    if members:
        my = [y for y in years if members.get(y)]
        ranges = [member_range(members[y]) for y in my]
        low, high = [r["global_member_min"] for r in ranges], [r["global_member_max"] for r in ranges]
        label = f"ensemble: lowest to highest of its {len(members[my[0]])} members"
        if len(my) > 1:
            top.fill_between(my, low, high, color="0.35", alpha=0.3, linewidth=0, label=label)
        else:  # one year: a band has no width, a bar shows the same range
            top.vlines(my, low, high, color="0.35", alpha=0.6, linewidth=8, label=label)
    top.plot(years, [r["global"] for _, r in rows], "k-o", markersize=3, linewidth=2,
             label="this model (global)" if not members else "this model (global, the ensemble's mean flux)")
    if truth:
        ty = [y for y in years if y in truth]
        if ty:
            top.plot(ty, [truth[y] for y in ty], "-", color="#2166ac", linewidth=2,
                     label="true budget of the built-in world")
    top.set_ylabel(f"global ({BUDGET_UNIT})")
    top.set_title("Wetland CH4 budget")
    top.legend(fontsize=8, loc="best")
    top.grid(alpha=0.3)
    for band in BAND_NAMES:
        bottom.plot(years, [r[band] for _, r in rows], "-o", label=band, markersize=3, color=BAND_COLOURS[band])
    bottom.axhline(0.0, color="0.5", linewidth=0.6)
    bottom.set_xlabel("year")
    bottom.set_ylabel(f"by band ({BUDGET_UNIT})")
    bottom.xaxis.get_major_locator().set_params(integer=True)
    bottom.legend(fontsize=8, ncol=3)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


if __name__ == "__main__":  # a YearMapDrawer process: python -m xmw_ray.infer.plots FOLDER K N
    _draw_share(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
