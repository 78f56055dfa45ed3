"""The flux-map store: CF-conventions Zarr v3 ``(time, lat, lon)`` maps that ``xarray.open_zarr`` opens directly.

Layout (every array carries zarr v3 ``dimension_names``, which xarray reads as its dimensions):

- ``lat (lat)``, ``lon (lon)``: cell centres (degrees_north / degrees_east).
- ``time (time)``: int days since ``Y0-01-01``, calendar ``noleap``; day ``d`` of year ``Y`` is ``(Y-Y0)*365+d``.
- ``month_time`` / ``year_time`` (start of each month / year) with ``*_bnds (…, bnds)`` CF bounds.
- ``ch4_flux (time, lat, lon)`` float32 daily flux (mg CH4 m-2 d-1, NaN off wetland), chunks
  ``(365, band, nlon)``: each year owns whole chunks along time.
- ``ch4_flux_monthly (month_time, lat, lon)`` chunks ``(12, nlat, nlon)``; ``ch4_flux_annual (year_time, lat, lon)``
  chunks ``(1, nlat, nlon)``; ``wetland_area (month, lat, lon)`` m² (cell area × that month's wetland fraction) used
  by the budget, NaN everywhere when the Grid store has no wetland extent (then no budget is committed).

Resuming: only the driver writes, one whole year at a time, so no two writers ever touch one chunk. The commit
point of a year is its marker ``_done/<year>.json`` (holding that year's budget), written after every chunk of
the year; a year without a marker is recomputed in full by the next run and overwrites its own chunks. The
metadata is consolidated, so readers never list the store (``_done/``, ``budget.csv``, ``plots/`` are ignored).

Local paths and ``s3://`` / ``gs://`` URLs alike: the empty store is created aside (a local folder renamed, or
uploaded with its root ``zarr.json`` last), chunks are whole-object writes, and each marker is one PUT, so the
per-year commit holds on object stores too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmw_ray.data.contract import (
    DAYS_IN_MONTH,
    DAYS_PER_YEAR,
    FLUX_UNIT,
    MONTH_STARTS,
    grid_coords,
    grid_shape,
)
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import directory_aside, is_url, upload_aside, write_bytes_atomic

MAPS_FORMAT = "xmw-fluxmaps-v1"
FLUX_VAR = "ch4_flux"
MONTHLY_VAR = "ch4_flux_monthly"
ANNUAL_VAR = "ch4_flux_annual"
AREA_VAR = "wetland_area"
DONE_DIR = "_done"
#: zstd level of the map arrays. The driver compresses the whole (time, lat, lon) grid of every year, mostly NaN
#: off wetland: level 1 takes 0.41 s of CPU per 1-degree year where level 3 took 0.93 s, for 4 % more bytes.
MAPS_ZSTD_LEVEL = 1
#: Largest daily chunk (bytes, uncompressed): the number of latitude rows per chunk follows from it.
MAX_CHUNK_BYTES = 32 * 2**20
#: Arrays of an empty store as ``_create`` writes it; the root ``zarr.json`` (consolidated metadata) goes last.
CREATED_ARRAYS = ("lat", "lon", "month", "time", "month_time", "month_time_bnds", "year_time", "year_time_bnds", FLUX_VAR,
                  MONTHLY_VAR, ANNUAL_VAR, AREA_VAR)
ROOT_METADATA = "zarr.json"
#: Attributes that must match for a rerun to resume an existing store.
IDENTITY_KEYS = ("years", "source_checkpoint_sha256", "source_grid_store", "grid_cells", "grid_resolution_deg",
                 "wetland_extent")


# --- small file helpers (local paths and fsspec URLs alike) -------------------------------------------------
def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


def put_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` whole (``write_bytes_atomic``: one PUT on object stores, a temporary file and a
    rename on local disks)."""
    write_bytes_atomic(url, data)


