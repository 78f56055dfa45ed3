"""``xmw infer`` (``jobs/infer.py`` calls the same function)."""

from __future__ import annotations

import argparse
import sys


def cmd_infer(args: argparse.Namespace) -> int:
    from xmw_ray.data.commands import parse_years
    from xmw_ray.infer.budget import BUDGET_UNIT, read_true_budget
    from xmw_ray.infer.maps import check_netcdf_out, write_netcdf
    from xmw_ray.infer.run import run_inference

    def progress(year: int, tg: dict[str, float] | None) -> None:
        budget = "" if tg is None else f": {tg['global']:.3f} {BUDGET_UNIT}"
        print(f"  {year} done{budget}", file=sys.stderr, flush=True)

    truth = None if args.truth is None else read_true_budget(args.truth)
    if args.netcdf is not None:  # before any work
        check_netcdf_out(args.netcdf)
    res = run_inference(args.checkpoint, args.grid, args.out, parse_years(args.years), batch_size=args.batch_size,
                        actors=args.actors, use_gpu=args.use_gpu, on_year_done=progress, map_scale=args.map_scale,
                        truth_budget=truth)
    skipped = len(res.years) - len(res.computed)
    print(f"flux maps {res.out}: {res.cells} cells x {len(res.years)} years ({len(res.computed)} computed, "
          f"{skipped} already done)")
    if args.netcdf is not None:
        write_netcdf(res.out, args.netcdf)
        print(f"CF NetCDF copy -> {args.netcdf}")
    if res.no_budget:
        print(f"xmw: {args.grid}: {res.no_budget}", file=sys.stderr)
        return 0
    print(f"budget ({BUDGET_UNIT}) -> {res.budget_csv}")
    for year, tg in sorted(res.budget.items()):
        print(f"  {year}: {tg['global']:.3f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from xmw_ray.infer.options import DEFAULT_BATCH_SIZE, DEFAULT_MAP_SCALE, MAP_SCALES

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
    p.add_argument("--map-scale", choices=MAP_SCALES, default=DEFAULT_MAP_SCALE,
                   help="colour scale of the annual maps in plots/, one scale shared by every year: 'percentile' "
                        "(default: linear from min(0, 2nd percentile) to the 98th percentile of all years' cells, "
                        "arrows for what lies beyond), 'linear' (the full range), 'log' (from the 1st percentile of "
                        "positive values to the maximum; zero or negative cells get the lower arrow's colour). "
                        "Rerunning with another scale redraws the figures without recomputing the maps")
    p.add_argument("--truth", metavar="WORLD",
                   help="a built-in world folder (xmw simulate --out) or its truth.json: its true yearly budget is "
                        "drawn on the budget figure")
    p.add_argument("--netcdf", metavar="FILE", default=None,
                   help="also write the maps as one CF-1.8 NetCDF-4 file (local path), e.g. to publish them")
    p.set_defaults(func=cmd_infer)
