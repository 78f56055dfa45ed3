"""Global batch inference: Grid store → a pool of Ray actors → CF flux maps, budget CSV and PNG figures.

The driver hands each actor (``predictor.FluxWorker``) ranges of store cells of one year, in year order, at most
``UNITS_PER_ACTOR`` at a time; the actor reads its own inputs and returns the flux. The driver keeps the
``(cells, 365)`` buffer of each year in flight (two around a year boundary), accumulates its budget range by
range, and once every cell of the year has arrived writes the year in a background thread (while the actors go
on) and commits it (``maps.FluxMaps``). A rerun computes only the years without a commit marker, so a crashed run
resumes and ends with the same store as an uninterrupted one. The figures are drawn once every year is done, on
one colour scale shared by all years.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xmw_ray.data.contract import DAYS_PER_YEAR, cell_area_m2, grid_coords
from xmw_ray.data.features import Slots, check_pairing, select_slots
from xmw_ray.data.grid_store import GridStore
from xmw_ray.data.tower_features import file_sha256
from xmw_ray.errors import XmwInputError
from xmw_ray.infer.budget import NO_EXTENT, BudgetAccumulator, band_of_lat, budget_csv
from xmw_ray.infer.maps import FluxMaps, MapSpec, get_bytes, join, put_bytes
from xmw_ray.infer.options import DEFAULT_BATCH_SIZE, DEFAULT_MAP_SCALE, MAP_SCALES
from xmw_ray.infer.plots import SCALE_FILE
from xmw_ray.infer.predictor import FluxWorker, local_checkpoint
from xmw_ray.models.ensemble import ensemble_size
from xmw_ray.storage import is_url

BUDGET_FILE = "budget.csv"
PLOTS_DIR = "plots"
#: Map PNGs in ``plots/``: ``<prefix><year>.png`` and ``<prefix>all_years.png``, of the annual means and, for an
#: ensemble, of its member spread.
MEAN_PNG_PREFIX = "annual_mean_"
SPREAD_PNG_PREFIX = "annual_spread_"
#: Work units queued per actor: one running and one waiting, so an actor does not idle while the driver places a
#: result, and at most two years are held in the driver.
UNITS_PER_ACTOR = 2
#: Restarts of a crashed inference actor (and retries of its unit): its constructor arguments are small values.
ACTOR_RESTARTS = 3


@dataclass
class InferResult:
    """What one ``run_inference`` call did."""

    out: str
    years: list[int]
    computed: list[int]
    cells: int
    budget: dict[int, dict[str, float]] = field(default_factory=dict)
    budget_csv: str = ""  # "" when no budget was computed (``no_budget`` says why)
    plots: list[str] = field(default_factory=list)
    no_budget: str = ""
    members: int = 0  # an ensemble's member count (its spread is mapped and its budget range kept); 0: one model
    member_budget: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # year -> each member's budget


def _local_abs(path: str | Path) -> str:
    """Local paths made absolute (Ray workers may run elsewhere in the tree); URLs unchanged."""
    return str(path) if is_url(path) else str(Path(path).resolve())


def provenance_name(path: str, out: str) -> str:
    """How the map store names an input: a URL as given, a local path relative to the store's folder (no absolute
    machine path in a file that gets published; still the same name for every rerun of the same command)."""
    if is_url(path) or is_url(out):
        return str(path)
    return os.path.relpath(path, Path(out).parent)


def history_line(checkpoint: str, grid: str, out: str, years: tuple[int, ...]) -> str:
    """The CF ``history`` entry of the command that created a map store (UTC time, inputs by provenance name)."""
    from xmw_ray import __version__

    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"{when}: xmw infer --checkpoint {provenance_name(checkpoint, out)} --grid {provenance_name(grid, out)} "
            f"--years {years[0]}-{years[-1]} --out {Path(out).name} (xmw_ray {__version__})")


def select_years(store: GridStore, years: tuple[int, int] | None) -> tuple[int, ...]:
    """The years ``Y0..Y1`` to map (default: every year of the store); all must be in the store."""
    if years is None:
        return store.years
    y0, y1 = years
    if y0 > y1:
        raise XmwInputError(f"--years {y0}-{y1}: the first year is after the last")
    missing = [y for y in range(y0, y1 + 1) if y not in store.years]
    if missing:
        raise XmwInputError(f"--years {y0}-{y1}: {store.path} holds {store.years[0]}-{store.years[-1]} only "
                            f"(missing {missing[0]}{'…' if len(missing) > 1 else ''})")
    return tuple(range(y0, y1 + 1))


def wetland_area_cells(store: GridStore) -> np.ndarray | None:
    """Wetland area (m²) of each store cell in each month ``(12, cell)``: cell area × that month's wetland fraction;
    None when the store has no wetland extent."""
    fraction = store.wetland_fraction
    if fraction is None:
        return None
    return store.cell_area.astype(np.float64)[None, :] * fraction.astype(np.float64)


def _actor_count(actors: int | None, use_gpu: bool) -> int:
    """Actors to start, checked against the cluster (Ray waits forever on a request that cannot fit)."""
    import ray

    if actors is None:  # size the pool by what is free now: earlier work in this driver may still hold some
        free = ray.available_resources()
        if use_gpu:
            actors = max(1, int(free.get("GPU", 0.0)))
        else:
            actors = max(1, int(free.get("CPU", 0.0)))
            if not os.environ.get("RAY_ADDRESS"):  # a local instance may count more logical CPUs than cores
                actors = min(actors, os.cpu_count() or 1)
    check_actors_fit(actors, use_gpu, ray.cluster_resources())
    return actors


def check_actors_fit(actors: int, use_gpu: bool, have: dict[str, float]) -> None:
    """Refuse an actor pool the cluster ``have`` cannot hold: 1 CPU (and 1 GPU with ``use_gpu``) per actor; the
    actors read their own inputs, so nothing else needs a CPU."""
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    if cpus + 1e-9 < actors or (use_gpu and gpus + 1e-9 < actors):
        raise XmwInputError(f"--actors {actors}: needs {actors} CPU{f' and {actors} GPU' if use_gpu else ''} "
                            f"(1 CPU per actor) but the cluster has {cpus:g} CPU and {gpus:g} GPU")


def work_units(store: GridStore, years: list[int], batch_size: int) -> list[tuple[int, int, int]]:
    """``(year, first cell, end cell)`` of each model call, in year order: whole store chunks (about
    ``batch_size`` cells, at least one chunk), never across a year."""
    cpc = store.cells_per_chunk
    per = max(1, round(batch_size / cpc)) * cpc
    return [(y, c0, min(store.n_cells, c0 + per)) for y in years for c0 in range(0, store.n_cells, per)]


class _YearBuffer:
    """One year's predictions in store cell order, filled range by range, with its streamed budget; for an
    ensemble also each cell's member spread and each member's streamed budget."""

    def __init__(self, n_cells: int, new_budget: Callable[[], BudgetAccumulator] | None, members: int = 0):
        self.flux = np.full((n_cells, DAYS_PER_YEAR), np.nan, dtype=np.float32)
        self.seen = np.zeros(n_cells, dtype=bool)
        self.budget = None if new_budget is None else new_budget()
        self.spread = np.full(n_cells, np.nan, dtype=np.float32) if members else None
        self.member_budgets = None if new_budget is None or not members else [new_budget() for _ in range(members)]
        self.left = n_cells

    def add(self, c0: int, c1: int, flux: np.ndarray, spread: np.ndarray | None = None,
            member_monthly: np.ndarray | None = None) -> None:
        if self.seen[c0:c1].any():
            raise RuntimeError("a cell was predicted twice for one year")
        self.flux[c0:c1] = flux
        self.seen[c0:c1] = True
        self.left -= c1 - c0
        cells = np.arange(c0, c1)
        if self.budget is not None:
            self.budget.add(cells, flux)
        if self.spread is not None:
            self.spread[c0:c1] = spread
        if self.member_budgets is not None:
            for acc, monthly in zip(self.member_budgets, member_monthly, strict=True):
                acc.add_monthly(cells, monthly)

    @property
    def complete(self) -> bool:
        return self.left == 0


class _YearWriter:
    """Writes and commits finished years in one background thread, so the actors keep working meanwhile.

    One year at a time: the next write starts only after the previous year was committed and ``on_year_done``
    returned in the calling thread, so a callback that raises (a crash) leaves every later year uncommitted. The
    figures wait for the end of the run: every year's map shares one colour scale, known once all years are done."""

    def __init__(self, maps: FluxMaps, on_year_done: Callable[[int, dict[str, float] | None], None] | None):
        self._maps = maps
        self._on_year_done = on_year_done
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xmw-write")
        self._last: tuple[int, Future[dict[str, float] | None]] | None = None

    def _write(self, year: int, buf: _YearBuffer) -> dict[str, float] | None:
        self._maps.write_year(year, buf.flux, buf.spread)
        tg = None if buf.budget is None else buf.budget.tg()
        members = None if buf.member_budgets is None else [acc.tg() for acc in buf.member_budgets]
        self._maps.commit_year(year, tg, members)
        return tg

    def _finish_last(self) -> None:
        if self._last is not None:
            year, future = self._last
            self._last = None
            tg = future.result()
            if self._on_year_done is not None:
                self._on_year_done(year, tg)

    def submit(self, year: int, buf: _YearBuffer) -> None:
        self._finish_last()
        self._last = (year, self._pool.submit(self._write, year, buf))

    def close(self) -> None:
        """Wait for the last year (and report it); always call, also on errors."""
        try:
            self._finish_last()
        finally:
            self._pool.shutdown(wait=True)


