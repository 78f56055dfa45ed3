"""The Site store: FLUXNET-CH4 towers as Parquet, one row per (site, year), partitioned by site.

Columns: ``year`` int64, ``lat``/``lon`` float64, ``n_target_days`` int32, ``dynamic`` fixed-size list
``[365][n_dynamic]`` float32, ``static`` ``[n_static]`` float32 (static slots, then CH4 and CO2), ``target`` ``[365]``
float32 (mg CH4 m-2 d-1, NaN where not observed); the ``site`` column comes from the ``site=<ID>/`` partition.
The schema metadata key ``xmw`` holds the var names, units, the feature descriptors (``features.py``: what each
slot means and where it comes from), static slot meanings, target choice and drop counts.

Sample rules (``fluxnet.py`` holds the unit and driver formulas): a site-year is dropped, and counted, when it has
no target day (``no_target``), its drivers still have a gap after the ``_F`` columns and the short-gap fill
(``input_gap``), its NPP has a gap (``npp_gap``: a month with too few GPP days after GPP_NT's missing days are taken from GPP_DT where the tower has it, ``fluxnet.gpp_days``, counted as ``gpp_dt_days``; a tower with neither column counts here too), or, with ``--grid``,
the tower's cell is not a valid cell of the Grid store (``cell_not_in_grid``) or the year is not in it
(``year_not_in_grid``). With ``--grid`` NPP, the static maps and CH4/CO2 come from the Grid store at the tower's
cell (``contract.site_cell``, X-MethaneWet's behaviour); without it they come from the tower itself
(``fluxnet.SITE_STATIC_SOURCES``) and ``atmosphere.annual_concentrations``.

Driver sets (``drivers``): ``xmw`` (the rules above: X-MethaneWet's 5 drivers, 8 static slots + CH4/CO2),
``map`` (``MAP_DYNAMIC_VARS`` / ``MAP_STATIC_VARS``: the Grid store's slots a tower supplies in the grid's own meaning
without a Grid store: its daily PREC, SOLR, TAIR, VAPR, its recorded wetland type, the CH4/CO2 record;
not NPP, whose tower stand-in is 0.5 x GPP rather than TEM's NPP, nor the soil, vegetation and climate maps, which a
tower's metadata does not give in the grid's classes, nor elevation, which the release's META does not record;
driver gaps after the short-gap fill and an unrecorded wetland class stay NaN, only ``no_target`` drops; ``xmw infer`` maps a Grid store with such a model by
reading these slots of the grid by name) or
``tower`` (``tower_features``: the towers' own columns, trailing means, gap flags, seasonal clock, optionally the
simulated flux at the tower, and metadata descriptors). With ``tower`` input gaps stay NaN and only ``no_target``
drops a site-year; the metadata records ``drivers`` and ``sim_source``.

Driver quality control (both sets, ``tower_features.qc_drivers``): impossible values and values far outside a
tower's own climate in TA_F, TS_1, P_F, LE_F, GPP_NT and GPP_DT (each where the set reads it) are masked to NaN before anything is computed from them
(with ``xmw`` a masked day is then a gap like any other); the counts per var are the summary's and the metadata's
``driver_qc``. Target days whose daily-mean flux is physically impossible (``tower_features.TARGET_BOUNDS``)
are masked to NaN and counted per column in ``target_qc``, with the target days that cost (``target_days_lost``:
``xmw-fill`` refills a masked FCH4_F day from FCH4_F_ANNOPTLM). With ``tower`` the summary's
``unknown_descriptors`` counts towers per descriptor the metadata does not give (NaN in the store); with ``map``
it counts towers whose wetland class is unknown (``wetlandtype``, NaN in the store).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from xmw_ray.console import Step
from xmw_ray.data import schema
from xmw_ray.data.arrow_fs import arrow_filesystem
from xmw_ray.data.atmosphere import annual_concentrations
from xmw_ray.data.contract import (
    ANNUAL_VARS,
    DAILY_VARS,
    DAYS_PER_YEAR,
    DYNAMIC_VARS,
    STATIC_VARS,
    TARGET_VAR,
    UNITS,
    monthly_to_days,
    site_cell,
)
from xmw_ray.data.features import CONTRACT_MEANINGS, Feature, FeatureSet
from xmw_ray.data.fluxnet import (
    DRIVER_COLUMNS,
    GPP_COLUMN,
    GPP_FALLBACK_COLUMN,
    SITE_STATIC_FEATURES,
    SITE_STATIC_SOURCES,
    VPD_COLUMN,
    SiteMeta,
    SiteYears,
    fill_short_gaps,
    find_site_sources,
    gpp_days,
    iter_site_years,
    npp_from_gpp,
    read_site_metadata,
    target_days,
    vapour_pressure_hpa,
)
from xmw_ray.data.normstats import NORMSTATS_DIR
from xmw_ray.data.options import (
    DEFAULT_DRIVERS,
    DEFAULT_MAX_INPUT_GAP,
    DEFAULT_TARGET,
    DRIVER_SETS,
    TARGET_CHOICES,
)
from xmw_ray.data.tower_features import (
    QC_KINDS,
    SIM_VAR,
    TARGET_BOUNDS,
    TARGET_DAYS_LOST,
    TOWER_BASE_VARS,
    TOWER_STATIC_VARS,
    SimulatedFlux,
    qc_drivers,
    qc_target,
    target_days_lost,
    tower_dynamic,
    tower_dynamic_vars,
    tower_features,
    tower_static,
    tower_units,
    unknown_descriptors,
)
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import (
    directory_aside,
    is_url,
    refuse_foreign_local,
    refuse_foreign_objects,
    upload_aside,
)

SITE_FORMAT = "xmw-sites-v1"
META_KEY = b"xmw"
COMMON_METADATA = "_common_metadata"
#: The ``map`` driver set: slots named as the Grid store's, each paired with the grid's own (``features.py``).
MAP_DYNAMIC_VARS: tuple[str, ...] = DAILY_VARS
#: No ``clelev``: the FLUXNET-CH4 release's META file records no elevation, so the slot would be unknown at every
#: training tower, and a model never taught it would meet the grid's real elevations.
MAP_STATIC_VARS: tuple[str, ...] = ("wetlandtype", *ANNUAL_VARS)
MAP_STATIC_SOURCES = {"wetlandtype": "wetland class 1-4 from SITE_CLASSIFICATION and TREE (or the --wetland-types "
                                     "override; NaN when the class is not recorded or is 0, not a wetland: every Grid store cell is 1-4, so a map "
                                     "model has no value for it)",
                      **dict.fromkeys(ANNUAL_VARS, "global annual record (atmosphere.annual_concentrations)")}
#: The summary's and metadata's count of GPP_NT days NPP took from GPP_DT (``fluxnet.gpp_days``; the ``xmw`` set
#: without ``--grid``, else 0).
GPP_DT_DAYS = "gpp_dt_days"
DROP_REASONS = ("no_target", "cell_not_in_grid", "year_not_in_grid", "input_gap", "npp_gap")


def _schema(meta: dict):
    import pyarrow as pa

    fields = [
        ("year", pa.int64()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("n_target_days", pa.int32()),
        ("dynamic", pa.list_(pa.list_(pa.float32(), len(meta["dynamic_vars"])), DAYS_PER_YEAR)),
        ("static", pa.list_(pa.float32(), len(meta["static_vars"]))),
        ("target", pa.list_(pa.float32(), DAYS_PER_YEAR)),
    ]
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()})


def _fixed_list(arr: np.ndarray):
    """``(n, a[, b])`` float32 → (nested) fixed-size list array."""
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(arr, dtype=np.float32).reshape(-1))
    for size in reversed(arr.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, size)
    return flat


def _from_fixed_list(col, shape: tuple[int, ...]) -> np.ndarray:
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    for _ in shape:
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, *shape)


def rows_to_samples(rows, n_dynamic: int, n_static: int) -> dict[str, np.ndarray]:
    """Site-store rows (a pyarrow Table or batch of fixed-size lists) → the sample schema: the one conversion, used
    by :meth:`SiteStore.samples` and by the Ray Data read (``ray_datasets.site_rows_to_samples``)."""
    return {
        schema.DYNAMIC: _from_fixed_list(rows.column("dynamic"), (DAYS_PER_YEAR, n_dynamic)),
        schema.STATIC: _from_fixed_list(rows.column("static"), (n_static,)),
        schema.TARGET: _from_fixed_list(rows.column("target"), (DAYS_PER_YEAR,)),
        schema.ENTITY: np.asarray(rows.column("site").to_pylist(), dtype=str),
        schema.YEAR: rows.column("year").to_numpy().astype(np.int64),
    }


class _GridLookup:
    """NPP, static maps and annual concentrations at a tower's cell from a Grid store."""

    def __init__(self, path: str | Path):
        from xmw_ray.data.grid_store import GridStore

        self.store = GridStore.open(path)
        self.path = str(path)
        self.year_index = {y: i for i, y in enumerate(self.store.years)}
        self.npp_slot = self.store.dynamic_vars.index("NPP")

    def cell(self, meta: SiteMeta) -> int:
        ilat, ilon = site_cell(meta.lat, meta.lon, self.store.res)
        return int(self.store.cell_index(np.atleast_1d(ilat), np.atleast_1d(ilon))[0])

    def samples(self, cell: int, years: np.ndarray) -> dict:
        yi = np.array([self.year_index[int(y)] for y in years], dtype=np.int64)
        return self.store.read_samples(yi, np.full(len(yi), cell, dtype=np.int64))


