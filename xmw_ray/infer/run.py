"""Global batch inference: Grid store → Ray Data actor pool → CF flux maps, budget CSV and PNG figures.

The driver streams the predictions in store order (``preserve_order``), keeps one year's ``(cells, 365)`` buffer
(two while a batch straddles a year boundary), accumulates that year's budget block by block, and once every
cell of the year has arrived writes the year and commits it (``maps.FluxMaps``). A rerun computes only the
years without a commit marker, so a crashed run resumes and ends with the same store as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from xmw_ray.data.contract import DAYS_PER_YEAR, cell_area_m2, grid_coords
from xmw_ray.data.features import Slots, check_pairing, select_slots
from xmw_ray.data.grid_store import GridStore
from xmw_ray.errors import XmwInputError
from xmw_ray.infer.budget import NO_EXTENT, BudgetAccumulator, band_of_lat, budget_csv
from xmw_ray.infer.maps import FluxMaps, MapSpec, get_bytes, join, put_bytes
from xmw_ray.infer.options import DEFAULT_BATCH_SIZE, DEFAULT_MAP_SCALE, MAP_SCALES
from xmw_ray.infer.plots import SCALE_FILE
from xmw_ray.infer.predictor import FLUX, ILAT, ILON, FluxPredictor
from xmw_ray.storage import is_url

BUDGET_FILE = "budget.csv"
PLOTS_DIR = "plots"


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def local_checkpoint(checkpoint: str) -> Iterator[str]:
    """A local folder holding ``checkpoint``'s model file: the folder itself, or for an ``s3://`` / ``gs://`` URL
    (e.g. a run's ``<output_dir>/<name>/best``) a temporary copy of its model file, removed on exit."""
    if not is_url(checkpoint):
        yield checkpoint
        return
    import fsspec

    from xmw_ray.models.checkpoint import MODEL_FILE

    fs, root = fsspec.core.url_to_fs(checkpoint)
    with tempfile.TemporaryDirectory(prefix="xmw-checkpoint-") as tmp:
        try:
            fs.get_file(f"{root.rstrip('/')}/{MODEL_FILE}", str(Path(tmp) / MODEL_FILE))
        except FileNotFoundError as exc:
            raise XmwInputError(f"{checkpoint}: not a checkpoint ({MODEL_FILE} missing)") from exc
        yield tmp


class _CheckpointPredictor(FluxPredictor):
    """``FluxPredictor`` that also takes a checkpoint URL: each actor, on whichever node, fetches the model once."""

    def __init__(self, checkpoint: str, use_gpu: bool = False, slots: Slots | None = None):
        with local_checkpoint(checkpoint) as local:
            super().__init__(local, use_gpu, slots)


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

    from xmw_ray.train.resources import DATA_CPUS

    if actors is None:  # size the pool by what is free now: earlier work in this driver may still hold some
        free = ray.available_resources()
        actors = max(1, int(free.get("GPU", 0.0))) if use_gpu else max(1, int(free.get("CPU", 0.0) - DATA_CPUS))
    check_actors_fit(actors, use_gpu, ray.cluster_resources())
    return actors


def check_actors_fit(actors: int, use_gpu: bool, have: dict[str, float]) -> None:
    """Refuse an actor pool the cluster ``have`` cannot hold: 1 CPU (and 1 GPU with ``use_gpu``) per actor plus
    the Ray Data reserve."""
    from xmw_ray.train.resources import DATA_CPUS

    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    need_cpu = actors + DATA_CPUS
    if cpus + 1e-9 < need_cpu or (use_gpu and gpus + 1e-9 < actors):
        raise XmwInputError(f"--actors {actors}: needs {need_cpu:g} CPU{f' and {actors} GPU' if use_gpu else ''} "
                            f"(1 CPU per actor + {DATA_CPUS:g} for reading) but the cluster has {cpus:g} CPU "
                            f"and {gpus:g} GPU")


class _YearBuffer:
    """One year's predictions in store cell order, filled block by block, with its streamed budget."""

    def __init__(self, n_cells: int, budget: BudgetAccumulator | None):
        self.flux = np.full((n_cells, DAYS_PER_YEAR), np.nan, dtype=np.float32)
        self.seen = np.zeros(n_cells, dtype=bool)
        self.budget = budget

    def add(self, cells: np.ndarray, flux: np.ndarray) -> None:
        if self.seen[cells].any():
            raise RuntimeError("a cell was predicted twice for one year")
        self.flux[cells] = flux
        self.seen[cells] = True
        if self.budget is not None:
            self.budget.add(cells, flux)

    @property
    def complete(self) -> bool:
        return bool(self.seen.all())


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
        model_sha256 = _sha256(Path(local) / MODEL_FILE)
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
                   history=history_line(checkpoint, grid, out, wanted))
    area = wetland_area_cells(store)
    area_map = np.full((12, store.nlat, store.nlon), np.nan)
    if area is not None:
        area_map[:, store.cell_ilat, store.cell_ilon] = area
    maps = FluxMaps.open_or_create(out, spec, store.cell_ilat, store.cell_ilon, area_map)

    missing = [y for y in wanted if y not in set(maps.years_done())]
    if on_start is not None:
        on_start(list(wanted), missing)
    if missing:
        _predict_years(maps, store, checkpoint, missing, area, batch_size, actors, use_gpu, on_year_done, slots)
    maps.finalize()

    done = maps.years_done()
    figures = _Figures(land=store.land_mask, area_map=area_map if area is not None else None, scale=map_scale,
                       truth=truth_budget)
    if area is None:
        plots = _write_plots(maps, done, {}, set(missing), figures)
        return InferResult(out=out, years=list(wanted), computed=missing, cells=store.n_cells, plots=plots,
                           no_budget=NO_EXTENT)
    budget = {y: b for y in done if (b := maps.year_budget(y)) is not None}
    csv_path = join(out, BUDGET_FILE)
    put_bytes(csv_path, budget_csv(budget.items()).encode())
    plots = _write_plots(maps, done, budget, set(missing), figures)
    return InferResult(out=out, years=list(wanted), computed=missing, cells=store.n_cells, budget=budget,
                       budget_csv=csv_path, plots=plots)