def run_inference(checkpoint: str | Path, grid: str | Path, out: str | Path, years: tuple[int, int] | None = None,
                  *, batch_size: int = DEFAULT_BATCH_SIZE, actors: int | None = None, use_gpu: bool = False,
                  on_year_done: Callable[[int, dict[str, float] | None], None] | None = None,
                  on_start: Callable[[list[int], list[int]], None] | None = None,
                  map_scale: str = DEFAULT_MAP_SCALE, truth_budget: Mapping[int, float] | None = None
                  ) -> InferResult:
    """Map ``checkpoint``'s flux over ``grid`` for ``years`` into ``out``; resumes a store left by a crashed run.

    Each of the three may be a local path or an ``s3://`` / ``gs://`` URL (``maps.FluxMaps`` commits year by year
    on object stores too).

    ``on_start(wanted, missing)`` is called once the years to compute are known, ``on_year_done(year, budget_tg)``
    after each year is committed (progress reporting).

    ``map_scale`` (``MAP_SCALES``) picks the one colour scale of every year's map; ``truth_budget`` (year → Tg CH4
    yr-1, e.g. ``budget.read_true_budget`` of the built-in world) is drawn on the budget figure.

    An ensemble checkpoint (two or more members) also gets each cell's member spread (``maps.SPREAD_VAR``) with
    its maps, and its members' budgets: their range in ``budget.csv`` and as a band on the budget figure.

    A store without a wetland extent gets the flux maps only: no ``budget.csv``, no budget plot, and
    ``InferResult.no_budget`` says why (the flux is per unit wetland area; cell area would overstate it).
    """
    from xmw_ray.models.checkpoint import MODEL_FILE, load_checkpoint_model
    from xmw_ray.train.runner import planned_cluster_resources

    if batch_size < 1:
        raise XmwInputError(f"--batch-size {batch_size}: must be at least 1")
    if actors is not None and actors < 1:
        raise XmwInputError(f"--actors {actors}: must be at least 1")
    if map_scale not in MAP_SCALES:
        raise XmwInputError(f"--map-scale {map_scale}: must be one of {', '.join(MAP_SCALES)}")
    checkpoint = _local_abs(checkpoint)
    with local_checkpoint(checkpoint) as local:
        model = load_checkpoint_model(local)
        model_sha256 = file_sha256(Path(local) / MODEL_FILE)
    grid, out = _local_abs(grid), _local_abs(out)
    store = GridStore.open(grid)
    # A map-ready model (sites prepared with --drivers map) reads the grid's slots of its own names only.
    slots = select_slots(model.features, store.features)
    given = store.features if slots is None else store.features.select(*slots)
    if (len(given.dynamic), len(given.static)) != (model.n_dynamic, model.n_static):
        raise XmwInputError(f"{grid}: {len(given.dynamic)} dynamic / {len(given.static)} static inputs, "
                            f"the checkpoint expects {model.n_dynamic} / {model.n_static}")
    check_pairing(model.features, f"checkpoint {checkpoint}", given, grid,
                  "map with a model trained on this grid's features (sites prepared with --grid, or with "
                  "--drivers map)")
    wanted = select_years(store, years)
    # Before the map store exists: a pool the cluster cannot hold is refused with nothing written.
    check_actors_fit(1 if actors is None else actors, use_gpu, planned_cluster_resources())
    extent = (store.attrs.get("wetland_extent") or {}).get("source")
    spec = MapSpec(res=store.res, years=wanted, checkpoint=provenance_name(checkpoint, out),
                   checkpoint_sha256=model_sha256, grid_store=provenance_name(grid, out),
                   grid_cells=store.n_cells, model=model.config(),
                   wetland_extent=None if extent is None else provenance_name(extent, out),
                   history=history_line(checkpoint, grid, out, wanted), members=ensemble_size(model))
    area = wetland_area_cells(store)
    area_map = np.full((12, store.nlat, store.nlon), np.nan)
    if area is not None:
        area_map[:, store.cell_ilat, store.cell_ilon] = area
    maps = FluxMaps.open_or_create(out, spec, store.cell_ilat, store.cell_ilon, area_map)

    missing = [y for y in wanted if y not in set(maps.years_done())]
    if on_start is not None:
        on_start(list(wanted), missing)
    if missing:
        _predict_years(maps, store, checkpoint, model_sha256, missing, area, batch_size, actors, use_gpu,
                       on_year_done, slots)
    maps.finalize()

    done = maps.years_done()
    figures = _Figures(land=store.land_mask, area_map=area_map if area is not None else None, scale=map_scale,
                       truth=truth_budget)
    if area is None:
        plots = _write_plots(maps, done, {}, {}, set(missing), figures)
        return InferResult(out=out, years=list(wanted), computed=missing, cells=store.n_cells, plots=plots,
                           no_budget=NO_EXTENT, members=spec.members)
    budget = {y: b for y in done if (b := maps.year_budget(y)) is not None}
    member_budget = {y: m for y in budget if (m := maps.year_member_budgets(y)) is not None} if spec.members else {}
    if len(member_budget) != (len(budget) if spec.members else 0):
        raise RuntimeError(f"{out}: an ensemble's year was committed without its members' budgets")
    csv_path = join(out, BUDGET_FILE)
    put_bytes(csv_path, budget_csv(budget.items(), member_budget or None).encode())
    plots = _write_plots(maps, done, budget, member_budget, set(missing), figures)
    return InferResult(out=out, years=list(wanted), computed=missing, cells=store.n_cells, budget=budget,
                       budget_csv=csv_path, plots=plots, members=spec.members, member_budget=member_budget)