def _xmw_site_features(grid: _GridLookup | None, wetland_override: bool) -> FeatureSet:
    """Descriptors of the ``xmw`` driver set: the daily drivers are the tower's; with ``--grid`` NPP, the static
    maps and CH4/CO2 are the Grid store's own features (``wetlandtype`` becomes ``metadata`` where
    ``--wetland-types`` overrides it); without it NPP is 0.5 x the tower's GPP and the static slots hold what
    ``fluxnet.SITE_STATIC_FEATURES`` says (latitude, IGBP codes, constants), not the grid's quantities."""
    daily = tuple(Feature(v, CONTRACT_MEANINGS[v], "tower", UNITS[v]) for v in DAILY_VARS)
    if grid is None:
        npp = Feature("NPP", "net_primary_productivity", "derived", UNITS["NPP"])  # fluxnet.npp_from_gpp
        annual = tuple(Feature(v, CONTRACT_MEANINGS[v], "record", UNITS[v]) for v in ANNUAL_VARS)
        return FeatureSet((*daily, npp), (*SITE_STATIC_FEATURES, *annual))
    features = grid.store.features
    static = list(features.static)
    if wetland_override:
        i = STATIC_VARS.index("wetlandtype")
        static[i] = replace(static[i], provenance="metadata")
    return FeatureSet((*daily, features.dynamic[grid.npp_slot]), tuple(static))