def _predict_years(maps: FluxMaps, store: GridStore, checkpoint: str, years: list[int], area: np.ndarray | None,
                   batch_size: int, actors: int | None, use_gpu: bool,
                   on_year_done: Callable[[int, dict[str, float] | None], None] | None,
                   slots: Slots | None = None) -> None:
    """Run the actor pool over ``years`` and commit each year as soon as all its cells have arrived; ``slots``:
    the grid slots the model reads (None: all)."""
    import ray.data

    from xmw_ray.data import schema
    from xmw_ray.data.ray_datasets import sample_dataset, store_info
    from xmw_ray.train.runner import ensure_ray

    ensure_ray()
    n_actors = _actor_count(actors, use_gpu)
    ds = sample_dataset(store_info(store.path, "grid"), None, "all", years=years)
    ds.context.execution_options.preserve_order = True  # one year at a time reaches the driver
    preds = ds.map_batches(_CheckpointPredictor, fn_constructor_kwargs={"checkpoint": checkpoint, "use_gpu": use_gpu,
                                                                   "slots": slots},
                           compute=ray.data.ActorPoolStrategy(size=n_actors), batch_size=batch_size,
                           batch_format="numpy", num_cpus=1, num_gpus=1 if use_gpu else 0)
    lat, _ = grid_coords(store.res)
    bands = band_of_lat(lat[store.cell_ilat])
    pending: dict[int, _YearBuffer] = {}
    left = set(years)
    for batch in preds.iter_batches(batch_size=None, batch_format="numpy"):
        cells = store.cell_index(batch[ILAT], batch[ILON])
        if (cells < 0).any():
            raise RuntimeError("prediction for a cell that is not in the Grid store")
        for year in np.unique(batch[schema.YEAR]).tolist():
            sel = batch[schema.YEAR] == year
            buf = pending.get(year)
            if buf is None:
                acc = None if area is None else BudgetAccumulator(area, bands)
                buf = pending[year] = _YearBuffer(store.n_cells, acc)
            buf.add(cells[sel], batch[FLUX][sel])
            if buf.complete:
                maps.write_year(year, buf.flux)
                tg = None if buf.budget is None else buf.budget.tg()
                maps.commit_year(year, tg)
                del pending[year]
                left.discard(year)
                if on_year_done is not None:
                    on_year_done(year, tg)
    if left:
        raise RuntimeError(f"inference stream ended before years {sorted(left)} were complete")


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
                 computed: set[int], figures: _Figures) -> list[str]:
    """Every year's annual-mean map on one shared colour scale (a year's PNG is redrawn when computed by this run,
    missing, or when the scale changed), the small-multiples grid of all years, the seasonal cycle by latitude
    band and the budget plot."""
    from xmw_ray.infer.plots import (
        annual_map_png,
        annual_maps_grid_png,
        budget_png,
        seasonal_cycle_by_band,
        seasonal_cycle_png,
        shared_scale,
    )

    if not done:
        return []
    lat, _ = grid_coords(maps.spec.res)
    land_from_store = figures.land is not None
    land = figures.land if land_from_store else np.isfinite(maps.annual_mean(done[0]))
    scale = shared_scale(maps.annual_mean, done, figures.scale)
    scale_path = join(maps.path, PLOTS_DIR, SCALE_FILE)
    record = {**scale.record(), "years": done, "land_mask": land_from_store}
    previous = get_bytes(scale_path)
    redraw = previous is None or json.loads(previous) != record
    written = []
    for year in done:
        path = join(maps.path, PLOTS_DIR, f"annual_mean_{year}.png")
        if redraw or year in computed or get_bytes(path) is None:
            annual_map_png(maps.annual_mean(year), year, path, scale, land, land_from_store)
        written.append(path)
    path = join(maps.path, PLOTS_DIR, "annual_mean_all_years.png")
    annual_maps_grid_png(maps.annual_mean, done, path, scale, land, land_from_store)
    written.append(path)
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
        budget_png(list(budget.items()), path, figures.truth)
        written.append(path)
    put_bytes(scale_path, json.dumps(record).encode())  # last: a crash before it redraws every map next time
    return written
