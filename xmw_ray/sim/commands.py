"""``xmw simulate`` (the built-in world) and ``xmw simulate sites`` (the simulator at real towers' forcing)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xmw_ray import console
from xmw_ray.errors import XmwInputError

DEFAULT_RES = 2.0
DEFAULT_YEARS = "1979-2018"
DEFAULT_SITES = 30


def simulation_spec(args: argparse.Namespace):
    """Validated :class:`SimulationSpec` from the command line (one-line errors for bad values)."""
    from xmw_ray.data.commands import parse_years
    from xmw_ray.data.contract import grid_shape
    from xmw_ray.sim.towers import MAX_SITES
    from xmw_ray.sim.weather import FIRST_YEAR, LAST_YEAR
    from xmw_ray.sim.world import SimulationSpec

    if not args.out:
        raise XmwInputError("simulate: --out is required (the folder that receives TEM-MDM/ and FLUXNET-CH4/)")
    if not args.res > 0:
        raise XmwInputError(f"--res {args.res}: must be positive")
    try:
        grid_shape(args.res)
    except ValueError:
        raise XmwInputError(f"--res {args.res}: must divide 180 and 360 degrees (e.g. 0.5, 1, 2, 5)") from None
    years = parse_years(args.years)
    if years[1] < years[0]:
        raise XmwInputError(f"--years {args.years}: end year before start year")
    if years[0] < FIRST_YEAR or years[1] > LAST_YEAR:
        raise XmwInputError(f"--years {args.years}: the built-in world covers {FIRST_YEAR}-{LAST_YEAR}")
    if not 0 <= args.sites <= MAX_SITES:
        raise XmwInputError(f"--sites {args.sites}: must be between 0 and {MAX_SITES}")
    if args.seed < 0:
        raise XmwInputError(f"--seed {args.seed}: must be non-negative")
    return SimulationSpec(out=Path(args.out), res=float(args.res), years=years, sites=args.sites, seed=args.seed)


def _simulate(args: argparse.Namespace) -> int:
    from xmw_ray.sim.world import simulate

    spec = simulation_spec(args)
    try:
        summary = simulate(spec, log=console.StageLog())
    except ValueError as exc:  # e.g. more towers than wetland cells at a coarse resolution
        raise XmwInputError(f"simulate: {exc}") from None
    budgets = list(summary["global_wetland_budget_Tg_per_year"].values())
    true_budgets = list(summary["true_wetland_budget_Tg_per_year"].values())
    console.out(f"world {spec.out}: {spec.years[0]}-{spec.years[1]} at {spec.res} deg, {spec.sites} towers, "
                f"wetland budget {min(budgets):.0f}-{max(budgets):.0f} Tg CH4 per year (simulator), "
                f"true world {min(true_budgets):.0f}-{max(true_budgets):.0f}")
    return 0


def _simulate_sites(args: argparse.Namespace) -> int:
    from xmw_ray.sim.site_forcing import simulate_sites

    done = simulate_sites(args.forcing, args.sites_out, log=console.StageLog())
    console.out(f"simulated {len(done)} sites ({sum(done.values())} site-days) -> {args.sites_out}")
    return 0


def register(subparsers) -> None:
    sim = subparsers.add_parser(
        "simulate", help="write the built-in world (TEM-MDM + FLUXNET-CH4 layout), or simulate real towers",
        usage="%(prog)s --out DIR [--res DEG] [--years Y0-Y1] [--sites N] [--seed S]\n"
              "       %(prog)s sites --forcing DIR --out DIR",
        description="Without a sub-command: write the built-in world (a process model with known truth) in the "
                    "X-MethaneWet layout. 'xmw simulate sites': run the same process model at real towers' forcing.")
    sim.add_argument("--out", metavar="DIR", help="output folder (receives TEM-MDM/, FLUXNET-CH4/ and truth.json)")
    sim.add_argument("--res", type=float, default=DEFAULT_RES, metavar="DEG",
                     help=f"grid resolution in degrees, dividing 180 and 360 (default {DEFAULT_RES})")
    sim.add_argument("--years", default=DEFAULT_YEARS, metavar="Y0-Y1",
                     help=f"simulated years (default {DEFAULT_YEARS})")
    sim.add_argument("--sites", type=int, default=DEFAULT_SITES, metavar="N",
                     help=f"pseudo-observation towers placed on wetland cells (default {DEFAULT_SITES})")
    sim.add_argument("--seed", type=int, default=0, metavar="S",
                     help="seed of the world: its maps, weather and tower placement; the same seed gives the same "
                          "files (default 0)")
    sim.set_defaults(func=_simulate)
    kinds = sim.add_subparsers(dest="sim_kind", title="sub-command (optional)", metavar="sites")
    sites = kinds.add_parser("sites", prog=f"{sim.prog} sites", help="run the process model at real towers' own daily forcing",
                             description="run the built-in world's process model at real towers' own daily "
                                         "forcing: one simulated FLUXNET-CH4 site file per tower")
    sites.add_argument("--forcing", required=True, metavar="DIR",
                       help="folder with FLUXNET-CH4 site files (or FLUXNET_T1_DD.csv)")
    sites.add_argument("--out", dest="sites_out", required=True, metavar="DIR",
                       help="output folder (site files + metadata)")
    sites.set_defaults(func=_simulate_sites)
