"""``xmw infer`` (``jobs/infer.py`` calls the same function)."""

from __future__ import annotations

import argparse
import sys


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
                   help=f"cell-years per model call, rounded to whole store chunks (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--actors", type=int, default=None, metavar="N",
                   help="inference actors, 1 CPU each (default: one per GPU with --use-gpu, else one per free CPU, "
                        "at most the cores of a local instance)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per actor")
    p.set_defaults(func=cmd_infer)
