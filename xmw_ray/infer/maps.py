"""The flux-map store: CF-conventions Zarr v3 ``(time, lat, lon)`` maps that ``xarray.open_zarr`` opens directly.

Layout (every array carries zarr v3 ``dimension_names``, which xarray reads as its dimensions):

- ``lat (lat)``, ``lon (lon)``: cell centres (degrees_north / degrees_east), with ``lat_bnds``/``lon_bnds``.
- ``time (time)``: int days since ``Y0-01-01``, calendar ``noleap``; day ``d`` of year ``Y`` is ``(Y-Y0)*365+d``;
  ``time_bnds`` (each day from its start to the next day's).
- ``month_time`` / ``year_time`` (start of each month / year) with ``*_bnds (…, bnds)`` CF bounds.
- ``ch4_flux (time, lat, lon)`` float32 daily flux (``mg m-2 d-1`` of CH4 per m² of wetland, NaN off wetland;
  CF ``standard_name`` ``surface_net_upward_mass_flux_of_methane_due_to_emission_from_wetland_biological_processes``),
  chunks
  ``(365, band, nlon)``: each year owns whole chunks along time.
- ``ch4_flux_monthly (month_time, lat, lon)`` chunks ``(12, nlat, nlon)``; ``ch4_flux_annual (year_time, lat, lon)``
  chunks ``(1, nlat, nlon)``; ``wetland_area (month, lat, lon)`` m² (cell area × that month's wetland fraction) used
  by the budget, NaN everywhere when the Grid store has no wetland extent (then no budget is committed).
- Only for an ensemble checkpoint (two or more members): ``ch4_flux_annual_spread (year_time, lat, lon)``, each
  cell's standard deviation across the members of their annual-mean flux (``ancillary_variables`` of
  ``ch4_flux_annual``), root attribute ``ensemble_members``, and each member's budget in the year's marker.

CF-1.8: UDUNITS units, standard names where the CF table has one, bounds, ``history``; provenance names the
checkpoint and Grid store relative to the map store's folder (URLs as given), never an absolute machine path; every
attribute is one NetCDF can hold (no booleans, no nulls), so ``xarray.open_zarr(...).to_netcdf(...)`` writes a file a
CF checker passes (``tests/test_cf_output.py`` runs the IOOS compliance checker on one).

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

from xmw_ray import __version__
from xmw_ray.data.contract import (
    DAYS_IN_MONTH,
    DAYS_PER_YEAR,
    FLUX_UNIT_CF,
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
#: Only for an ensemble checkpoint: each cell's spread across the members of their annual-mean flux.
SPREAD_VAR = "ch4_flux_annual_spread"
DONE_DIR = "_done"
#: zstd level of the map arrays. The driver compresses the whole (time, lat, lon) grid of every year, mostly NaN
#: off wetland: level 1 takes 0.41 s of CPU per 1-degree year where level 3 took 0.93 s, for 4 % more bytes.
MAPS_ZSTD_LEVEL = 1
#: Largest daily chunk (bytes, uncompressed): the number of latitude rows per chunk follows from it.
MAX_CHUNK_BYTES = 32 * 2**20
#: Arrays of an empty store as ``_create`` writes it; the root ``zarr.json`` (consolidated metadata) goes last.
CREATED_ARRAYS = ("lat", "lat_bnds", "lon", "lon_bnds", "month", "time", "time_bnds", "month_time", "month_time_bnds",
                  "year_time", "year_time_bnds", FLUX_VAR, MONTHLY_VAR, ANNUAL_VAR, AREA_VAR, SPREAD_VAR)
#: The CF standard name of the predicted flux: net (a model trained on towers may predict uptake), upward, per unit
#: area of the surface it comes from (here the wetland: ``comment`` says so), from wetland biological processes.
FLUX_STANDARD_NAME = "surface_net_upward_mass_flux_of_methane_due_to_emission_from_wetland_biological_processes"
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
    history: str = ""  # the CF ``history`` line of the command that created the store
    members: int = 0  # an ensemble's member count (>= 2): the store also keeps their spread; 0 for one model

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


def _flux_attrs(long_name: str, time_dim: str) -> dict[str, Any]:
    return {"units": FLUX_UNIT_CF, "long_name": f"{long_name} (mass of CH4 per unit wetland area)",
            "standard_name": FLUX_STANDARD_NAME, "cell_methods": f"{time_dim}: mean",
            "comment": "intensity per m2 of wetland, not of grid cell: multiply by wetland_area for the mass "
                       "flux of a cell (budget.csv does)"}


def _spread_attrs(members: int) -> dict[str, Any]:
    """What the spread variable is: the standard deviation across the members of their annual means (no CF
    standard name describes a spread across ensemble members, so it has none)."""
    return {"units": FLUX_UNIT_CF,
            "long_name": f"spread of the annual mean wetland CH4 emission across the {members} ensemble members: "
                         "standard deviation (ddof 0) of the members' annual means (mass of CH4 per unit wetland "
                         "area)",
            "cell_methods": "year_time: mean (of each member's daily flux, then the standard deviation across "
                            "the ensemble members)",
            "ensemble_members": members,
            "comment": "the uncertainty of ch4_flux_annual (the members' mean) that the members' disagreement "
                       "shows; not an error bar against observations"}


def _netcdf_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes NetCDF can store: a null is left out (``attrs.get`` gives None all the same), a bool becomes 0/1."""
    return {k: int(v) if isinstance(v, bool) else v for k, v in attrs.items() if v is not None}


