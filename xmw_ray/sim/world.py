"""``xmw simulate``: the built-in world run one year at a time, written in the X-MethaneWet layout.

The process model runs twice over every land cell: with the simulator's parameters (``SIMULATOR``, the TEM-MDM
stand-in written to ``TEM-MDM/``) and with the true world's (``TRUE_WORLD``, what the towers observe, without
their site effects) written to ``TRUE-WORLD/`` for scoring maps against the truth (``xmw score-maps``).

Only one year of weather and the model state of the previous day are held at a time (plus the few towers'
forcing), so memory stays flat and time grows linearly with land cells × years. The first year is run once as
spin-up so that soil temperature, water table and substrate start in balance; the state then carries across
years.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmw_ray.console import Step
from xmw_ray.data import layout
from xmw_ray.data.atmosphere import annual_concentrations
from xmw_ray.data.contract import DAYS_IN_MONTH, UNITS, days_to_slots
from xmw_ray.data.layout import TRUTH_FILE, WORLD_MARKER
from xmw_ray.errors import XmwInputError
from xmw_ray.sim.process import SIMULATOR, TRUE_WORLD, Forcing, run, spin_up
from xmw_ray.sim.statics import StaticWorld, build_world, write_statics
from xmw_ray.sim.towers import TowerRecorder, plan_towers, write_towers
from xmw_ray.sim.weather import Weather, WeatherGenerator
from xmw_ray.storage import aside_target, refuse_foreign_local, write_text_atomic

#: What ``simulate`` writes at the top of its folder (and ``truth.json``'s aside while it is written, whose old
#: ``.tmp`` name is kept for worlds written before): a folder holding anything else is not a world to replace.
WORLD_ENTRIES = (layout.TEM_DIR, layout.FLUX_DIR, layout.TRUE_DIR, layout.WETLAND_EXTENT_FILE.split("/", 1)[0], TRUTH_FILE,
                 TRUTH_FILE + ".tmp", WORLD_MARKER)
_MONTH_STARTS = np.concatenate([[0], np.cumsum(DAYS_IN_MONTH)[:-1]])


@dataclass(frozen=True)
class SimulationSpec:
    out: Path
    res: float
    years: tuple[int, int]
    sites: int
    seed: int


def global_budget_tg(world: StaticWorld, ch4: np.ndarray) -> float:
    """Σ flux × wetland area over the year, Tg CH4 (``ch4`` is ``(days, n)`` mg m⁻² d⁻¹)."""
    wetland_area = world.wetland_fraction * world.area
    return float(ch4.sum(axis=0, dtype=np.float64) @ wetland_area) * 1e-15


def _forcing(weather: Weather, co2: float) -> Forcing:
    return Forcing(tair=weather.tair, prec=weather.prec, solr=weather.solr, vapr=weather.vapr,
                   co2=np.full(weather.tair.shape[0], co2))


def _write_year(root: Path, world: StaticWorld, year: int, weather: Weather, ch4: np.ndarray, npp: np.ndarray,
                true_ch4: np.ndarray) -> None:
    for var, values in (("PREC", weather.prec), ("SOLR", weather.solr), ("TAIR", weather.tair),
                        ("VAPR", weather.vapr)):
        layout.write_daily(root, var, year, world.to_grid(days_to_slots(values.T)), world.res, UNITS[var])
    monthly = np.add.reduceat(npp, _MONTH_STARTS, axis=0).T  # (n, 12) g C m-2 month-1
    layout.write_npp(root, year, world.to_grid(monthly), world.res)
    layout.write_target(root, year, world.to_grid(days_to_slots(ch4.T)), world.res)
    layout.write_target(root, year, world.to_grid(days_to_slots(true_ch4.T)), world.res, true_world=True)


_YEAR_FILE = re.compile(r"(daily_ecmwf_[A-Z]+|monthly_NPP|CH4_emission_intensity)_(\d{4})\.nc")


def remove_stale_years(root: Path, years: range) -> None:
    """Drop yearly files of an earlier run outside this run's span, so the folder holds exactly one world."""
    for folder in (layout.TEM_DIR, layout.TRUE_DIR):
        tem = Path(root) / folder
        if tem.is_dir():
            for path in tem.iterdir():
                m = _YEAR_FILE.fullmatch(path.name)
                if m and int(m.group(2)) not in years:
                    path.unlink()


def world_key(key: str) -> bool:
    """Whether ``key`` (relative to a world folder) is something ``simulate`` writes there."""
    top = key.split("/", 1)[0]
    return top in WORLD_ENTRIES or aside_target(top) == TRUTH_FILE


