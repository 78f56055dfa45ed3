"""One store interface: what training, transfer, tuning, evaluation and inference need of a prepared store, which
the Grid store and the Site store both implement (``STORE_KINDS``).

A kind says whether a path holds one of its stores, describes it (``StoreInfo``: variables, entities, years,
feature meanings), streams the samples of a split part as a Ray Dataset in the one sample schema, sizes a part
from entity ids and years alone, computes the training split's normalisation statistics, and names the metadata
object its writer commits last (the store's fingerprint). Nothing outside this module branches on a store's kind;
adding a store kind is one class here plus its writer and reader. Ray is imported only when a dataset is built, so
``xmw inspect`` does not pay for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from xmw_ray.data.features import FeatureSet
from xmw_ray.data.grid_store import GRID_FORMAT, GridStore
from xmw_ray.data.normstats import NormStats, grid_normstats, site_normstats
from xmw_ray.data.site_store import COMMON_METADATA, SiteStore
from xmw_ray.data.splits import PART_CODES, SplitPlan, SplitSpec
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import is_url

if TYPE_CHECKING:
    import ray.data


@functools.lru_cache(maxsize=8)
def open_grid(path: str) -> GridStore:
    """One open Grid store per process and path (zarr metadata is read once)."""
    return GridStore.open(path)


@dataclass
class StoreInfo:
    """What a store offers a model: its kind, variable names, entities and years."""

    kind: str  # a key of STORE_KINDS: "grid" | "sites"
    path: str
    dynamic_vars: tuple[str, ...]
    static_vars: tuple[str, ...]
    entities: list[str]
    years_of: dict[str, tuple[int, ...]] | None
    all_years: list[int]
    features: FeatureSet | None = None  # what each slot means (``features.py``); None: not read

    def plan(self, spec: SplitSpec) -> SplitPlan:
        return SplitPlan(spec, self.entities, self.years_of, self.all_years)


class StoreKind:
    """The interface every kind of prepared store implements."""

    #: The name configs use (``data.source``) and ``StoreInfo.kind`` holds.
    name: ClassVar[str]
    #: The metadata object the store's writer commits last: a store without it is not whole.
    commit_file: ClassVar[str]

    def holds(self, path: str) -> bool:
        """Whether ``path`` holds a store of this kind."""
        raise NotImplementedError

    def info(self, path: str) -> StoreInfo:
        raise NotImplementedError

    def dataset(self, info: StoreInfo, plan: SplitPlan | None, part: str,
                years: list[int] | None = None) -> ray.data.Dataset:
        """The samples of one split part (or ``"all"``), streamed, in the sample schema (``schema.py``)."""
        raise NotImplementedError

    def part_bytes(self, info: StoreInfo, plan: SplitPlan, part: str) -> int:
        """In-memory size of one split part, from entity ids and years alone (nothing is read)."""
        raise NotImplementedError

    def normstats(self, info: StoreInfo, plan: SplitPlan) -> NormStats:
        """Statistics of the training part of ``plan``."""
        raise NotImplementedError


class GridKind(StoreKind):
    name = "grid"
    commit_file = "zarr.json"  # the root metadata; its ``complete`` attribute is set last

    def holds(self, path: str) -> bool:
        if is_url(path):
            try:
                open_grid(path)
            except XmwInputError:
                return False
            return True
        p = Path(path) / self.commit_file
        return p.is_file() and GRID_FORMAT in p.read_text()

    def info(self, path: str) -> StoreInfo:
        g = open_grid(str(path))
        return StoreInfo(self.name, str(path), g.dynamic_vars, g.static_vars, list(g.entities), None, list(g.years),
                         g.features)

    def dataset(self, info: StoreInfo, plan: SplitPlan | None, part: str,
                years: list[int] | None = None) -> ray.data.Dataset:
        import ray.data

        from xmw_ray.data.ray_datasets import GridDatasource, grid_selection

        g = open_grid(info.path)
        sel = grid_selection(g, plan, part, years)
        if not sel:
            raise XmwInputError(f"{info.path}: split part {part!r} holds no sample")
        src = GridDatasource(info.path, sel, len(info.dynamic_vars), len(info.static_vars), g.cells_per_chunk,
                             g.n_cells)
        return ray.data.read_datasource(src, override_num_blocks=len(sel))

    def part_bytes(self, info: StoreInfo, plan: SplitPlan, part: str) -> int:
        from xmw_ray.data.ray_datasets import GridDatasource, grid_selection

        g = open_grid(info.path)
        return GridDatasource(info.path, grid_selection(g, plan, part), len(info.dynamic_vars), len(info.static_vars),
                              g.cells_per_chunk, g.n_cells).estimate_inmemory_data_size()

    def normstats(self, info: StoreInfo, plan: SplitPlan) -> NormStats:
        return grid_normstats(open_grid(info.path), plan.spec, plan)


class SiteKind(StoreKind):
    name = "sites"
    commit_file = COMMON_METADATA

    def holds(self, path: str) -> bool:
        if is_url(path):
            import fsspec

            fs, root = fsspec.core.url_to_fs(str(path))
            return fs.exists(f"{root}/{self.commit_file}")
        return (Path(path) / self.commit_file).is_file()

    def info(self, path: str) -> StoreInfo:
        s = SiteStore.open(path)
        years_of = {site: s.years_of(site) for site in s.sites}
        all_years = sorted({y for ys in years_of.values() for y in ys})
        return StoreInfo(self.name, str(path), s.dynamic_vars, s.static_vars, list(s.sites), years_of, all_years,
                         s.features)

    def dataset(self, info: StoreInfo, plan: SplitPlan | None, part: str,
                years: list[int] | None = None) -> ray.data.Dataset:
        import ray.data
        from ray.data.datasource.partitioning import Partitioning

        from xmw_ray.data.arrow_fs import arrow_filesystem
        from xmw_ray.data.ray_datasets import site_rows_to_samples

        filesystem, path = arrow_filesystem(info.path) if is_url(info.path) else (None, info.path)
        # Ray Data's Parquet reader V1: V2 (2.60's default) lists the files at every pass through a pool of up to
        # 32 FooterReader actors, i.e. process starts each epoch; for a Site store of a few dozen small files that
        # made a pass ~6x slower on a 2-core machine. V1 reads the footers once, here on the driver.
        ctx = ray.data.DataContext.get_current()
        v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
        try:
            ds = ray.data.read_parquet(path, filesystem=filesystem, partitioning=Partitioning("hive"),
                                       columns=["dynamic", "static", "target", "site", "year"],
                                       file_extensions=["parquet"])
        finally:
            ctx.use_datasource_v2 = v2
        return ds.map_batches(site_rows_to_samples, batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
                              fn_kwargs={"n_dynamic": len(info.dynamic_vars), "n_static": len(info.static_vars),
                                         "plan": plan, "part": part})

    def part_bytes(self, info: StoreInfo, plan: SplitPlan, part: str) -> int:
        from xmw_ray.data.ray_datasets import sample_bytes

        pairs = [(e, y) for e, ys in (info.years_of or {}).items() for y in ys]
        codes = plan.parts(plan.entity_index([e for e, _ in pairs]), np.array([y for _, y in pairs]))
        rows = int((codes == PART_CODES[part]).sum()) if part != "all" else len(pairs)
        return rows * sample_bytes(len(info.dynamic_vars), len(info.static_vars))

    def normstats(self, info: StoreInfo, plan: SplitPlan) -> NormStats:
        return site_normstats(SiteStore.open(info.path), plan.spec, plan)


#: Every store kind by name, in the order ``detect_kind`` asks them (the Site store's check is one ``exists``).
STORE_KINDS: dict[str, StoreKind] = {k.name: k for k in (SiteKind(), GridKind())}


def detect_kind(path: str) -> str | None:
    """The kind of store at ``path``, or None when it holds none."""
    return next((name for name, kind in STORE_KINDS.items() if kind.holds(str(path))), None)


def store_kind(info: StoreInfo) -> StoreKind:
    return STORE_KINDS[info.kind]


def store_info(path: str, kind: str | None = None) -> StoreInfo:
    """Open a store (kind detected unless given) and describe it; a path holding no store is read as a Grid store,
    whose reader says what is wrong with it."""
    if not is_url(path) and not Path(path).exists():
        raise XmwInputError(f"{path}: store not found (xmw prepare grid / xmw prepare sites writes one)")
    return STORE_KINDS[kind or detect_kind(path) or GridKind.name].info(path)


def check_trains_on_store(info: StoreInfo, spec: SplitSpec, key: str) -> None:
    """Before any Ray work: ``spec`` (the config's ``key``, e.g. ``data.split``) leaves some of the store's years
    to train on. A default split (training 1979-1998) on a store of later years used to fail after Ray started,
    with a traceback from the normalisation statistics."""
    try:
        if info.plan(spec).years_needed("train"):
            return
    except XmwInputError as exc:  # the split itself does not fit the store: name where it is configured
        raise XmwInputError(f"{key}: {exc}") from None
    years = f"{info.all_years[0]}-{info.all_years[-1]}" if info.all_years else "none"
    how = (f"train_years {spec.train_years[0]}-{spec.train_years[1]} less test_years "
           f"{spec.test_years[0]}-{spec.test_years[1]}" if spec.kind == "temporal" else f"kind {spec.kind}")
    raise XmwInputError(f"{key}: {how} leaves none of {info.path}'s years ({years}) to train on")


def store_fingerprint(path: str) -> str:
    """Identity of a store's content: its path and the modification time of the metadata object its writer commits
    last (the folder's own time changes when statistics are cached beside the data); the bare path when there is
    none to read (a URL)."""
    p = Path(path)
    for kind in STORE_KINDS.values():
        meta = p / kind.commit_file
        if meta.is_file():
            return f"{p.resolve()}@{meta.stat().st_mtime_ns}"
    return path