def _map_site_features() -> FeatureSet:
    """Descriptors of the ``map`` driver set: each pairs with the Grid store's slot of the same name."""
    daily = tuple(Feature(v, CONTRACT_MEANINGS[v], "tower", UNITS[v]) for v in MAP_DYNAMIC_VARS)
    static = {f.name: f for f in SITE_STATIC_FEATURES}
    annual = tuple(Feature(v, CONTRACT_MEANINGS[v], "record", UNITS[v]) for v in ANNUAL_VARS)
    return FeatureSet(daily, (static["wetlandtype"], *annual))


def _daily_drivers(sy: SiteYears, max_input_gap: int) -> np.ndarray:
    """The tower's ``DAILY_VARS`` in the contract's units, ``(n_years, 365, 4)``, short gaps filled, others NaN."""
    for col in (*DRIVER_COLUMNS.values(), VPD_COLUMN):
        if not sy.has(col):
            raise XmwInputError(f"{sy.path}: column {col} not found (site {sy.site})")
    drivers = {var: fill_short_gaps(sy.columns[col], max_input_gap) for var, col in DRIVER_COLUMNS.items()}
    drivers["VAPR"] = vapour_pressure_hpa(fill_short_gaps(sy.columns["TA_F"], max_input_gap),
                                          fill_short_gaps(sy.columns[VPD_COLUMN], max_input_gap))
    drivers["VAPR"][~np.isfinite(drivers["VAPR"])] = np.nan
    return np.stack([drivers[v] for v in DAILY_VARS], axis=-1)