def claim_world_folder(out: Path) -> bool:
    """Whether ``out`` holds an earlier built-in world, which a run replaces (its yearly files, statics and
    towers are rewritten in place). Anything else that is not empty (a file, a user's folder, an X-MethaneWet
    dataset root without the world's marker) is refused with ``XmwInputError`` and left as it is."""
    if not refuse_foreign_local(out, world_key, "built-in world folder"):
        return False
    if not ((out / TRUTH_FILE).is_file() or (out / WORLD_MARKER).is_file()):
        raise XmwInputError(f"{out}: holds data that xmw simulate did not write (no {TRUTH_FILE}); "
                            "choose another --out or remove it")
    return True


def simulate(spec: SimulationSpec, log: Callable[[str], None] | None = None) -> dict:
    """Write ``spec.out/TEM-MDM``, ``spec.out/FLUXNET-CH4`` and ``spec.out/truth.json``; returns the summary
    (``truth.json``'s content plus the wall time of each simulated year and the number of land cells)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    y0, y1 = spec.years
    root = Path(spec.out)
    t_start = time.perf_counter()
    replacing = claim_world_folder(root)
    world = build_world(spec.seed, spec.res)
    plan = plan_towers(world, spec.sites, spec.years, spec.seed)  # fails early when towers do not fit
    if replacing:
        log(f"replacing existing built-in world {root}")
    root.mkdir(parents=True, exist_ok=True)
    (root / WORLD_MARKER).touch()
    # the old summary goes before any old year does: a rerun stopped midway (another seed, other years) must not
    # pass as a finished world whose truth.json describes files that are no longer all there
    (root / TRUTH_FILE).unlink(missing_ok=True)
    remove_stale_years(root, range(y0, y1 + 1))
    write_statics(world, root)
    years = np.arange(y0, y1 + 1)
    conc = annual_concentrations(years)
    for var in ("CH4", "CO2"):
        layout.write_annual(root, var, years, conc[var])
    log(f"world: {world.n} land cells at {spec.res} deg, {(world.wetland_fraction > 0).sum()} with wetland "
        f"({time.perf_counter() - t_start:.1f} s)")

    recorder = TowerRecorder(plan)
    gen = WeatherGenerator(spec.seed, world.clim, world.xyz, world.cont, world.elev)
    props = world.props()
    first = gen.year(y0)
    state = spin_up(_forcing(first, float(conc["CO2"][0])), props, SIMULATOR)
    true_state = spin_up(_forcing(first, float(conc["CO2"][0])), props, TRUE_WORLD)
    budgets: dict[int, float] = {}
    true_budgets: dict[int, float] = {}
    seconds: dict[int, float] = {}
    for i, year in enumerate(years):
        t0 = time.perf_counter()
        weather = first if i == 0 else gen.year(int(year))
        forcing = _forcing(weather, float(conc["CO2"][i]))
        result, state = run(forcing, props, SIMULATOR, state)
        true_result, true_state = run(forcing, props, TRUE_WORLD, true_state)
        _write_year(root, world, int(year), weather, result.ch4, result.npp, true_result.ch4)
        recorder.collect(int(year), weather)
        budgets[int(year)] = global_budget_tg(world, result.ch4)
        true_budgets[int(year)] = global_budget_tg(world, true_result.ch4)
        seconds[int(year)] = time.perf_counter() - t0
        log(Step(f"{year}: wetland budget {budgets[int(year)]:.1f} Tg CH4 (simulator), "
                 f"{true_budgets[int(year)]:.1f} (true world), {seconds[int(year)]:.1f} s", i + 1,
                 len(years), "simulated years"))
        del weather, forcing, result, true_result
    first = None

    effects = write_towers(root, world, plan, recorder, spec.seed)
    summary = {
        "seed": spec.seed,
        "res": spec.res,
        "years": [y0, y1],
        "simulator_parameters": SIMULATOR.to_dict(),
        "true_parameters": TRUE_WORLD.to_dict(),
        "towers": effects,
        "global_wetland_budget_Tg_per_year": budgets,
        "true_flux": {"folder": layout.TRUE_DIR, "parameters": "true_parameters", "site_effect": 1.0,
                      "note": "the true world over every land cell, without the towers' site effects"},
        "true_wetland_budget_Tg_per_year": true_budgets,
        "wetland_area_km2": float((world.wetland_fraction * world.area).sum() / 1e6),
    }
    path = root / TRUTH_FILE
    write_text_atomic(path, json.dumps(summary, indent=1))
    log(f"done in {time.perf_counter() - t_start:.1f} s: {root}")
    return {**summary, "seconds_per_year": seconds, "land_cells": world.n}