def start_actors(n: int, checkpoint: str, checkpoint_sha256: str, grid: str, use_gpu: bool,
                 slots: Slots | None = None) -> list[Any]:
    """``n`` inference actors; each is rebuilt after a crash (up to ``ACTOR_RESTARTS`` times) from its small
    constructor arguments, and the unit it was running is retried. ``slots``: the grid slots the model reads
    (``features.select_slots``; a map-ready model reads some of the grid's), None for all."""
    import ray

    worker = ray.remote(FluxWorker).options(num_cpus=1, num_gpus=1 if use_gpu else 0, max_restarts=ACTOR_RESTARTS,
                                            max_task_retries=ACTOR_RESTARTS)
    return [worker.remote(checkpoint, checkpoint_sha256, grid, use_gpu, slots) for _ in range(n)]


def _predict_years(maps: FluxMaps, store: GridStore, checkpoint: str, checkpoint_sha256: str, years: list[int],
                   area: np.ndarray | None, batch_size: int, actors: int | None, use_gpu: bool,
                   on_year_done: Callable[[int, dict[str, float] | None], None] | None,
                   slots: Slots | None = None) -> None:
    """Run the actor pool over ``years`` and commit each year as soon as all its cells have arrived; ``slots``:
    the grid slots the model reads (None: all)."""
    import ray

    from xmw_ray.train.runner import ensure_ray

    ensure_ray()
    n_actors = _actor_count(actors, use_gpu)
    pool = start_actors(n_actors, checkpoint, checkpoint_sha256, store.path, use_gpu, slots)
    lat, _ = grid_coords(store.res)
    bands = band_of_lat(lat[store.cell_ilat])
    year_index = {y: store.years.index(y) for y in years}
    members = maps.spec.members
    new_budget = None if area is None else (lambda: BudgetAccumulator(area, bands))
    todo = iter(work_units(store, years, batch_size))
    running: dict[Any, tuple[tuple[int, int, int], Any]] = {}
    pending: dict[int, _YearBuffer] = {}
    writer = _YearWriter(maps, on_year_done)

    def submit(actor: Any) -> None:
        unit = next(todo, None)
        if unit is not None:
            year, c0, c1 = unit
            method = actor.predict_members if members else actor.predict
            running[method.remote(year_index[year], c0, c1)] = (unit, actor)

    try:
        for _ in range(UNITS_PER_ACTOR):
            for actor in pool:
                submit(actor)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            (year, c0, c1), actor = running.pop(ref)
            result = ray.get(ref)
            submit(actor)
            buf = pending.get(year)
            if buf is None:
                buf = pending[year] = _YearBuffer(store.n_cells, new_budget, members)
            if members:
                buf.add(c0, c1, *result)
            else:
                buf.add(c0, c1, result)
            if buf.complete:
                writer.submit(year, pending.pop(year))
    finally:
        try:
            writer.close()
        finally:
            for actor in pool:
                ray.kill(actor)
    if pending:
        raise RuntimeError(f"inference ended before years {sorted(pending)} were complete")