def _bounds(centres: np.ndarray, res: float) -> np.ndarray:
    """``(n, 2)`` cell edges of regularly spaced centres."""
    return np.stack([centres - res / 2, centres + res / 2], axis=1)


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
                                "axis": "Y", "bounds": "lat_bnds"})
    coord("lat_bnds", _bounds(lat, spec.res), ["lat", "bnds"], {})
    coord("lon", lon, ["lon"], {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude",
                                "axis": "X", "bounds": "lon_bnds"})
    coord("lon_bnds", _bounds(lon, spec.res), ["lon", "bnds"], {})
    coord("month", np.arange(1, 13, dtype=np.int32), ["month"],
          {"long_name": "calendar month of the wetland area", "units": "1"})
    y0 = spec.years[0]
    year_start = np.arange(ny, dtype=np.int32) * DAYS_PER_YEAR
    day = np.arange(ny * DAYS_PER_YEAR, dtype=np.int32)
    coord("time", day, ["time"], _time_attrs(y0, "time_bnds"))
    coord("time_bnds", np.stack([day, day + 1], axis=1), ["time", "bnds"], {})
    month_start = (year_start[:, None] + MONTH_STARTS[None, :]).reshape(-1).astype(np.int32)
    month_end = month_start + np.tile(DAYS_IN_MONTH, ny).astype(np.int32)
    coord("month_time", month_start, ["month_time"], _time_attrs(y0, "month_time_bnds"))
    coord("month_time_bnds", np.stack([month_start, month_end], axis=1), ["month_time", "bnds"], {})
    coord("year_time", year_start, ["year_time"], _time_attrs(y0, "year_time_bnds"))
    coord("year_time_bnds", np.stack([year_start, year_start + DAYS_PER_YEAR], axis=1), ["year_time", "bnds"], {})

    def flux(name: str, dims: list[str], shape: tuple[int, ...], chunks: tuple[int, ...], long_name: str) -> None:
        root.create_array(name, shape=shape, chunks=chunks, dtype="float32", fill_value=np.nan, compressors=comp,
                          dimension_names=dims, attributes=_flux_attrs(long_name, dims[0]))

    flux(FLUX_VAR, ["time", "lat", "lon"], (ny * DAYS_PER_YEAR, nlat, nlon), (DAYS_PER_YEAR, band_rows(nlat, nlon), nlon),
         "daily wetland CH4 emission")
    flux(MONTHLY_VAR, ["month_time", "lat", "lon"], (ny * 12, nlat, nlon), (12, nlat, nlon),
         "monthly mean wetland CH4 emission")
    flux(ANNUAL_VAR, ["year_time", "lat", "lon"], (ny, nlat, nlon), (1, nlat, nlon),
         "annual mean wetland CH4 emission")
    if spec.members:
        root[ANNUAL_VAR].attrs["ancillary_variables"] = SPREAD_VAR
        root.create_array(SPREAD_VAR, shape=(ny, nlat, nlon), chunks=(1, nlat, nlon), dtype="float32",
                          fill_value=np.nan, compressors=comp, dimension_names=["year_time", "lat", "lon"],
                          attributes=_spread_attrs(spec.members))
    area = np.broadcast_to(wetland_area_map, (12, nlat, nlon))  # a static (lat, lon) map holds every month
    root.create_array(AREA_VAR, data=area.astype(np.float64), compressors=comp,
                      dimension_names=["month", "lat", "lon"],
                      attributes={"units": "m2", "long_name": "wetland area (cell area x the month's wetland fraction) "
                                                           "used by the budget; NaN where the Grid store has no cell "
                                                           "or no wetland extent"})
    root.attrs.update(_netcdf_attrs({
        "Conventions": "CF-1.8",
        "title": "Wetland CH4 emission predicted by an xmw_ray model",
        "history": spec.history,
        "source": f"xmw_ray {__version__}: model {spec.model.get('name')!r}, checkpoint {spec.checkpoint} "
                  f"(sha256 {spec.checkpoint_sha256[:12]}), Grid store {spec.grid_store}",
        "source_checkpoint": spec.checkpoint,
        "source_grid_store": spec.grid_store,
        "model": json.dumps(spec.model, sort_keys=True),
        "xmw_format": MAPS_FORMAT,
        "calendar_note": "365-day years: leap days are dropped, as in X-MethaneWet",
        "completion": f"a year is complete once {DONE_DIR}/<year>.json exists; other years hold NaN or partial data",
        "budget_csv": "budget.csv (Tg CH4 yr-1 per year, global and by latitude band)" if spec.wetland_extent
        else "none: the Grid store has no wetland extent (prepare grid --wetland-area FILE)",
        "complete": 0,
        **({"ensemble_members": spec.members} if spec.members else {}),
        **spec.identity(),
    }))
    _consolidate(path)


