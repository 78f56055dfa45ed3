"""Static maps of the built-in world: land, relief, climate classes, soils, vegetation and wetlands.

- land: Earth's (``earth.py``: the GLOBE land mask of the ``global-land-mask`` package, sub-sampled into each
  cell); a cell whose land fraction is at least 0.2 is a land cell, except south of 60° S: Antarctica's ice sheet
  is far colder than the zonal climate below makes it, and wetland models leave it out too. Continentality ``c = min(d / 1400 km, 1)^0.7``
  from the distance ``d`` to the sea rises from 0 at the coast to 1 deep inland (about the innermost tenth of the
  land outside Antarctica).
- elevation (m): ``50 + 450 c + 1500 max(g_M − 0.5, 0)^1.3 + 80 |g_h|`` (mountain belts where a finer field peaks).
- climatetype (Köppen main group from the generated mean climate): 1 A tropical (coldest month ≥ 18 °C),
  2 B arid (P_ann < 20 T̄ + 140 mm), 3 C temperate (coldest month > −3 °C), 4 D continental, 5 E polar
  (warmest month < 10 °C).
- vegetation_type_11: 1 tropical evergreen forest, 2 tropical deciduous forest, 3 savanna, 4 temperate broadleaf
  forest, 5 temperate needleleaf forest, 6 boreal forest, 7 grassland, 8 shrubland, 9 desert, 10 tundra,
  11 polar desert; ``cltveg`` is its 8-biome aggregation (1 polar desert, 2 tundra, 3 boreal forest, 4 temperate
  forest, 5 grassland, 6 shrubland/desert, 7 tropical forest, 8 savanna).
- clfaotxt (FAO topsoil texture): 1 coarse, 2 medium, 3 fine, from a smooth field, coarser where arid.
- wetlands: a propensity ``u = 1.5 ln(clip(P/PET, 0.05, 2.5)) + 1.5 e^{−z/300} + 0.9 g_W`` gives
  ``sigmoid(2u − 3) · clip((T_warmest − 2)/6, 0, 1)`` of the cell's land (cold-summer cells hold little, deserts
  none); the map is scaled so the world has 6 million km² of wetland (a round figure inside the spread of global
  wetland maps, a few to ten million km²), no cell above 80 % of its land, and fractions below 0.1 % are dropped.
- wetlandtype (X-MethaneWet's coding): 1 forested bog, 2 open bog / fen / wet tundra, 3 forested swamp,
  4 open swamp / marsh, 5 semi-arid floodplain swamp; chosen from the climate group and a smooth field; 0 where
  the cell has no wetland.
- phh2o: ``7.6 − 2 sigmoid(2 ln(P/PET)) + 0.4 g_pH``, 1.5 lower in bogs (types 1 and cold 2), clipped to 3.8–8.5.
- topsoil_bulk_density (kg dm⁻³): ``1.5 − 1.2 o`` with the organic-soil index ``o`` high where cold, humid and wet;
  the specific yield used by the water table is ``0.12 + 0.3 o`` (+0.05 coarse, −0.04 fine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmw_ray.data import layout
from xmw_ray.data.contract import STATIC_VARS, UNITS, cell_area_m2, grid_coords, grid_shape
from xmw_ray.sim.climatology import Climatology, build_climatology
from xmw_ray.sim.earth import LAND_THRESHOLD, distance_to_sea_km, land_fraction
from xmw_ray.sim.fields import smooth_field, stream, unit_vectors
from xmw_ray.sim.process import CellProps, cell_props

#: Cells with their centre south of this latitude (Antarctica) are not part of the world.
SOUTHERN_LIMIT = -60.0
#: Distance to the sea (km) beyond which a cell's climate is fully continental.
CONTINENTAL_KM = 1400.0
WETLAND_AREA_M2 = 6.0e12
MAX_WETLAND_FRACTION = 0.8
#: fAPAR of a closed canopy by vegetation_type_11 class (index 0 unused).
VEG_FAPAR = np.array([0.0, 0.9, 0.8, 0.6, 0.85, 0.8, 0.75, 0.6, 0.45, 0.15, 0.45, 0.05])
#: vegetation_type_11 → cltveg.
VEG_TO_CLTVEG = np.array([0, 7, 7, 8, 4, 4, 3, 5, 6, 6, 2, 1])


@dataclass(frozen=True)
class StaticWorld:
    """The land cells of one world and everything about them that does not change from year to year."""

    seed: int
    res: float
    nlat: int
    nlon: int
    cells: np.ndarray  # flat indices (ilat * nlon + ilon) of land cells, row 0 = southern edge
    lat: np.ndarray
    lon: np.ndarray
    xyz: np.ndarray
    area: np.ndarray  # m²
    land_fraction: np.ndarray  # share of the cell that is land (Earth's mask)
    cont: np.ndarray
    elev: np.ndarray
    clim: Climatology
    maps: dict[str, np.ndarray]  # STATIC_VARS per land cell
    wetland_fraction: np.ndarray
    wet_class: np.ndarray  # the wetland type a cell's wetland would have (also where it has none)
    specific_yield: np.ndarray
    fapar: np.ndarray

    @property
    def n(self) -> int:
        return len(self.cells)

    @property
    def ilat(self) -> np.ndarray:
        return self.cells // self.nlon

    @property
    def ilon(self) -> np.ndarray:
        return self.cells % self.nlon

    def props(self, idx: np.ndarray | slice = slice(None), site_effect: np.ndarray | None = None) -> CellProps:
        """Process-model properties of the land cells ``idx``."""
        return cell_props(self.wet_class[idx], self.maps["phh2o"][idx], self.specific_yield[idx], self.fapar[idx],
                          site_effect)

    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Scatter per-land-cell values ``(n, ...)`` onto the ``(nlat, nlon, ...)`` grid, ``fill`` elsewhere."""
        values = np.asarray(values)
        out = np.full((self.nlat * self.nlon, *values.shape[1:]), fill, dtype=np.float32)
        out[self.cells] = values
        return out.reshape(self.nlat, self.nlon, *values.shape[1:])