def _map_samples(sy: SiteYears, meta: SiteMeta, target: str, wetland_type: int | None, max_input_gap: int,
                 drops: Counter) -> dict | None:
    """Kept samples of one tower with the ``map`` driver set: gaps stay NaN, only ``no_target`` drops."""
    daily = _daily_drivers(sy, max_input_gap)
    tgt = target_days(sy, target)
    keep = np.isfinite(tgt).any(axis=1)
    drops["no_target"] += int((~keep).sum())
    if not keep.any():
        return None
    years = sy.years[keep]
    wetland = meta.wetland_class() if wetland_type is None else wetland_type
    annual = annual_concentrations(years)
    # 0 (not a wetland) lies outside every Grid store's cells (wetlandtype 1-4): unknown to a map model, as unrecorded
    static = np.column_stack([np.full(len(years), wetland or np.nan),
                              *(annual[v] for v in ANNUAL_VARS)])
    return {"year": years, "dynamic": daily[keep].astype(np.float32), "static": static.astype(np.float32),
            "target": tgt[keep].astype(np.float32)}


def _site_samples(
    sy: SiteYears,
    meta: SiteMeta,
    target: str,
    grid: _GridLookup | None,
    wetland_type: int | None,
    max_input_gap: int,
    drops: Counter,
) -> dict | None:
    """Kept samples of one tower as arrays, counting every dropped site-year by reason."""
    daily = _daily_drivers(sy, max_input_gap)  # (n, 365, 4)
    tgt = target_days(sy, target)
    n = len(sy.years)

    reason = np.full(n, "", dtype=object)
    reason[~np.isfinite(tgt).any(axis=1)] = "no_target"
    static = np.empty((n, len(STATIC_VARS) + len(ANNUAL_VARS)), dtype=np.float32)
    npp = np.full((n, DAYS_PER_YEAR), np.nan)
    from_dt = np.zeros(n, dtype=np.int64)  # GPP_NT days taken from GPP_DT (no Grid store)
    if grid is not None:
        cell = grid.cell(meta)
        in_grid = np.array([int(y) in grid.year_index for y in sy.years])
        if cell < 0:
            reason[reason == ""] = "cell_not_in_grid"
        else:
            reason[(reason == "") & ~in_grid] = "year_not_in_grid"
            if in_grid.any():
                got = grid.samples(cell, sy.years[in_grid])
                npp[in_grid] = got[schema.DYNAMIC][:, :, grid.npp_slot]
                static[in_grid] = got[schema.STATIC]
                if wetland_type is not None:
                    static[:, STATIC_VARS.index("wetlandtype")] = wetland_type
    else:
        static[:, : len(STATIC_VARS)] = meta.static_vector(wetland_type)
        annual = annual_concentrations(sy.years)
        static[:, len(STATIC_VARS):] = np.stack([annual[v] for v in ANNUAL_VARS], axis=1)
        gpp, from_dt = gpp_days(sy)
        if gpp is not None:
            npp = monthly_to_days(npp_from_gpp(gpp))
    reason[(reason == "") & ~np.isfinite(daily).all(axis=(1, 2))] = "input_gap"
    reason[(reason == "") & ~np.isfinite(npp).all(axis=1)] = "npp_gap"
    drops.update(r for r in reason if r)
    keep = reason == ""
    if not keep.any():
        return None
    dynamic = np.concatenate([daily, npp[:, :, None]], axis=-1)[keep].astype(np.float32)
    return {
        "year": sy.years[keep],
        "dynamic": dynamic,
        "static": static[keep],
        "target": tgt[keep].astype(np.float32),
        GPP_DT_DAYS: int(from_dt[keep].sum()),
    }


def _tower_samples(sy: SiteYears, meta: SiteMeta, target: str, sim: SimulatedFlux | None,
                   drops: Counter) -> dict | None:
    """Kept samples of one tower with the ``tower`` driver set: gaps stay NaN, only ``no_target`` drops."""
    tgt = target_days(sy, target)
    keep = np.isfinite(tgt).any(axis=1)
    drops["no_target"] += int((~keep).sum())
    if not keep.any():
        return None
    base = {v: (sy.years, sy.columns[v]) for v in TOWER_BASE_VARS if sy.has(v)}
    if sim is not None:
        base[SIM_VAR] = sim.days(sy.site)
    years = sy.years[keep]
    return {
        "year": years,
        "dynamic": tower_dynamic(years, base, with_sim=sim is not None, lat=meta.lat).astype(np.float32),
        "static": np.tile(tower_static(meta), (len(years), 1)),
        "target": tgt[keep].astype(np.float32),
    }


def _site_store_key(key: str) -> bool:
    """Whether ``key`` (relative to the store) is an object a Site store owns: replacing the store may delete it."""
    return key == COMMON_METADATA or key.startswith(("site=", f"{NORMSTATS_DIR}/"))


