"""Ray Data over the prepared stores, in the one sample schema (``schema.py``).

- Grid store: :class:`GridDatasource`, one read task per (year, chunk) holding samples of the wanted part; the
  split is evaluated in the driver from entity ids and years alone, so unneeded chunks are never read and a task
  reads exactly one chunk. Nothing materialises the dataset.
- Site store: ``ray.data.read_parquet`` (partitioned by site) and a batch transform to the sample schema.

Which of the two a path is, and each kind's way of doing the above, is ``stores.py`` (the one store interface);
the functions here take a ``StoreInfo`` and ask its kind.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray.data
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from xmw_ray.data import schema
from xmw_ray.data.contract import DAYS_PER_YEAR
from xmw_ray.data.grid_store import GridStore
from xmw_ray.data.normstats import NormStats
from xmw_ray.data.splits import PART_CODES, SplitPlan, SplitSpec
from xmw_ray.data.stores import StoreInfo, open_grid, store_info, store_kind
from xmw_ray.errors import XmwInputError

PARTS = ("train", "val", "test", "all")


def _read_grid_chunk(path: str, year_index: int, chunk: int, rows: np.ndarray | None) -> list[Any]:
    block = open_grid(path).read_block(year_index, chunk)
    if rows is not None:
        block = {k: v[rows] for k, v in block.items()}
    return [BlockAccessor.batch_to_block(block)]


def grid_selection(store: GridStore, plan: SplitPlan | None, part: str,
                   years: list[int] | None = None) -> list[tuple[int, int, np.ndarray | None]]:
    """(year_index, chunk, rows-within-chunk or None for all) of every chunk holding samples of ``part``."""
    if part not in PARTS:
        raise XmwInputError(f"split part must be one of {', '.join(PARTS)}, got {part!r}")
    wanted = set(store.years if years is None else years)
    if plan is not None and part != "all":
        wanted &= set(plan.years_needed(part))
    missing = set(years or ()) - set(store.years)
    if missing:
        raise XmwInputError(f"{store.path}: years {sorted(missing)} not in the store ({store.years[0]}-{store.years[-1]})")
    cell_idx = np.arange(store.n_cells)
    out = []
    for yi, year in enumerate(store.years):
        if year not in wanted:
            continue
        if plan is None or part == "all":
            codes = None
        else:
            codes = plan.parts(cell_idx, np.full(store.n_cells, year)) == PART_CODES[part]
        for ci in range(store.n_chunks):
            c0, c1 = store.chunk_cells(ci)
            if codes is None:
                out.append((yi, ci, None))
                continue
            rows = np.flatnonzero(codes[c0:c1])
            if len(rows):
                out.append((yi, ci, None if len(rows) == c1 - c0 else rows))
    return out


def sample_bytes(n_dynamic: int, n_static: int) -> int:
    """In-memory size of one sample (float32 dynamic, target and static, plus entity and year)."""
    return 4 * (DAYS_PER_YEAR * (n_dynamic + 1) + n_static) + 32


class GridDatasource(Datasource):
    """The Grid store as a Ray Data source: one read task per selected (year, chunk)."""

    def __init__(self, path: str, selection: list[tuple[int, int, np.ndarray | None]], n_dynamic: int,
                 n_static: int, cells_per_chunk: int, n_cells: int):
        super().__init__()
        self._path = path
        self._selection = selection
        self._row_bytes = sample_bytes(n_dynamic, n_static)
        self._cpc = cells_per_chunk
        self._n_cells = n_cells

    def _rows(self, sel: tuple[int, int, np.ndarray | None]) -> int:
        # a whole chunk: the last one holds only the cells left over
        return min(self._cpc, self._n_cells - sel[1] * self._cpc) if sel[2] is None else len(sel[2])

    def estimate_inmemory_data_size(self) -> int:
        return sum(self._rows(s) for s in self._selection) * self._row_bytes

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        tasks = []
        for sel in self._selection:
            n = self._rows(sel)
            meta = BlockMetadata(num_rows=n, size_bytes=n * self._row_bytes, exec_stats=None, input_files=None)
            tasks.append(ReadTask(functools.partial(_read_grid_chunk, self._path, *sel), meta,
                                  per_task_row_limit=per_task_row_limit))
        return tasks

    def get_name(self) -> str:
        return "XmwGrid"


def site_rows_to_samples(batch: Any, n_dynamic: int, n_static: int, plan: SplitPlan | None,
                         part: str) -> dict[str, np.ndarray]:
    """Parquet rows (fixed-size lists) → sample schema, keeping the rows of ``part``."""
    from xmw_ray.data.site_store import rows_to_samples

    out = rows_to_samples(batch, n_dynamic, n_static)
    if plan is not None and part != "all":
        keep = plan.parts(plan.entity_index(out[schema.ENTITY]), out[schema.YEAR]) == PART_CODES[part]
        out = {k: v[keep] for k, v in out.items()}
    return out


def sample_dataset(info: StoreInfo, spec: SplitSpec | None, part: str,
                   years: list[int] | None = None) -> ray.data.Dataset:
    """The samples of one split part (or ``"all"``) as a Ray Dataset, streamed from the store."""
    return store_kind(info).dataset(info, info.plan(spec) if spec is not None else None, part, years)


def part_bytes(info: StoreInfo, spec: SplitSpec, part: str) -> int:
    """In-memory size of one split part, from entity ids and years alone (nothing is read)."""
    return store_kind(info).part_bytes(info, info.plan(spec), part)


def part_rows(info: StoreInfo, spec: SplitSpec, part: str) -> int:
    """Samples in one split part, from entity ids and years alone (nothing is read)."""
    return part_bytes(info, spec, part) // sample_bytes(len(info.dynamic_vars), len(info.static_vars))


def norm_stats(info: StoreInfo, spec: SplitSpec, plan: SplitPlan | None = None) -> NormStats:
    """Training-split statistics, cached beside the store (computed once per split; a cache written before the
    smallest target was recorded is computed again); ``plan``: the run's plan of ``spec``, else built here."""
    try:
        cached = NormStats.load(info.path, spec.key())
        if cached.target_min is not None:
            return cached
    except (FileNotFoundError, OSError):
        pass
    stats = store_kind(info).normstats(info, plan if plan is not None else info.plan(spec))
    try:
        stats.save(info.path)
    except OSError:  # a read-only store still trains; the statistics travel in the checkpoint anyway
        pass
    return stats


