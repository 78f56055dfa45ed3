"""The Grid store: TEM-MDM simulations as a Zarr v3 "compressed land-cell" store, and its block reader.

Layout (DESIGN.md): ``dynamic (year, cell, day, var)`` chunked ``(1, C, 365, n_var)``, ``target (year, cell, day)``
chunked ``(1, C, 365)``, ``static (cell, var)``, ``annual (year, var)``, ``cell_ilat``, ``cell_ilon``, ``cell_area``
(m²), ``land_mask (lat, lon)`` (1 where every static map is finite, as the data mark land: what maps outline),
and ``wetland_fraction (month, cell)`` only when a wetland extent was given (``--wetland-area``; attribute
``wetland_extent`` names its source, null without). Chunks are grouped into shards (sharding codec) of
``chunks_per_shard`` chunks along the cell axis. One chunk of one year is one block of samples (one Ray Data read
task).

Valid cells (the only cells stored): every static map finite, ``wetlandtype > 0``, and in every prepared year the
daily drivers and monthly NPP finite on every day/month and the target finite on at least one day (NaN target days
stay NaN and are masked). The wetland extent does not select cells: a cell with no wetland in a month adds 0.

Preparation streams: pass 1 builds the valid-cell mask one variable-year at a time in bands of latitude rows;
pass 2 writes one year at a time, one shard of cells at a time. Peak memory does not depend on the number of
years. The store is written aside and renamed (local paths) and carries ``complete: true`` only once finished.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from xmw_ray.console import Step
from xmw_ray.data import schema
from xmw_ray.data.contract import (
    ANNUAL_VARS,
    DAILY_VARS,
    DAYS_PER_YEAR,
    DYNAMIC_VARS,
    STATIC_VARS,
    TARGET_VAR,
    UNITS,
    cell_area_m2,
    grid_coords,
    monthly_to_days,
)
from xmw_ray.data.features import FeatureSet, grid_features
from xmw_ray.data.normstats import NORMSTATS_DIR
from xmw_ray.data.options import DEFAULT_CELLS_PER_CHUNK, DEFAULT_CHUNKS_PER_SHARD
from xmw_ray.data.temmdm import TemMdmSource, open_temmdm
from xmw_ray.data.wetland_extent import WetlandExtent, read_wetland_extent
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import (
    directory_aside,
    is_url,
    refuse_foreign_local,
    refuse_foreign_objects,
    remove_objects,
)

GRID_FORMAT = "xmw-grid-v1"
#: Bytes of one latitude band read at a time during the validity pass.
_BAND_BYTES = 64 * 2**20
VALID_RULE = (
    "statics finite; wetlandtype > 0; every year: daily drivers and "
    "NPP finite on all days, target finite on at least one day"
)


def _band_rows(nlon: int) -> int:
    return max(1, _BAND_BYTES // (nlon * 372 * 4))


def _valid_mask(src: TemMdmSource, progress: Callable[[str], None]) -> np.ndarray:
    """(nlat, nlon) bool mask of valid cells."""
    mask = np.ones((src.nlat, src.nlon), dtype=bool)
    for var in STATIC_VARS:
        with src.static(var) as r:
            values = r.rows(0, src.nlat)
        mask &= np.isfinite(values)
        if var == "wetlandtype":
            mask &= np.nan_to_num(values, nan=0.0) > 0
    band = _band_rows(src.nlon)
    for i, year in enumerate(src.years):
        progress(Step(f"checking {year}", i + 1, len(src.years), "checking years"))
        for var in DAILY_VARS:
            reader = src.daily(var, year)
            for r0 in range(0, src.nlat, band):
                r1 = min(src.nlat, r0 + band)
                mask[r0:r1] &= np.isfinite(reader.rows(r0, r1)).all(axis=-1)
            reader.close()
        with src.npp(year) as reader:
            for r0 in range(0, src.nlat, band):
                r1 = min(src.nlat, r0 + band)
                mask[r0:r1] &= np.isfinite(reader.rows(r0, r1)).all(axis=-1)
        reader = src.target(year)
        for r0 in range(0, src.nlat, band):
            r1 = min(src.nlat, r0 + band)
            mask[r0:r1] &= np.isfinite(reader.rows(r0, r1)).any(axis=-1)
        reader.close()
    return mask


def _land_mask(src: TemMdmSource) -> np.ndarray:
    """(nlat, nlon) bool: every static map finite (the data mark ocean NaN); maps draw its outline."""
    land = np.ones((src.nlat, src.nlon), dtype=bool)
    for var in STATIC_VARS:
        with src.static(var) as r:
            land &= np.isfinite(r.rows(0, src.nlat))
    return land


def _compressor():
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


#: Top-level entries of a Grid store: the group's metadata, its arrays and the cached statistics.
GRID_STORE_ENTRIES = ("zarr.json", "dynamic", "target", "static", "annual", "cell_ilat", "cell_ilon", "cell_area",
                      "land_mask", "wetland_fraction", NORMSTATS_DIR)


def grid_store_key(key: str) -> bool:
    """Whether ``key`` (relative to the store) is an object a Grid store owns: replacing the store deletes it."""
    return key.split("/", 1)[0] in GRID_STORE_ENTRIES


def _write_store(
    src: TemMdmSource,
    target: str,
    mask: np.ndarray,
    extent: WetlandExtent | None,
    cells_per_chunk: int,
    chunks_per_shard: int,
    progress: Callable[[str], None],
) -> None:
    import zarr

    ilat, ilon = np.nonzero(mask)  # row-major: a shard covers a contiguous band of rows
    n = len(ilat)
    years = src.years
    nv = len(DYNAMIC_VARS)
    c, shard = cells_per_chunk, cells_per_chunk * chunks_per_shard
    root = zarr.open_group(store=target, mode="w", zarr_format=3)
    comp = _compressor()
    dyn = root.create_array("dynamic", shape=(len(years), n, DAYS_PER_YEAR, nv), chunks=(1, c, DAYS_PER_YEAR, nv),
                            shards=(1, shard, DAYS_PER_YEAR, nv), dtype="float32", compressors=comp,
                            fill_value=np.nan)
    tgt = root.create_array("target", shape=(len(years), n, DAYS_PER_YEAR), chunks=(1, c, DAYS_PER_YEAR),
                            shards=(1, shard, DAYS_PER_YEAR), dtype="float32", compressors=comp, fill_value=np.nan)
    static = np.empty((n, len(STATIC_VARS)), dtype=np.float32)
    for j, var in enumerate(STATIC_VARS):
        with src.static(var) as r:
            static[:, j] = r.rows(0, src.nlat)[ilat, ilon]
    root.create_array("static", data=static, compressors=comp)
    root.create_array("annual", data=src.annual_values(years), compressors=comp)
    root.create_array("cell_ilat", data=ilat.astype(np.int32), compressors=comp)
    root.create_array("cell_ilon", data=ilon.astype(np.int32), compressors=comp)
    lat, _ = grid_coords(src.res)
    root.create_array("cell_area", data=cell_area_m2(lat[ilat], src.res).astype(np.float64), compressors=comp)
    root.create_array("land_mask", data=_land_mask(src).astype(np.uint8), compressors=comp)
    if extent is not None:
        root.create_array("wetland_fraction", data=extent.monthly[:, ilat, ilon], compressors=comp)

    for yi, year in enumerate(years):
        progress(Step(f"writing {year} ({n} cells)", yi + 1, len(years), "writing years"))
        daily = [src.daily(var, year) for var in DAILY_VARS]
        npp = src.npp(year)
        tr = src.target(year)
        try:
            for c0 in range(0, n, shard):
                c1 = min(n, c0 + shard)
                r0, r1 = int(ilat[c0]), int(ilat[c1 - 1]) + 1
                rows, cols = ilat[c0:c1] - r0, ilon[c0:c1]
                block = np.empty((c1 - c0, DAYS_PER_YEAR, nv), dtype=np.float32)
                for j, reader in enumerate(daily):
                    block[:, :, j] = reader.rows(r0, r1)[rows, cols]
                block[:, :, len(DAILY_VARS)] = monthly_to_days(npp.rows(r0, r1)[rows, cols])
                dyn[yi, c0:c1] = block
                tgt[yi, c0:c1] = tr.rows(r0, r1)[rows, cols]
        finally:
            for reader in (*daily, npp, tr):
                reader.close()

    root.attrs.update({
        "format": GRID_FORMAT,
        "features": grid_features().to_record(),
        "dynamic_vars": list(DYNAMIC_VARS),
        "static_vars": list(STATIC_VARS),
        "annual_vars": list(ANNUAL_VARS),
        "target_var": TARGET_VAR,
        "units": {v: UNITS[v] for v in (*DYNAMIC_VARS, *STATIC_VARS, *ANNUAL_VARS, TARGET_VAR)},
        "grid": {"res": src.res, "nlat": src.nlat, "nlon": src.nlon},
        "years": list(years),
        "cells_per_chunk": c,
        "chunks_per_shard": chunks_per_shard,
        "valid_rule": VALID_RULE,
        "wetland_extent": None if extent is None else extent.attrs(),
        "complete": True,
    })


def prepare_grid(
    src: str | Path,
    out: str | Path,
    years: tuple[int, int] | None = None,
    cells_per_chunk: int = DEFAULT_CELLS_PER_CHUNK,
    chunks_per_shard: int = DEFAULT_CHUNKS_PER_SHARD,
    progress: Callable[[str], None] = lambda msg: None,
    wetland_area: str | Path | None = None,
) -> dict:
    """Build the Grid store at ``out`` from TEM-MDM files in ``src``; returns a short summary.

    ``wetland_area``: a NetCDF wetland-fraction map (``wetland_extent``); without it the store has no extent and
    ``xmw infer`` writes maps of intensity but no budget."""
    if cells_per_chunk < 1 or chunks_per_shard < 1:
        raise XmwInputError("--cells-per-chunk and chunks per shard must be positive")
    if not is_url(out) and refuse_foreign_local(out, grid_store_key, "Grid store"):
        progress(f"replacing existing grid store {out}")
    source = open_temmdm(src, years)
    extent = None
    if wetland_area is not None:
        extent = read_wetland_extent(wetland_area, source.res)
        if extent.nan_values:
            progress(f"wetland extent: {extent.nan_values} NaN values counted as no wetland")
    mask = _valid_mask(source, progress)
    n = int(mask.sum())
    if n == 0:
        raise XmwInputError(f"{source.tem_dir}: no valid cell ({VALID_RULE})")
    if is_url(out):  # no rename on object stores: readers refuse the store until ``complete`` is set, last
        refuse_foreign_objects(str(out), grid_store_key)
        try:
            _write_store(source, str(out), mask, extent, cells_per_chunk, chunks_per_shard, progress)
        except BaseException:  # what it wrote (all of it ours, checked above) goes: no partial store is left
            remove_objects(str(out), grid_store_key)
            raise
    else:
        with directory_aside(out, grid_store_key, "Grid store") as tmp:
            _write_store(source, str(tmp), mask, extent, cells_per_chunk, chunks_per_shard, progress)
    return {"cells": n, "years": list(source.years), "res": source.res, "cell_years": n * len(source.years),
            "wetland_extent": None if extent is None else extent.attrs()}


#: What every Grid store holds (the writer above; ``land_mask`` is optional: older stores have none).
GRID_ARRAYS = ("dynamic", "target", "static", "annual", "cell_ilat", "cell_ilon", "cell_area")
GRID_ATTRS = ("dynamic_vars", "static_vars", "annual_vars", "units", "grid", "years", "cells_per_chunk")


class GridStore:
    """Read side of the Grid store (local path or any URL zarr/fsspec understands)."""

    def __init__(self, root, path: str, attrs: dict):
        self.root = root  # zarr.Group
        self.path = path
        self._attrs = attrs
        self._ilat = np.asarray(root["cell_ilat"][:], dtype=np.int64)
        self._ilon = np.asarray(root["cell_ilon"][:], dtype=np.int64)
        self._annual = np.asarray(root["annual"][:], dtype=np.float32)
        self._entities: np.ndarray | None = None
        self._static: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | Path, storage_options: dict | None = None) -> GridStore:
        import zarr

        try:
            root = zarr.open_group(store=str(path), mode="r", storage_options=storage_options)
        except Exception as exc:
            raise XmwInputError(f"{path}: not a Grid store ({type(exc).__name__})") from exc
        attrs = root.attrs.asdict()
        if attrs.get("format") != GRID_FORMAT:
            raise XmwInputError(f"{path}: not a Grid store (format attribute missing)")
        if not attrs.get("complete"):
            raise XmwInputError(f"{path}: Grid store is incomplete (preparation did not finish)")
        arrays = GRID_ARRAYS + (("wetland_fraction",) if attrs.get("wetland_extent") else ())
        lacking = [a for a in GRID_ATTRS if a not in attrs] or [a for a in arrays if a not in root]
        if lacking:  # a copy cut short or a hand-edited store: one line, not a KeyError at first use
            raise XmwInputError(f"{path}: Grid store lacks {lacking[0]!r} (damaged or partly copied; prepare it "
                                f"again with xmw prepare grid)")
        return cls(root, str(path), attrs)

    # --- description ------------------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return self._attrs

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(int(y) for y in self._attrs["years"])

    @property
    def n_cells(self) -> int:
        return len(self._ilat)

    @property
    def cells_per_chunk(self) -> int:
        return int(self._attrs["cells_per_chunk"])

    @property
    def n_chunks(self) -> int:
        return -(-self.n_cells // self.cells_per_chunk)

    @property
    def dynamic_vars(self) -> tuple[str, ...]:
        return tuple(self._attrs["dynamic_vars"])

    @property
    def static_vars(self) -> tuple[str, ...]:
        """Names of the ``static`` sample vector: static maps, then the annual concentrations."""
        return tuple(self._attrs["static_vars"]) + tuple(self._attrs["annual_vars"])

    @property
    def units(self) -> dict[str, str]:
        return dict(self._attrs["units"])

    @property
    def features(self) -> FeatureSet:
        """What each input slot means (``features.py``); provenance ``unknown`` for a store prepared before."""
        return FeatureSet.of_store(self._attrs.get("features"), self.dynamic_vars, self.static_vars, self.path)

    @property
    def res(self) -> float:
        return float(self._attrs["grid"]["res"])

    @property
    def nlat(self) -> int:
        return int(self._attrs["grid"]["nlat"])

    @property
    def nlon(self) -> int:
        return int(self._attrs["grid"]["nlon"])

    @property
    def cell_ilat(self) -> np.ndarray:
        return self._ilat

    @property
    def cell_ilon(self) -> np.ndarray:
        return self._ilon

    @property
    def cell_area(self) -> np.ndarray:
        return np.asarray(self.root["cell_area"][:])

    @property
    def land_mask(self) -> np.ndarray | None:
        """``(nlat, nlon)`` bool land (every static map finite), or None for a store prepared before it was kept."""
        if "land_mask" not in self.root:
            return None
        return np.asarray(self.root["land_mask"][:]).astype(bool)

    @property
    def wetland_fraction(self) -> np.ndarray | None:
        """Wetland fraction ``(12 months, cell)``, or None when the store was prepared without a wetland extent."""
        if self._attrs.get("wetland_extent") is None:
            return None
        return np.asarray(self.root["wetland_fraction"][:])

    @property
    def entities(self) -> np.ndarray:
        """Entity id of every cell (``c<ilat>_<ilon>``), in cell order."""
        if self._entities is None:
            self._entities = np.array([schema.cell_entity(a, b) for a, b in zip(self._ilat, self._ilon, strict=True)])
        return self._entities

    def cell_index(self, ilat: np.ndarray, ilon: np.ndarray) -> np.ndarray:
        """Store cell index of grid cells ``(ilat, ilon)``; -1 where the cell is not a valid (stored) cell."""
        key = self._ilat * self.nlon + self._ilon  # sorted: cells are stored row-major
        want = np.asarray(ilat, dtype=np.int64) * self.nlon + np.asarray(ilon, dtype=np.int64)
        pos = np.clip(np.searchsorted(key, want), 0, max(len(key) - 1, 0))
        return np.where(key[pos] == want, pos, -1)

    def chunk_cells(self, chunk_index: int) -> tuple[int, int]:
        if not 0 <= chunk_index < self.n_chunks:
            raise IndexError(f"chunk {chunk_index} out of range (0..{self.n_chunks - 1})")
        c0 = chunk_index * self.cells_per_chunk
        return c0, min(self.n_cells, c0 + self.cells_per_chunk)

    # --- data -------------------------------------------------------------------------------------------------
    def read_inputs(self, year_index: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Model inputs of store cells ``c0..c1`` (any range, across chunks) in one year: ``dynamic (n, 365, v)``
        and ``static (n, s)`` with the year's annual record appended. Inference needs no target, so none is read."""
        static = np.concatenate(
            [np.asarray(self.root["static"][c0:c1], dtype=np.float32),
             np.broadcast_to(self._annual[year_index], (c1 - c0, self._annual.shape[1]))], axis=1)
        return np.asarray(self.root["dynamic"][year_index, c0:c1]), static

    def read_block(self, year_index: int, chunk_index: int) -> dict[str, np.ndarray]:
        """One chunk of one year in the sample schema (``xmw_ray.data.schema``)."""
        c0, c1 = self.chunk_cells(chunk_index)
        n = c1 - c0
        dynamic, static = self.read_inputs(year_index, c0, c1)
        return {
            schema.DYNAMIC: dynamic,
            schema.STATIC: static,
            schema.TARGET: np.asarray(self.root["target"][year_index, c0:c1]),
            schema.ENTITY: self.entities[c0:c1],
            schema.YEAR: np.full(n, self.years[year_index], dtype=np.int64),
        }

    def read_samples(self, year_index: np.ndarray, cell_index: np.ndarray) -> dict[str, np.ndarray]:
        """Arbitrary samples ``(year_index[i], cell_index[i])`` in the sample schema (random access).

        One orthogonal selection per distinct year: zarr fetches and decodes each needed chunk once, concurrently.
        """
        yi = np.asarray(year_index, dtype=np.int64)
        ci = np.asarray(cell_index, dtype=np.int64)
        n = len(yi)
        dyn_arr, tgt_arr = self.root["dynamic"], self.root["target"]
        dynamic = np.empty((n, DAYS_PER_YEAR, dyn_arr.shape[-1]), dtype=np.float32)
        target = np.empty((n, DAYS_PER_YEAR), dtype=np.float32)
        for y in np.unique(yi):
            sel = np.flatnonzero(yi == y)
            cells, inverse = np.unique(ci[sel], return_inverse=True)
            dynamic[sel] = dyn_arr.oindex[int(y), cells][inverse]
            target[sel] = tgt_arr.oindex[int(y), cells][inverse]
        if self._static is None:
            self._static = np.asarray(self.root["static"][:], dtype=np.float32)
        static = self._static[ci]
        return {
            schema.DYNAMIC: dynamic,
            schema.STATIC: np.concatenate([static, self._annual[yi]], axis=1),
            schema.TARGET: target,
            schema.ENTITY: self.entities[ci],
            schema.YEAR: np.asarray(self.years, dtype=np.int64)[yi],
        }