@dataclass
class _Figures:
    """What the figures need beyond the map store: the Grid store's land mask (None for a store prepared before
    it was kept: the mapped cells are outlined instead), the wetland area ``(12, lat, lon)`` (None without an
    extent), the colour-scale kind and the true budget, if known."""

    land: np.ndarray | None
    area_map: np.ndarray | None
    scale: str
    truth: Mapping[int, float] | None


def _write_plots(maps: FluxMaps, done: list[int], budget: dict[int, dict[str, float]],
                 member_budget: dict[int, list[dict[str, float]]], computed: set[int], figures: _Figures) -> list[str]:
    """Every year's annual-mean map on one shared colour scale (a year's PNG is redrawn when computed by this run,
    missing, or when the scale changed), the small-multiples grid of all years, for an ensemble the same two for
    its member spread (on a scale of their own), the seasonal cycle by latitude band and the budget plot (for an
    ensemble with its members' range)."""
    from xmw_ray.infer.plots import (
        MEAN_TITLE,
        ColourScale,
        YearMapDrawer,
        annual_maps_grid_png,
        budget_png,
        seasonal_cycle_by_band,
        seasonal_cycle_png,
        shared_scale,
        spread_title,
    )

    if not done:
        return []
    lat, _ = grid_coords(maps.spec.res)
    land_from_store = figures.land is not None
    land = figures.land if land_from_store else np.isfinite(maps.annual_mean(done[0]))
    scale = shared_scale(maps.annual_mean, done, figures.scale)
    scale_path = join(maps.path, PLOTS_DIR, SCALE_FILE)
    record = {**scale.record(), "years": done, "land_mask": land_from_store}
    members = maps.spec.members
    if members:
        spread_scale = shared_scale(maps.annual_spread, done, figures.scale)
        record["spread"] = spread_scale.record()
    previous = get_bytes(scale_path)
    redraw = previous is None or json.loads(previous) != record

    def year_maps(read_map: Callable[[int], np.ndarray], prefix: str, colours: ColourScale, title: str) -> list[str]:
        """One PNG per year (redrawn when computed by this run, missing, or the scale changed) and the grid of all
        years, of the maps ``read_map`` gives. Several year maps are drawn by ``YearMapDrawer``'s processes while
        this one draws the grid; this process reads the maps and writes every PNG."""
        paths = [join(maps.path, PLOTS_DIR, f"{prefix}{year}.png") for year in done]
        todo = [(year, path) for year, path in zip(done, paths, strict=True)
                if redraw or year in computed or get_bytes(path) is None]
        grid = join(maps.path, PLOTS_DIR, f"{prefix}all_years.png")
        with YearMapDrawer(colours, land, land_from_store, title) as drawer:
            drawer.start([year for year, _ in todo], read_map)
            annual_maps_grid_png(read_map, done, grid, colours, land, land_from_store, title=title)
            for (_, path), (_, png) in zip(todo, drawer.results(), strict=True):
                put_bytes(path, png)
        return [*paths, grid]

    written = year_maps(maps.annual_mean, MEAN_PNG_PREFIX, scale, MEAN_TITLE)
    if members:
        written += year_maps(maps.annual_spread, SPREAD_PNG_PREFIX, spread_scale, spread_title(members))
    if figures.area_map is not None:
        weight, weighting = figures.area_map, "wetland-area"
    else:
        weight = np.broadcast_to(cell_area_m2(lat, maps.spec.res)[:, None], (maps.nlat, maps.nlon))
        weighting = "cell-area"
    cycle = seasonal_cycle_by_band((maps.monthly_means(y) for y in done), weight, lat)
    path = join(maps.path, PLOTS_DIR, "seasonal_cycle_by_band.png")
    seasonal_cycle_png(cycle, done, path, weighting)
    written.append(path)
    if budget:
        path = join(maps.path, PLOTS_DIR, "budget.png")
        budget_png(list(budget.items()), path, figures.truth, member_budget or None)
        written.append(path)
    put_bytes(scale_path, json.dumps(record).encode())  # last: a crash before it redraws every map next time
    return written