def get_bytes(url: str) -> bytes | None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class MapSpec:
    """What a flux-map store holds and where it came from (the identity a rerun must match)."""

    res: float
    years: tuple[int, ...]
    checkpoint: str
    checkpoint_sha256: str
    grid_store: str
    grid_cells: int
    model: dict[str, Any]
    wetland_extent: str | None = None  # the Grid store's extent source; None: maps only, no budget

    def identity(self) -> dict[str, Any]:
        return {"years": list(self.years), "source_checkpoint_sha256": self.checkpoint_sha256,
                "source_grid_store": self.grid_store, "grid_cells": self.grid_cells,
                "grid_resolution_deg": self.res, "wetland_extent": self.wetland_extent}


def band_rows(nlat: int, nlon: int) -> int:
    """Latitude rows per daily chunk so that one chunk stays under ``MAX_CHUNK_BYTES``."""
    return int(np.clip(MAX_CHUNK_BYTES // (DAYS_PER_YEAR * nlon * 4), 1, nlat))


def _time_attrs(y0: int, bounds: str | None = None) -> dict[str, Any]:
    attrs = {"units": f"days since {y0:04d}-01-01", "calendar": "noleap", "standard_name": "time", "axis": "T"}
    if bounds:
        attrs["bounds"] = bounds
    return attrs


def _flux_attrs(long_name: str) -> dict[str, Any]:
    return {"units": FLUX_UNIT, "long_name": long_name, "cell_methods": "time: mean"}


def _create(path: str, spec: MapSpec, wetland_area_map: np.ndarray) -> None:
    """Write the empty store (coordinates, NaN-filled map arrays, attributes) and consolidate its metadata."""
    import zarr
    from zarr.codecs import BloscCodec

    nlat, nlon = grid_shape(spec.res)
    lat, lon = grid_coords(spec.res)
    ny = len(spec.years)
    comp = BloscCodec(cname="zstd", clevel=MAPS_ZSTD_LEVEL, shuffle="shuffle")
    root = zarr.open_group(store=path, mode="w", zarr_format=3)

    def coord(name: str, data: np.ndarray, dims: Sequence[str], attrs: dict[str, Any]) -> None:
        root.create_array(name, data=data, dimension_names=list(dims), attributes=attrs)

    coord("lat", lat, ["lat"], {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude",
                                "axis": "Y"})
    coord("lon", lon, ["lon"], {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude",
                                "axis": "X"})
    coord("month", np.arange(1, 13, dtype=np.int32), ["month"], {"long_name": "calendar month of the wetland area"})
    y0 = spec.years[0]
    year_start = np.arange(ny, dtype=np.int32) * DAYS_PER_YEAR
    coord("time", np.arange(ny * DAYS_PER_YEAR, dtype=np.int32), ["time"], _time_attrs(y0))
    month_start = (year_start[:, None] + MONTH_STARTS[None, :]).reshape(-1).astype(np.int32)
    month_end = month_start + np.tile(DAYS_IN_MONTH, ny).astype(np.int32)
    coord("month_time", month_start, ["month_time"], _time_attrs(y0, "month_time_bnds"))
    coord("month_time_bnds", np.stack([month_start, month_end], axis=1), ["month_time", "bnds"], {})
    coord("year_time", year_start, ["year_time"], _time_attrs(y0, "year_time_bnds"))
    coord("year_time_bnds", np.stack([year_start, year_start + DAYS_PER_YEAR], axis=1), ["year_time", "bnds"], {})

    def flux(name: str, dims: list[str], shape: tuple[int, ...], chunks: tuple[int, ...], long_name: str) -> None:
        root.create_array(name, shape=shape, chunks=chunks, dtype="float32", fill_value=np.nan, compressors=comp,
                          dimension_names=dims, attributes=_flux_attrs(long_name))

    flux(FLUX_VAR, ["time", "lat", "lon"], (ny * DAYS_PER_YEAR, nlat, nlon), (DAYS_PER_YEAR, band_rows(nlat, nlon), nlon),
         "daily wetland CH4 emission")
    flux(MONTHLY_VAR, ["month_time", "lat", "lon"], (ny * 12, nlat, nlon), (12, nlat, nlon),
         "monthly mean wetland CH4 emission")
    flux(ANNUAL_VAR, ["year_time", "lat", "lon"], (ny, nlat, nlon), (1, nlat, nlon),
         "annual mean wetland CH4 emission")
    area = np.broadcast_to(wetland_area_map, (12, nlat, nlon))  # a static (lat, lon) map holds every month
    root.create_array(AREA_VAR, data=area.astype(np.float64), compressors=comp,
                      dimension_names=["month", "lat", "lon"],
                      attributes={"units": "m2", "long_name": "wetland area (cell area x the month's wetland fraction) "
                                                           "used by the budget; NaN where the Grid store has no cell "
                                                           "or no wetland extent"})
    root.attrs.update({
        "Conventions": "CF-1.8",
        "title": "Wetland CH4 emission predicted by an xmw_ray model",
        "source": f"xmw_ray inference of checkpoint {spec.checkpoint} over Grid store {spec.grid_store}",
        "source_checkpoint": spec.checkpoint,
        "source_grid_store": spec.grid_store,
        "model": json.dumps(spec.model, sort_keys=True),
        "xmw_format": MAPS_FORMAT,
        "calendar_note": "365-day years: leap days are dropped, as in X-MethaneWet",
        "completion": f"a year is complete once {DONE_DIR}/<year>.json exists; other years hold NaN or partial data",
        "budget_csv": "budget.csv (Tg CH4 yr-1 per year, global and by latitude band)" if spec.wetland_extent
        else "none: the Grid store has no wetland extent (prepare grid --wetland-area FILE)",
        "complete": False,
        **spec.identity(),
    })
    _consolidate(path)


def _consolidate(path: str) -> None:
    """Consolidate the metadata (zarr warns that v3 consolidation is not in the spec yet; xarray relies on it)."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
        zarr.consolidate_metadata(path)


def _created_key(key: str) -> bool:
    """Whether ``key`` (relative to the store) is an object ``_create`` writes: a rerun may replace it."""
    return key == ROOT_METADATA or key.split("/", 1)[0] in CREATED_ARRAYS


def _exists(url: str) -> tuple[bool, bool]:
    """(something is at ``url``, it is a Zarr group)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return False, False
    if fs.exists(f"{path}/{ROOT_METADATA}"):
        return True, True
    empty_dir = fs.isdir(path) and not fs.ls(path)
    return not empty_dir, False


class FluxMaps:
    """An open flux-map store: which years are done, and writing one finished year."""

    def __init__(self, path: str, spec: MapSpec, cell_ilat: np.ndarray, cell_ilon: np.ndarray):
        import zarr

        ilat = np.asarray(cell_ilat, dtype=np.int64)
        if np.any(np.diff(ilat) < 0):
            raise ValueError("cells must be ordered by latitude row (the Grid store's row-major order)")
        self.path = str(path)
        self.spec = spec
        self._ilat = ilat
        self._ilon = np.asarray(cell_ilon, dtype=np.int64)
        self._root = zarr.open_group(store=self.path, mode="r+")
        self.nlat, self.nlon = grid_shape(spec.res)

    @classmethod
    def open_or_create(cls, path: str, spec: MapSpec, cell_ilat: np.ndarray, cell_ilon: np.ndarray,
                       wetland_area_map: np.ndarray) -> FluxMaps:
        """Open the store at ``path`` for resuming (it must come from the same run), or create it."""
        path = str(path)
        present, is_group = _exists(path)
        if present and not is_group and not is_url(path):
            raise XmwInputError(f"{path}: exists and is not a flux-map store; choose another --out")
        if is_url(path) and not is_group:  # what a creation that did not finish left is replaced
            with upload_aside(path, ROOT_METADATA, _created_key) as tmp:
                _create(str(tmp), spec, wetland_area_map)
        elif not present:
            with directory_aside(path) as tmp:
                _create(str(tmp), spec, wetland_area_map)
        maps = cls(path, spec, cell_ilat, cell_ilon)
        attrs = maps._root.attrs.asdict()
        if attrs.get("xmw_format") != MAPS_FORMAT:
            raise XmwInputError(f"{path}: a Zarr store that is not a flux-map store; choose another --out")
        differ = [k for k, v in spec.identity().items() if attrs.get(k) != v]
        if differ:
            raise XmwInputError(f"{path}: holds maps of another run ({', '.join(differ)} differ); "
                                "choose another --out or remove it")
        return maps

    # --- completion --------------------------------------------------------------------------------------------
    def _marker(self, year: int) -> str:
        return join(self.path, DONE_DIR, f"{year}.json")

    def _commit(self, year: int) -> dict | None:
        """The commit marker of ``year``, or None when the year is not done (or its marker is unreadable)."""
        raw = get_bytes(self._marker(year))
        if raw is None:
            return None
        try:
            marker = json.loads(raw)
            budget = marker["budget_tg"]
            return marker if budget is None or isinstance(budget, dict) else None
        except (ValueError, KeyError, TypeError):  # unreadable marker: the year is redone
            return None

    def year_budget(self, year: int) -> dict[str, float] | None:
        """The committed budget of ``year`` (Tg CH4 yr-1), or None when the year is not done or has no budget."""
        marker = self._commit(year)
        return None if marker is None or marker["budget_tg"] is None else dict(marker["budget_tg"])

    def years_done(self) -> list[int]:
        return [y for y in self.spec.years if self._commit(y) is not None]

    def commit_year(self, year: int, budget_tg: dict[str, float] | None) -> None:
        """Mark ``year`` done (the commit point): call only after ``write_year`` returned."""
        put_bytes(self._marker(year), json.dumps({"year": year, "budget_tg": budget_tg,
                                                   "cells": len(self._ilat)}).encode())

    def finalize(self) -> bool:
        """Record ``complete: true`` in the attributes once every year is done; returns whether it is."""
        complete = len(self.years_done()) == len(self.spec.years)
        if complete and not self._root.attrs.get("complete"):
            self._root.attrs["complete"] = True
            _consolidate(self.path)
        return complete

    # --- data --------------------------------------------------------------------------------------------------
    def write_year(self, year: int, flux: np.ndarray) -> np.ndarray:
        """Write one year: ``flux (n_cells, 365)`` in store cell order → daily bands, monthly and annual means;
        returns the ``(nlat, nlon)`` annual-mean map (for its figure, without reading it back)."""
        if flux.shape != (len(self._ilat), DAYS_PER_YEAR):
            raise ValueError(f"expected flux ({len(self._ilat)}, {DAYS_PER_YEAR}), got {flux.shape}")
        yi = self.spec.years.index(year)
        daily = self._root[FLUX_VAR]
        band = daily.chunks[1]
        t0 = yi * DAYS_PER_YEAR
        for r0 in range(0, self.nlat, band):
            r1 = min(self.nlat, r0 + band)
            c0, c1 = np.searchsorted(self._ilat, [r0, r1])
            chunk = np.full((DAYS_PER_YEAR, r1 - r0, self.nlon), np.nan, dtype=np.float32)
            chunk[:, self._ilat[c0:c1] - r0, self._ilon[c0:c1]] = flux[c0:c1].T
            daily[t0:t0 + DAYS_PER_YEAR, r0:r1, :] = chunk
        monthly = np.add.reduceat(flux.astype(np.float64), MONTH_STARTS, axis=1) / DAYS_IN_MONTH
        grid = np.full((12, self.nlat, self.nlon), np.nan, dtype=np.float32)
        grid[:, self._ilat, self._ilon] = monthly.T
        self._root[MONTHLY_VAR][yi * 12:(yi + 1) * 12] = grid
        grid = np.full((1, self.nlat, self.nlon), np.nan, dtype=np.float32)
        grid[0, self._ilat, self._ilon] = flux.mean(axis=1, dtype=np.float64)
        self._root[ANNUAL_VAR][yi:yi + 1] = grid
        return grid[0]

    def annual_mean(self, year: int) -> np.ndarray:
        """The ``(nlat, nlon)`` annual-mean map of ``year`` (one chunk read)."""
        return np.asarray(self._root[ANNUAL_VAR][self.spec.years.index(year)])
