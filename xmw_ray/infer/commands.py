"""``xmw infer`` (``jobs/infer.py`` calls the same function)."""

from __future__ import annotations

import argparse

from xmw_ray.errors import XmwInputError


def cmd_infer(args: argparse.Namespace) -> int:
    from xmw_ray import console
    from xmw_ray.data.commands import parse_years
    from xmw_ray.infer.budget import BUDGET_UNIT, member_range, read_true_budget
    from xmw_ray.infer.maps import check_netcdf_out, write_netcdf
    from xmw_ray.infer.run import run_inference

    bar = console.Progress("years", 0, "mapped")
    mapped: list[int] = []

    truth = None if args.truth is None else read_true_budget(args.truth)
    if args.netcdf is not None:  # before any work
        check_netcdf_out(args.netcdf)

    def start(wanted: list[int], missing: list[int]) -> None:
        bar.total = len(missing)

    def year_done(year: int, tg: dict[str, float] | None) -> None:
        mapped.append(year)
        bar.update(len(mapped), f"{year}" + ("" if tg is None else f": {tg['global']:.1f} {BUDGET_UNIT}"))

    with console.ray_output(_log_path(args.out), args.verbose):
        res = run_inference(args.checkpoint, args.grid, args.out, parse_years(args.years),
                            batch_size=args.batch_size, actors=args.actors, use_gpu=args.use_gpu,
                            on_year_done=year_done, on_start=start, map_scale=args.map_scale, truth_budget=truth)
    skipped = len(res.years) - len(res.computed)
    console.out(f"flux maps {res.out}: {res.cells} cells x {len(res.years)} years ({len(res.computed)} computed, "
                f"{skipped} already done)")
    if args.netcdf is not None:
        write_netcdf(res.out, args.netcdf)
        console.out(f"CF NetCDF copy -> {args.netcdf}")
    if res.no_budget:
        console.err(f"xmw: {args.grid}: {res.no_budget}")
        return 0
    for line in budget_lines(res.budget, BUDGET_UNIT):
        console.out(line)
    if res.members:
        ranges = [member_range(m) for m in res.member_budget.values()]
        low = sum(r["global_member_min"] for r in ranges) / len(ranges)
        high = sum(r["global_member_max"] for r in ranges) / len(ranges)
        console.out(f"ensemble of {res.members} members: lowest to highest member's global budget, mean over the "
                    f"years {low:.1f} to {high:.1f} {BUDGET_UNIT} (each year in budget.csv; per-cell spread maps in "
                    "plots/annual_spread_*.png)")
    console.out(f"budget by latitude band: {res.budget_csv}")
    return 0


def budget_lines(budget: dict[int, dict[str, float]], unit: str) -> list[str]:
    """The global budget once: a summary (mean, lowest and highest year), then every year, ten to a line."""
    years = sorted(budget)
    values = [budget[y]["global"] for y in years]
    low, high = min(zip(values, years, strict=True)), max(zip(values, years, strict=True))
    lines = [f"global wetland budget ({unit}), {years[0]}-{years[-1]}: mean {sum(values) / len(values):.1f}, "
             f"lowest {low[0]:.1f} ({low[1]}), highest {high[0]:.1f} ({high[1]})"]
    for i in range(0, len(years), 10):
        lines.append("  " + "  ".join(f"{y} {v:6.1f}" for y, v in zip(years[i:i + 10], values[i:i + 10],
                                                                        strict=True)))
    return lines


def _log_path(out: str):
    """``<out>.ray.log`` beside the map store (a file inside it would make a new store look foreign); a local
    mirror's for a URL."""
    from pathlib import Path

    from xmw_ray.console import RAY_LOG
    from xmw_ray.storage import is_url, local_mirror

    store = local_mirror(out) if is_url(out) else Path(out).resolve()
    return store.with_name(f"{store.name}.{RAY_LOG}")


def cmd_score_maps(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xmw_ray import console
    from xmw_ray.infer.maps import put_bytes
    from xmw_ray.infer.skill import (
        COMPARISON_HEAD,
        comparison_csv,
        comparison_table,
        open_maps,
        open_truth,
        score_sources,
        write_skill,
    )
    from xmw_ray.storage import refuse_foreign_file

    if args.out:
        refuse_foreign_file(args.out, lambda head: head.startswith(COMPARISON_HEAD),
                            "a comparison table of xmw score-maps", "--out")
    names = args.names or [Path(str(m).rstrip("/")).name for m in args.maps]
    if len(names) != len(args.maps):
        raise XmwInputError(f"--names: {len(names)} names for {len(args.maps)} map stores")
    readers = [open_maps(m) for m in args.maps]
    world = open_truth(args.truth, readers[0].years)
    sources = [(SIMULATOR_ROW, None), *zip(names, readers, strict=True)]
    bar = console.Progress("years", len(readers[0].years), "scored")
    done: list[int] = []

    def year_scored(year: int) -> None:
        done.append(year)
        bar.update(len(done), str(year))

    skills = score_sources(sources, world, on_year=year_scored)
    for reader, skill in zip(readers, skills[1:], strict=True):
        write_skill(reader.path, skill, world.root)
    console.out(f"skill against the true flux of {world.root} ({len(readers[0].years)} years; "
                "NSE and bias over the maps' cell-days, budget and trend of the global wetland budget):")
    console.out(comparison_table(skills))
    if args.out:
        put_bytes(str(args.out), comparison_csv(skills).encode())
        console.out(f"comparison -> {args.out}")
    console.out(f"per-group skill -> {', '.join(str(Path(r.path) / 'skill.csv') for r in readers)}")
    return 0


#: The row of the world's own process-model output (the simulations the models learn from), scored as a reference.
SIMULATOR_ROW = "process model (simulator)"


def register(sub: argparse._SubParsersAction) -> None:
    from xmw_ray.infer.options import DEFAULT_BATCH_SIZE, DEFAULT_MAP_SCALE, MAP_SCALES

    p = sub.add_parser("infer", help="global flux maps of a checkpoint over a Grid store (a pool of Ray actors)",
                       description="global daily CH4 flux maps of a checkpoint over every cell-year of a Grid "
                                   "store (a pool of Ray actors, each reading its own cells), as CF-conventions "
                                   "Zarr, with figures and, when the store has a wetland extent, the global budget; "
                                   "for an ensemble checkpoint also each cell's spread across the members "
                                   "(ch4_flux_annual_spread, plots/annual_spread_*.png) and the members' budget "
                                   "range (budget.csv, budget.png)")
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