#: The map store's data variables: NaN marks "no wetland" in them, so only they carry a ``_FillValue``.
DATA_VARS = (FLUX_VAR, MONTHLY_VAR, ANNUAL_VAR, AREA_VAR, SPREAD_VAR)


def check_netcdf_out(nc_path: str) -> None:
    """Refuse, before any work, a ``--netcdf`` target that is a URL, sits where nothing can be written, or is
    already something other than a NetCDF copy of flux maps (a user's file is never overwritten)."""
    from pathlib import Path

    from xmw_ray.storage import _refuse_unwritable_parent

    if is_url(nc_path):
        raise XmwInputError(f"{nc_path}: --netcdf takes a local file path, not a URL")
    path = Path(nc_path)
    _refuse_unwritable_parent(path, "choose another --netcdf")
    if path.exists() and not _is_maps_netcdf(path):
        raise XmwInputError(f"{nc_path}: exists and is not a NetCDF copy of flux maps; choose another --netcdf "
                            "or remove it")


def _is_maps_netcdf(path: Any) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            found = fh.attrs.get("xmw_format")
    except (OSError, ValueError):
        return False
    return (found.decode() if isinstance(found, bytes) else str(found)) == MAPS_FORMAT


def write_netcdf(maps_path: str, nc_path: str) -> None:
    """Copy a flux-map store into one CF NetCDF-4 file (``h5netcdf``), values and attributes as stored (no time
    decoding): what a journal or a data centre takes. Coordinates and bounds get no ``_FillValue`` (CF 2.5.1 forbids
    one on a coordinate; xarray would add NaN to every float variable). Written aside and renamed."""
    import xarray as xr

    from xmw_ray.storage import file_aside

    with xr.open_zarr(maps_path, decode_cf=False) as ds:
        encoding: dict[str, dict[str, Any]] = {}
        for name in ds.variables:
            if name not in DATA_VARS:
                ds[name].attrs.pop("_FillValue", None)
                encoding[str(name)] = {"_FillValue": None}
        with file_aside(nc_path) as tmp:
            ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)


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
        if attrs.get("ensemble_members", 0) != spec.members:  # an ensemble's maps made before the spread was kept
            raise XmwInputError(f"{path}: holds this ensemble's maps without its member spread (made by an earlier "
                                "xmw_ray); choose another --out or remove it")
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
            budget, members = marker["budget_tg"], marker.get("member_budgets_tg")
            ok = (budget is None or isinstance(budget, dict)) and (members is None or isinstance(members, list))
            return marker if ok else None
        except (ValueError, KeyError, TypeError):  # unreadable marker: the year is redone
            return None

    def year_budget(self, year: int) -> dict[str, float] | None:
        """The committed budget of ``year`` (Tg CH4 yr-1), or None when the year is not done or has no budget."""
        marker = self._commit(year)
        return None if marker is None or marker["budget_tg"] is None else dict(marker["budget_tg"])

    def years_done(self) -> list[int]:
        return [y for y in self.spec.years if self._commit(y) is not None]

    def year_member_budgets(self, year: int) -> list[dict[str, float]] | None:
        """Each ensemble member's committed budget of ``year`` (Tg CH4 yr-1), or None (not done, no budget, or
        not an ensemble)."""
        marker = self._commit(year)
        members = None if marker is None else marker.get("member_budgets_tg")
        return None if not members else [dict(m) for m in members]

    def commit_year(self, year: int, budget_tg: dict[str, float] | None,
                    member_budgets_tg: list[dict[str, float]] | None = None) -> None:
        """Mark ``year`` done (the commit point): call only after ``write_year`` returned. An ensemble's marker
        also holds each member's budget."""
        marker: dict[str, Any] = {"year": year, "budget_tg": budget_tg, "cells": len(self._ilat)}
        if member_budgets_tg is not None:
            marker["member_budgets_tg"] = member_budgets_tg
        put_bytes(self._marker(year), json.dumps(marker).encode())

    def finalize(self) -> bool:
        """Record ``complete: 1`` in the attributes once every year is done; returns whether it is."""
        complete = len(self.years_done()) == len(self.spec.years)
        if complete and not self._root.attrs.get("complete"):
            self._root.attrs["complete"] = 1
            _consolidate(self.path)
        return complete

    # --- data --------------------------------------------------------------------------------------------------
    def write_year(self, year: int, flux: np.ndarray, spread: np.ndarray | None = None) -> np.ndarray:
        """Write one year: ``flux (n_cells, 365)`` in store cell order → daily bands, monthly and annual means, and
        for an ensemble each cell's member ``spread (n_cells,)``; returns the ``(nlat, nlon)`` annual-mean map."""
        if flux.shape != (len(self._ilat), DAYS_PER_YEAR):
            raise ValueError(f"expected flux ({len(self._ilat)}, {DAYS_PER_YEAR}), got {flux.shape}")
        if (spread is not None) != bool(self.spec.members):
            raise ValueError("the member spread is written exactly when the store is an ensemble's")
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
        if spread is not None:
            spread_grid = np.full((1, self.nlat, self.nlon), np.nan, dtype=np.float32)
            spread_grid[0, self._ilat, self._ilon] = spread
            self._root[SPREAD_VAR][yi:yi + 1] = spread_grid
        return grid[0]

    def annual_mean(self, year: int) -> np.ndarray:
        """The ``(nlat, nlon)`` annual-mean map of ``year`` (one chunk read)."""
        return np.asarray(self._root[ANNUAL_VAR][self.spec.years.index(year)])

    def annual_spread(self, year: int) -> np.ndarray:
        """The ``(nlat, nlon)`` member-spread map of ``year`` (an ensemble's store only; one chunk read)."""
        return np.asarray(self._root[SPREAD_VAR][self.spec.years.index(year)])

    def monthly_means(self, year: int) -> np.ndarray:
        """The ``(12, nlat, nlon)`` monthly-mean maps of ``year`` (one chunk read)."""
        yi = self.spec.years.index(year)
        return np.asarray(self._root[MONTHLY_VAR][yi * 12:(yi + 1) * 12])
