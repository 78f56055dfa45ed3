"""``xmw demo``: the README's main job."""

from __future__ import annotations

import argparse
from pathlib import Path

#: The demo's grid: at 3 degrees (1,419 wetland cells on Earth's land) the map reads as Earth and the whole demo
#: stays near ten minutes on two cores.
DEMO_RES = 3.0


def cmd_demo(args: argparse.Namespace) -> int:
    from xmw_ray import console
    from xmw_ray.data.commands import parse_years
    from xmw_ray.pipeline.demo import run_demo
    from xmw_ray.sim.commands import simulation_spec

    years = parse_years(args.years)
    # the world's options checked before the demo's folder is made: a refusal leaves nothing behind
    simulation_spec(argparse.Namespace(out=str(Path(args.out) / "world"), res=args.res, years=args.years,
                                       sites=args.sites, seed=args.seed))
    # one log for every stage (they share one Ray instance); with -v each stage shows Ray's output
    with console.ray_output(Path(args.out) / console.RAY_LOG, args.verbose):
        outputs = run_demo(Path(args.out), res=args.res, years=years, sites=args.sites, seed=args.seed,
                           verbose=args.verbose)
    console.out("\noutputs:")
    for name, path in outputs:
        console.out(f"  {name:<20} {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the built-in world (README main command)",
                       description="the whole pipeline on the built-in world, one stage after another: "
                                   "simulate, prepare grid and sites, tune, transfer, infer (the transfer model and "
                                   "the simulator-only model), score-maps (both maps and the simulator against the "
                                   "world's true flux), report; each stage is an xmw command, skipped when its "
                                   "output exists")
    p.add_argument("--out", default="demo", help="folder for everything the demo writes")
    p.add_argument("--res", type=float, default=DEMO_RES,
                   help=f"grid resolution in degrees (default {DEMO_RES}: coarse enough for about ten minutes on two "
                        "cores, fine enough for the maps to read as Earth)")
    p.add_argument("--years", default="1979-2018", help="simulated span Y0-Y1")
    p.add_argument("--sites", type=int, default=30, help="pseudo-observation towers")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the simulated world (xmw simulate --seed) (default 0)")
    p.set_defaults(func=cmd_demo)