def _climate_type(clim: Climatology) -> np.ndarray:
    arid = clim.p_ann < 20.0 * clim.t_mean + 140.0
    return np.select([clim.warmest < 10.0, arid, clim.coldest >= 18.0, clim.coldest > -3.0], [5, 2, 1, 3], default=4)


def _vegetation(clim: Climatology, climate: np.ndarray) -> np.ndarray:
    w = clim.wetness
    return np.select(
        [
            (climate == 5) & (clim.warmest < 0.0),
            climate == 5,
            w < 0.2,
            w < 0.35,
            (climate == 1) & (w > 1.3),
            (climate == 1) & (w > 0.8),
            climate == 1,
            w < 0.7,
            (climate == 4) & (clim.t_mean <= 3.0),
            climate == 4,
        ],
        [11, 10, 9, 8, 1, 2, 3, 7, 6, 5],
        default=4,
    )


def _wetland_class(climate: np.ndarray, t_mean: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.select(
        [
            (climate == 5) | (t_mean < -6.0),
            climate == 4,
            climate == 3,
            climate == 1,
            climate == 2,
        ],
        [
            np.full_like(climate, 2),
            np.where(g > 0.0, 1, 2),
            np.where(g > 0.3, 4, np.where(g < -0.3, 3, 2)),
            np.where(g > 0.0, 3, 4),
            np.full_like(climate, 5),
        ],
        default=2,
    )


def _scale_to_area(raw: np.ndarray, area: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Multiply ``raw`` so that Σ min(s·raw, cap)·area = WETLAND_AREA_M2, then drop fractions < 0.1 %."""
    frac = raw
    for _ in range(3):
        lo, hi = 0.0, 1e6
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            total = np.sum(np.minimum(mid * frac, cap) * area)
            lo, hi = (mid, hi) if total < WETLAND_AREA_M2 else (lo, mid)
        frac = np.minimum(hi * frac, cap)
        frac = np.where(frac < 1e-3, 0.0, frac)
    return frac


def world_cells(res: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (``ilat * nlon + ilon``) of the world's land cells at ``res`` and their land fractions."""
    nlat, nlon = grid_shape(res)
    lat_c, _ = grid_coords(res)
    land_share = land_fraction(res).reshape(-1)
    cells = np.flatnonzero((land_share >= LAND_THRESHOLD) & (np.repeat(lat_c, nlon) > SOUTHERN_LIMIT))
    return cells, land_share[cells]


def build_world(seed: int, res: float) -> StaticWorld:
    """Generate the static world for ``seed`` at ``res`` degrees (same seed → same world, at any resolution)."""
    nlat, nlon = grid_shape(res)
    lat_c, lon_c = grid_coords(res)
    cells, land_share = world_cells(res)
    if len(cells) == 0:
        raise ValueError(f"resolution {res} too coarse: no land cell")
    lat, lon = lat_c[cells // nlon], lon_c[cells % nlon]
    area = cell_area_m2(lat, res)
    xyz = unit_vectors(lat, lon)
    cont = np.clip(distance_to_sea_km(xyz) / CONTINENTAL_KM, 0.0, 1.0) ** 0.7
    g_m = smooth_field(stream(seed, "mountains"), xyz, 2.5, 7.0)
    g_h = smooth_field(stream(seed, "hills"), xyz, 6.0, 14.0)
    elev = 50.0 + 450.0 * cont + 1500.0 * np.maximum(g_m - 0.5, 0.0) ** 1.3 + 80.0 * np.abs(g_h)
    clim = build_climatology(seed, lat, xyz, cont, elev)

    climate = _climate_type(clim)
    veg11 = _vegetation(clim, climate)
    g_s = smooth_field(stream(seed, "texture"), xyz, 3.0, 9.0)
    texture = np.where((g_s < -0.4) | ((climate == 2) & (g_s < 0.3)), 1, np.where(g_s > 0.5, 3, 2))

    wetness = clim.wetness
    g_w = smooth_field(stream(seed, "wetland"), xyz, 3.0, 9.0)
    u = 1.5 * np.log(np.clip(wetness, 0.05, 2.5)) + 1.5 * np.exp(-elev / 300.0) + 0.9 * g_w
    raw = 1.0 / (1.0 + np.exp(-(2.0 * u - 3.0))) * np.clip((clim.warmest - 2.0) / 6.0, 0.0, 1.0)
    raw = np.where(veg11 == 9, 0.0, raw) * land_share
    wetland_fraction = _scale_to_area(raw, area, MAX_WETLAND_FRACTION * land_share)
    wet_class = _wetland_class(climate, clim.t_mean, smooth_field(stream(seed, "wetland-type"), xyz, 3.0, 9.0))

    organic = (1.0 / (1.0 + np.exp(-2.0 * np.log(wetness)))) * np.clip((12.0 - clim.t_mean) / 15.0, 0.0, 1.0)
    organic *= np.clip(wetland_fraction / 0.05, 0.2, 1.0)
    bog = (wet_class == 1) | ((wet_class == 2) & (clim.t_mean < 3.0))
    g_ph = smooth_field(stream(seed, "ph"), xyz, 3.0, 9.0)
    ph = np.clip(7.6 - 2.0 / (1.0 + np.exp(-2.0 * np.log(wetness))) + 0.4 * g_ph - 1.5 * bog, 3.8, 8.5)
    bulk_density = 1.5 - 1.2 * organic
    specific_yield = 0.12 + 0.3 * organic + np.where(texture == 1, 0.05, np.where(texture == 3, -0.04, 0.0))

    maps = {
        "clelev": elev,
        "clfaotxt": texture.astype(np.float64),
        "cltveg": VEG_TO_CLTVEG[veg11].astype(np.float64),
        "phh2o": ph,
        "topsoil_bulk_density": bulk_density,
        "vegetation_type_11": veg11.astype(np.float64),
        "wetlandtype": np.where(wetland_fraction > 0.0, wet_class, 0).astype(np.float64),
        "climatetype": climate.astype(np.float64),
    }
    assert tuple(maps) == STATIC_VARS
    return StaticWorld(seed=seed, res=res, nlat=nlat, nlon=nlon, cells=cells, lat=lat, lon=lon, xyz=xyz, area=area,
                       land_fraction=land_share,
                       cont=cont, elev=elev, clim=clim, maps=maps, wetland_fraction=wetland_fraction,
                       wet_class=wet_class, specific_yield=specific_yield, fapar=VEG_FAPAR[veg11])


def write_statics(world: StaticWorld, root) -> None:
    """The eight static maps plus ``landmask.nc`` (NaN off land, as the real data), and the world's wetland extent
    as a WAD2M-like monthly file (``layout.WETLAND_EXTENT_FILE``; the same fraction every month, 0 off land)."""
    for var in STATIC_VARS:
        layout.write_static(root, var, world.to_grid(world.maps[var]), world.res, UNITS[var])
    layout.write_extra_static(root, "landmask", world.to_grid(np.ones(world.n), fill=0.0), world.res, "1")
    fraction = world.to_grid(world.wetland_fraction, fill=0.0)
    layout.write_wetland_extent(root, np.broadcast_to(fraction, (12, *fraction.shape)), world.res)
