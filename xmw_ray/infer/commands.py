"""``xmw infer`` (``jobs/infer.py`` calls the same function)."""

from __future__ import annotations

import argparse
import sys

from xmw_ray.errors import XmwInputError


def cmd_infer(args: argparse.Namespace) -> int:
    from xmw_ray.data.commands import parse_years
    from xmw_ray.infer.budget import BUDGET_UNIT
    from xmw_ray.infer.run import run_inference

    def progress(year: int, tg: dict[str, float] | None) -> None:
        budget = "" if tg is None else f": {tg['global']:.3f} {BUDGET_UNIT}"
        print(f"  {year} done{budget}", file=sys.stderr, flush=True)

    res = run_inference(args.checkpoint, args.grid, args.out, parse_years(args.years), batch_size=args.batch_size,
                        actors=args.actors, use_gpu=args.use_gpu, on_year_done=progress)
    skipped = len(res.years) - len(res.computed)
    print(f"flux maps {res.out}: {res.cells} cells x {len(res.years)} years ({len(res.computed)} computed, "
          f"{skipped} already done)")
    if res.no_budget:
        print(f"xmw: {args.grid}: {res.no_budget}", file=sys.stderr)
        return 0
    print(f"budget ({BUDGET_UNIT}) -> {res.budget_csv}")
    for year, tg in sorted(res.budget.items()):
        print(f"  {year}: {tg['global']:.3f}")
    return 0


def cmd_score_maps(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xmw_ray.infer.maps import put_bytes
    from xmw_ray.infer.skill import (
        comparison_csv,
        comparison_table,
        open_maps,
        open_truth,
        score_sources,
        write_skill,
    )

    names = args.names or [Path(str(m).rstrip("/")).name for m in args.maps]
    if len(names) != len(args.maps):
        raise XmwInputError(f"--names: {len(names)} names for {len(args.maps)} map stores")
    readers = [open_maps(m) for m in args.maps]
    world = open_truth(args.truth, readers[0].years)
    sources = [(SIMULATOR_ROW, None), *zip(names, readers, strict=True)]
    skills = score_sources(sources, world, on_year=lambda y: print(f"  {y} scored", file=sys.stderr, flush=True))
    for reader, skill in zip(readers, skills[1:], strict=True):
        write_skill(reader.path, skill, world.root)
    print(f"skill against the true flux of {world.root} ({len(readers[0].years)} years; "
          "NSE and bias over the maps' cell-days, budget and trend of the global wetland budget):")
    print(comparison_table(skills))
    if args.out:
        put_bytes(str(args.out), comparison_csv(skills).encode())
        print(f"comparison -> {args.out}")
    print(f"per-group skill -> {', '.join(str(Path(r.path) / 'skill.csv') for r in readers)}")
    return 0


#: The row of the world's own process-model output (the simulations the models learn from), scored as a reference.
SIMULATOR_ROW = "process model (simulator)"


def register(sub: argparse._SubParsersAction) -> None:
    from xmw_ray.infer.options import DEFAULT_BATCH_SIZE

    p = sub.add_parser("infer", help="global flux maps of a checkpoint over a Grid store (Ray Data actor pool)",
                       description="global daily CH4 flux maps of a checkpoint over every cell-year of a Grid "
                                   "store (Ray Data actor pool), as CF-conventions Zarr, with figures and, when "
                                   "the store has a wetland extent, the global budget")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. runs/<name>/best)")
    p.add_argument("--grid", required=True, help="Grid store (xmw prepare grid)")
    p.add_argument("--years", metavar="Y0-Y1", help="years to map (default: every year of the store)")
    p.add_argument("--out", required=True,
                   help="flux-map Zarr store; also receives plots/*.png and, when the Grid store has a wetland "
                        "extent (prepare grid --wetland-area), budget.csv. Rerunning the same command resumes: only "
                        "years without a _done/<year>.json marker are computed")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"cell-years per model call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--actors", type=int, default=None, metavar="N",
                   help="inference actors (default: one per GPU with --use-gpu, else all CPUs but one)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per actor")
    p.set_defaults(func=cmd_infer)

    s = sub.add_parser(
        "score-maps", help="score flux maps against the built-in world's true flux (NSE, bias, budget, trend)",
        description="score flux maps (xmw infer --out) against the true flux of the built-in world they were made "
                    "from (xmw simulate writes it to WORLD/TRUE-WORLD/): daily NSE and bias over the maps' cells, "
                    "globally, by latitude band and by wetland type; the global budget's error each year and on "
                    "average (Tg CH4 yr-1) and its trend's error (Tg CH4 yr-2). The world's own process-model "
                    "output (the simulations the models learn from) is scored too, as a reference row. Streams "
                    "a year and a band of rows at a time. Writes skill.json, skill.csv (by group) and "
                    "skill_budget.csv into each map store and prints a comparison table",
        usage="%(prog)s --truth WORLD MAPS [MAPS ...] [--names NAME ...] [--out CSV]")
    s.add_argument("maps", nargs="+", metavar="MAPS", help="flux-map stores (xmw infer --out), every year done")
    s.add_argument("--truth", required=True, metavar="WORLD",
                   help="the built-in world folder (xmw simulate --out) the maps' Grid store was prepared from")
    s.add_argument("--names", nargs="+", metavar="NAME",
                   help="a name for each map store in the table (default: the store's folder name)")
    s.add_argument("--out", metavar="CSV", help="also write the comparison table (one row per source) here")
    s.set_defaults(func=cmd_score_maps)