@dataclass
class SampleDatasets:
    """Train and validation datasets of one experiment, with the statistics the model carries."""

    train: ray.data.Dataset
    val: ray.data.Dataset
    info: StoreInfo
    norm: dict[str, Any]
    val_bytes: int  # in-memory size of the validation part (see part_bytes)

    @property
    def n_dynamic(self) -> int:
        return len(self.info.dynamic_vars)

    @property
    def n_static(self) -> int:
        return len(self.info.static_vars)


def build_datasets(data_cfg: Any) -> SampleDatasets:
    """Datasets for a config's ``data`` section (``source``, ``store``, ``split``)."""
    info = store_info(data_cfg.store, data_cfg.source)
    spec = data_cfg.split
    plan = info.plan(spec)  # one plan per run: the statistics, each part and its size
    kind = store_kind(info)
    # val_fraction 0: no validation part, so no early stopping; the run trains every epoch and keeps the last
    stats = norm_stats(info, spec, plan)
    if spec.val_fraction > 0:
        val, val_bytes = kind.dataset(info, plan, "val"), kind.part_bytes(info, plan, "val")
    else:
        val, val_bytes = ray.data.from_items([]), 0
    return SampleDatasets(kind.dataset(info, plan, "train"), val, info, stats.to_dict(), val_bytes)
