"""Earth's land for the built-in world: its continents and coasts are the real ones, so maps read as Earth and real
towers' coordinates fall on its land.

The mask is the GLOBE 1-km land mask that the ``global-land-mask`` package ships (MIT licence; 21 600 × 43 200
pixels of 1/120°, row 0 at 90° N, True = ocean, most lakes count as land). Importing that package would load the
whole mask (about 1 GB), so this module finds its file without importing it, streams the compressed ``mask.npy``
a block of rows at a time and keeps the centre pixel of every 5 × 5 block: a land flag at each point of a 1/24°
grid (``SAMPLES_PER_DEGREE``; 4 320 × 8 640 flags, 37 MB, about 2 s of CPU once per process, then cached).

- land fraction of a cell: the share of the sample points inside it that are land. A cell of ``res`` degrees
  holds ``s × s`` sub-cells, ``s = max(1, round(24 res))``, and the flag at each sub-cell centre is read; when
  ``24 res`` is a whole number the sub-cells are the sample points themselves (the grids nest).
- land cell: land fraction ≥ ``LAND_THRESHOLD`` (0.2), so coastal cells keep their salt marshes, deltas and
  mangroves (many real towers stand there: at 0.5° the most marginal tower cell is 29 % land).
- distance to the sea (km): great-circle distance from a point to the centre of the nearest ocean cell (land
  fraction below one half) of the 1° grid, one grid for every resolution, so the same point gets the same
  distance at any resolution.
"""

from __future__ import annotations

import functools
import importlib.util
import zipfile
from pathlib import Path

import numpy as np

from xmw_ray.data.contract import grid_shape

SAMPLES_PER_DEGREE = 24
LAND_THRESHOLD = 0.2
EARTH_RADIUS_KM = 6371.0
_MASK_PACKAGE = "global-land-mask"
_MASK_FILE = "globe_combined_mask_compressed.npz"
_MASK_PIXELS_PER_DEGREE = 120
_STEP = _MASK_PIXELS_PER_DEGREE // SAMPLES_PER_DEGREE  # odd, so a block's centre is a pixel centre
_ROWS_PER_READ = 600  # 26 MB of the decompressed mask at a time


def mask_file() -> Path:
    """Where the installed ``global-land-mask`` package keeps its mask (found without importing the package)."""
    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the built-in world needs the '{_MASK_PACKAGE}' package (pip install {_MASK_PACKAGE})")
    return Path(spec.origin).parent / _MASK_FILE


@functools.lru_cache(maxsize=1)
def land_samples() -> np.ndarray:
    """``(180·24, 360·24)`` bool land flags at the 1/24° sample points, row 0 at the southern edge, column 0 at
    180° W (the grid convention of ``xmw_ray.data.contract``). Read-only: it is shared by every caller."""
    with zipfile.ZipFile(mask_file()) as archive, archive.open("mask.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(fh)
        nrow, ncol = shape
        if fortran_order or dtype != np.bool_ or nrow % _ROWS_PER_READ or nrow != 180 * _MASK_PIXELS_PER_DEGREE:
            raise RuntimeError(f"{mask_file()}: not the expected GLOBE mask ({shape}, {dtype})")
        land = np.empty((nrow // _STEP, ncol // _STEP), dtype=bool)
        centre = _STEP // 2
        for r0 in range(0, nrow, _ROWS_PER_READ):
            block = np.frombuffer(fh.read(_ROWS_PER_READ * ncol), dtype=bool).reshape(_ROWS_PER_READ, ncol)
            land[r0 // _STEP:(r0 + _ROWS_PER_READ) // _STEP] = ~block[centre::_STEP, centre::_STEP]
    land = np.ascontiguousarray(land[::-1])  # the file's row 0 is the north
    land.flags.writeable = False
    return land


def _sub_index(n_cells: int, s: int, res: float, start: float, rows: bool) -> np.ndarray:
    """Sample-grid index of every sub-cell centre along one axis (``n_cells · s`` of them, cell by cell)."""
    centres = start + (np.arange(n_cells * s) + 0.5) * (res / s)
    size = (180 if rows else 360) * SAMPLES_PER_DEGREE
    return np.clip(np.floor((centres - start) * SAMPLES_PER_DEGREE).astype(np.int64), 0, size - 1)


def subcells_per_side(res: float) -> int:
    return max(1, int(round(res * SAMPLES_PER_DEGREE)))


@functools.lru_cache(maxsize=8)
def land_fraction(res: float) -> np.ndarray:
    """``(nlat, nlon)`` share of each ``res``-degree cell that is land (row 0 south, column 0 at 180° W)."""
    nlat, nlon = grid_shape(res)
    s = subcells_per_side(res)
    rows = _sub_index(nlat, s, res, -90.0, rows=True)
    cols = _sub_index(nlon, s, res, -180.0, rows=False)
    land = land_samples()
    out = np.empty((nlat, nlon), dtype=np.float64)
    for i in range(nlat):  # a row of cells at a time keeps the gather small at any resolution
        sub = land[np.ix_(rows[i * s:(i + 1) * s], cols)]
        out[i] = sub.reshape(s, nlon, s).sum(axis=(0, 2), dtype=np.int64) / (s * s)
    out.flags.writeable = False
    return out


def land_points(res: float, ilat: int, ilon: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes of the sub-cell centres of cell ``(ilat, ilon)`` that are land."""
    s = subcells_per_side(res)
    nlat, nlon = grid_shape(res)
    rows = _sub_index(nlat, s, res, -90.0, rows=True)[ilat * s:(ilat + 1) * s]
    cols = _sub_index(nlon, s, res, -180.0, rows=False)[ilon * s:(ilon + 1) * s]
    flags = land_samples()[np.ix_(rows, cols)]
    i, j = np.nonzero(flags)
    step = res / s
    return -90.0 + ilat * res + (i + 0.5) * step, -180.0 + ilon * res + (j + 0.5) * step


def is_land(lat: np.ndarray | float, lon: np.ndarray | float) -> np.ndarray:
    """Whether each point is land in the 1/24° sample grid (the flag of the sample point nearest below-left)."""
    land = land_samples()
    i = np.clip(np.floor((np.asarray(lat, dtype=np.float64) + 90.0) * SAMPLES_PER_DEGREE).astype(np.int64),
                0, land.shape[0] - 1)
    j = np.floor((np.asarray(lon, dtype=np.float64) + 180.0) * SAMPLES_PER_DEGREE).astype(np.int64) % land.shape[1]
    return land[i, j]


@functools.lru_cache(maxsize=1)
def _sea_tree():
    from scipy.spatial import cKDTree

    from xmw_ray.data.contract import grid_coords
    from xmw_ray.sim.fields import unit_vectors

    lat, lon = grid_coords(1.0)
    sea = land_fraction(1.0) < 0.5
    ilat, ilon = np.nonzero(sea)
    return cKDTree(unit_vectors(lat[ilat], lon[ilon]))


def distance_to_sea_km(xyz: np.ndarray) -> np.ndarray:
    """Great-circle distance (km) from each unit vector ``(n, 3)`` to the nearest ocean cell centre of the 1° grid."""
    chord, _ = _sea_tree().query(np.asarray(xyz, dtype=np.float64))
    return 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)) * EARTH_RADIUS_KM