def _write_parquet(folder: Path, kept: dict[str, dict], site_info: dict[str, SiteMeta], pa_schema) -> None:
    """One ``site=<ID>/part-0.parquet`` per tower, then ``_common_metadata`` (the store's commit file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for site, got in sorted(kept.items()):
        n = len(got["year"])
        table = pa.Table.from_arrays([
            pa.array(got["year"], pa.int64()),
            pa.array(np.full(n, site_info[site].lat), pa.float64()),
            pa.array(np.full(n, site_info[site].lon), pa.float64()),
            pa.array(np.isfinite(got["target"]).sum(axis=1).astype(np.int32)),
            _fixed_list(got["dynamic"]),
            _fixed_list(got["static"]),
            _fixed_list(got["target"]),
        ], schema=pa_schema)
        (folder / f"site={site}").mkdir()
        pq.write_table(table, folder / f"site={site}" / "part-0.parquet")
    pq.write_metadata(pa_schema, folder / COMMON_METADATA)


def prepare_sites(
    src: str | Path,
    out: str | Path,
    grid: str | Path | None = None,
    target: str = DEFAULT_TARGET,
    wetland_types: Mapping[str, int] | None = None,
    max_input_gap: int = DEFAULT_MAX_INPUT_GAP,
    progress: Callable[[str], None] = lambda msg: None,
    drivers: str = DEFAULT_DRIVERS,
    sim_sites: str | Path | None = None,
) -> dict:
    """Build the Site store at ``out``; returns ``{"samples", "sites", "dropped": {reason: n}, "driver_qc": {var:
    {kind: n}}, "target_qc", "unknown_descriptors": {descriptor: n_towers}, "gpp_dt_days"}`` (unknown descriptors
    are empty with ``xmw``; ``gpp_dt_days``, the GPP_NT days of kept site-years NPP took from GPP_DT, is 0 but
    with ``xmw`` without ``--grid``).

    ``drivers`` picks the driver set (``xmw`` or ``tower``, see the module docstring); ``sim_sites`` (tower set
    only) is an ``xmw simulate sites`` folder whose FCH4 becomes the ``SIM_FCH4`` input.

    A local ``out`` is written aside and renamed. An ``s3://`` / ``gs://`` ``out`` is written to a local temporary
    folder and uploaded with ``_common_metadata`` last (``atomic.upload_aside``): that object is the commit point,
    and ``SiteStore.open`` refuses a store without it, so a reader never sees a half-written store.
    """
    if target not in TARGET_CHOICES:
        raise XmwInputError(f"--target {target}: expected one of {', '.join(TARGET_CHOICES)}")
    if max_input_gap < 0:
        raise XmwInputError(f"--max-input-gap {max_input_gap}: must be >= 0")
    if drivers not in DRIVER_SETS:
        raise XmwInputError(f"--drivers {drivers}: expected one of {', '.join(DRIVER_SETS)}")
    if is_url(out):
        refuse_foreign_objects(str(out), _site_store_key)
    elif refuse_foreign_local(out, _site_store_key, "Site store"):
        progress(f"replacing existing site store {out}")
    tower, map_set = drivers == "tower", drivers == "map"
    if map_set and grid is not None:
        raise XmwInputError(f"--grid {grid}: not used with --drivers map (towers without a Grid store; with one, "
                            "--drivers xmw --grid gives every slot of the grid)")
    if tower and grid is not None:
        raise XmwInputError(f"--grid {grid}: not meaningful with --drivers tower (its drivers come from the towers)")
    if tower and wetland_types:
        raise XmwInputError("--wetland-types: not used with --drivers tower (its class one-hot comes from "
                            "SITE_CLASSIFICATION)")
    if not tower and sim_sites is not None:
        raise XmwInputError(f"--sim-sites {sim_sites}: only used with --drivers tower")
    sources = find_site_sources(src)
    metas = read_site_metadata(sources.meta_path)
    sim = SimulatedFlux(sim_sites) if sim_sites is not None else None
    lookup = _GridLookup(grid) if grid is not None else None
    wetland_types = dict(wetland_types or {})
    if tower:
        meta = {
            "features": tower_features(with_sim=sim is not None).to_record(),
            "dynamic_vars": list(tower_dynamic_vars(with_sim=sim is not None)),
            "static_vars": list(TOWER_STATIC_VARS),
            "units": {**tower_units(with_sim=sim is not None), TARGET_VAR: UNITS[TARGET_VAR]},
            "grid": None,
            "static_sources": "tower metadata (xmw_ray.data.tower_features)",
            "wetland_type_override": [],
            "max_input_gap_days": None,  # gaps stay NaN with the tower set
        }
        columns = ["FCH4", "FCH4_F", "FCH4_F_ANNOPTLM", *TOWER_BASE_VARS]
    elif map_set:
        meta = {
            "features": _map_site_features().to_record(),
            "dynamic_vars": list(MAP_DYNAMIC_VARS),
            "static_vars": list(MAP_STATIC_VARS),
            "units": {v: UNITS[v] for v in (*MAP_DYNAMIC_VARS, *MAP_STATIC_VARS, TARGET_VAR)},
            "grid": None,
            "static_sources": MAP_STATIC_SOURCES,
            "wetland_type_override": sorted(wetland_types),
            "max_input_gap_days": max_input_gap,
        }
        columns = ["FCH4", "FCH4_F", "FCH4_F_ANNOPTLM", *DRIVER_COLUMNS.values(), VPD_COLUMN]
    else:
        meta = {
            "features": _xmw_site_features(lookup, bool(wetland_types)).to_record(),
            "dynamic_vars": list(DYNAMIC_VARS),
            "static_vars": list(STATIC_VARS) + list(ANNUAL_VARS),
            "units": {v: UNITS[v] for v in (*DYNAMIC_VARS, *STATIC_VARS, *ANNUAL_VARS, TARGET_VAR)},
            "grid": None if lookup is None else {"res": lookup.store.res, "nlat": lookup.store.nlat,
                                                 "nlon": lookup.store.nlon},
            "static_sources": "grid store at the site's cell" if lookup else SITE_STATIC_SOURCES,
            "wetland_type_override": sorted(wetland_types),
            "max_input_gap_days": max_input_gap,
        }
        if lookup is None:  # static slots hold tower metadata (fluxnet.SITE_STATIC_SOURCES)
            meta["units"].update(clelev="m", cltveg="IGBP class", vegetation_type_11="degrees_north",
                                 wetlandtype="class", climatetype="Koppen class")
        gpp = () if lookup is not None else (GPP_COLUMN, GPP_FALLBACK_COLUMN)  # NPP: the grid's, else the tower's
        columns = ["FCH4", "FCH4_F", "FCH4_F_ANNOPTLM", *DRIVER_COLUMNS.values(), VPD_COLUMN, *gpp]
    meta.update(format=SITE_FORMAT, target=target, drivers=drivers,
                sim_source=None if sim_sites is None else str(sim_sites))
    drops: Counter = Counter()
    qc: dict[str, Counter] = {}
    target_qc: Counter = Counter()
    unknown: Counter = Counter()
    gpp_dt_days = 0
    kept: dict[str, dict] = {}
    site_info: dict[str, SiteMeta] = {}
    towers = len(sources.daily_paths) if sources.combined_path is None else None  # a combined file: unknown
    for number, sy in enumerate(iter_site_years(sources, columns), 1):
        if sy.site not in metas:
            raise XmwInputError(f"{sources.meta_path}: site {sy.site} is missing from the metadata (data in {sy.path.name})")
        read = f"{sy.site}: {len(sy.years)} years"
        progress(read if towers is None else Step(read, number, towers, "towers read"))
        columns_qc, counts = qc_drivers(sy.columns)
        columns_qc, target_counts = qc_target(columns_qc)
        before = target_days(sy, target)
        sy = replace(sy, columns=columns_qc)
        target_counts[TARGET_DAYS_LOST] = target_days_lost(before, target_days(sy, target))
        for var, kinds in counts.items():
            qc.setdefault(var, Counter()).update(kinds)
        target_qc.update(target_counts)
        if tower:
            got = _tower_samples(sy, metas[sy.site], target, sim, drops)
        elif map_set:
            got = _map_samples(sy, metas[sy.site], target, wetland_types.get(sy.site), max_input_gap, drops)
        else:
            got = _site_samples(sy, metas[sy.site], target, lookup, wetland_types.get(sy.site), max_input_gap, drops)
        if got is not None:
            if tower:
                unknown.update(unknown_descriptors(got["static"][0]))
            elif map_set and np.isnan(got["static"][0, MAP_STATIC_VARS.index("wetlandtype")]):
                unknown["wetlandtype"] += 1
            gpp_dt_days += got.pop(GPP_DT_DAYS, 0)
            kept[sy.site] = got
            site_info[sy.site] = metas[sy.site]
    if not kept:
        raise XmwInputError(f"{src}: no site-year kept (dropped: {dict(drops) or 'no daily rows'})")
    meta["dropped"] = {r: int(drops.get(r, 0)) for r in DROP_REASONS}
    meta[GPP_DT_DAYS] = gpp_dt_days
    meta["driver_qc"] = {var: {k: int(kinds.get(k, 0)) for k in QC_KINDS} for var, kinds in qc.items()}
    meta["target_qc"] = {key: int(target_qc.get(key, 0)) for key in (*TARGET_BOUNDS, TARGET_DAYS_LOST)
                         if key in target_qc}
    meta["unknown_descriptors"] = dict(sorted(unknown.items()))
    pa_schema = _schema(meta)
    if is_url(out):
        with upload_aside(str(out), COMMON_METADATA, _site_store_key) as tmp:
            _write_parquet(tmp, kept, site_info, pa_schema)
    else:
        with directory_aside(out, _site_store_key, "Site store") as tmp:
            tmp.mkdir(parents=True)
            _write_parquet(tmp, kept, site_info, pa_schema)
    return {"samples": sum(len(g["year"]) for g in kept.values()), "sites": len(kept), "dropped": meta["dropped"],
            "driver_qc": meta["driver_qc"], "target_qc": meta["target_qc"],
            "unknown_descriptors": meta["unknown_descriptors"], GPP_DT_DAYS: meta[GPP_DT_DAYS]}


class SiteStore:
    """Read side of the Site store."""

    def __init__(self, path: str, meta: dict, table):
        self.path = path
        self.meta = meta
        self._table = table
        self._site_of_row = np.asarray(table.column("site").to_pylist(), dtype=str)

    @classmethod
    def open(cls, path: str | Path) -> SiteStore:
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq
        from pyarrow import fs

        path = str(path)
        try:
            filesystem, root = arrow_filesystem(path) if is_url(path) else (fs.LocalFileSystem(), path)
            schema_ = pq.read_schema(f"{root}/{COMMON_METADATA}", filesystem=filesystem)
        except ImportError:  # the URL's fsspec backend (s3fs, gcsfs) is not installed: say so, not "no store"
            raise
        except Exception as exc:
            raise XmwInputError(f"{path}: not a Site store, or one whose writing did not finish (no readable "
                                f"{COMMON_METADATA}: {type(exc).__name__})") from exc
        meta = json.loads(schema_.metadata[META_KEY])
        if meta.get("format") != SITE_FORMAT:
            raise XmwInputError(f"{path}: not a Site store (format {meta.get('format')!r})")
        dataset = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive",
                             exclude_invalid_files=True, ignore_prefixes=["_", "."])
        table = dataset.to_table().sort_by([("site", "ascending"), ("year", "ascending")])
        return cls(path, meta, table)

    @property
    def dynamic_vars(self) -> tuple[str, ...]:
        return tuple(self.meta["dynamic_vars"])

    @property
    def static_vars(self) -> tuple[str, ...]:
        return tuple(self.meta["static_vars"])

    @property
    def units(self) -> dict[str, str]:
        return dict(self.meta["units"])

    @property
    def features(self) -> FeatureSet:
        """What each input slot means (``features.py``); provenance ``unknown`` for a store prepared before."""
        return FeatureSet.of_store(self.meta.get("features"), self.dynamic_vars, self.static_vars, self.path)

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(sorted(set(self._site_of_row.tolist())))

    def years_of(self, site: str) -> tuple[int, ...]:
        return tuple(int(y) for y in self._table.column("year").to_numpy()[self._site_of_row == site])

    def table(self, filter=None):
        """The whole store (or the rows matching a ``pyarrow.dataset`` expression) as a pyarrow Table."""
        return self._table if filter is None else self._table.filter(filter)

    def samples(self, filter=None) -> dict[str, np.ndarray]:
        """Rows (optionally filtered, e.g. ``pc.field("site") == "US-Atq"``) in the sample schema."""
        return rows_to_samples(self.table(filter), len(self.dynamic_vars), len(self.static_vars))
