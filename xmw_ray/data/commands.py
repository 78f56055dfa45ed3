"""``xmw prepare grid|sites`` and ``xmw inspect``."""

from __future__ import annotations

import argparse

from xmw_ray import console
from xmw_ray.errors import XmwInputError


def parse_years(text: str | None) -> tuple[int, int] | None:
    """``"1979-1998"`` or ``"2001"`` → (first, last)."""
    if text is None:
        return None
    parts = text.split("-")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise XmwInputError(f"--years {text}: expected Y0-Y1, e.g. 1979-2018")


def _prepare_grid(args: argparse.Namespace) -> int:
    from xmw_ray.data.grid_store import prepare_grid

    summary = prepare_grid(args.src, args.out, years=parse_years(args.years), cells_per_chunk=args.cells_per_chunk,
                           chunks_per_shard=args.chunks_per_shard, progress=console.StageLog(),
                           wetland_area=args.wetland_area)
    console.out(f"grid store {args.out}: {summary['cells']} valid cells x {len(summary['years'])} years "
          f"at {summary['res']} deg")
    if summary["wetland_extent"] is None:
        console.err(f"xmw: note: {args.out}: no wetland extent (--wetland-area FILE): xmw infer will map intensity "
                    "but not compute a budget")
    return 0


def _prepare_sites(args: argparse.Namespace) -> int:
    from xmw_ray.data.presets import resolve_site_ints
    from xmw_ray.data.site_store import prepare_sites
    from xmw_ray.data.tower_features import qc_line, target_qc_line

    overrides = resolve_site_ints(args.wetland_types, "wetlandtype") if args.wetland_types else None
    summary = prepare_sites(args.src, args.out, grid=args.grid, target=args.target, wetland_types=overrides,
                            max_input_gap=args.max_input_gap, progress=console.StageLog(), drivers=args.drivers,
                            sim_sites=args.sim_sites)
    console.out(f"site store {args.out}: {summary['samples']} site-years from {summary['sites']} sites")
    dropped = {k: v for k, v in summary["dropped"].items() if v}
    console.out("dropped site-years: " + (", ".join(f"{k} {v}" for k, v in dropped.items()) if dropped else "none"))
    console.out(qc_line(summary["driver_qc"]))
    console.out(target_qc_line(summary["target_qc"]))
    if summary["gpp_dt_days"]:
        console.out(f"NPP: {summary['gpp_dt_days']} days of GPP_NT missing taken from GPP_DT")
    if summary["unknown_descriptors"]:
        console.out("descriptors the metadata does not give (stored as NaN, unknown): "
              + ", ".join(f"{k} at {n} towers" for k, n in summary["unknown_descriptors"].items()))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from xmw_ray.data.inspect_store import inspect_store

    console.out(inspect_store(args.store))
    return 0


def register(subparsers) -> None:
    from xmw_ray.data.options import (
        DEFAULT_CELLS_PER_CHUNK,
        DEFAULT_CHUNKS_PER_SHARD,
        DEFAULT_DRIVERS,
        DEFAULT_MAX_INPUT_GAP,
        DEFAULT_TARGET,
        DRIVER_SETS,
        TARGET_CHOICES,
    )

    prep = subparsers.add_parser("prepare", help="build a Grid (TEM-MDM) or Site (FLUXNET-CH4) store",
                                 description="build a Grid store (TEM-MDM simulations, Zarr) or a Site store "
                                             "(FLUXNET-CH4 towers, Parquet) that train, transfer, tune and infer read")
    kinds = prep.add_subparsers(dest="kind", required=True, metavar="{grid,sites}")

    g = kinds.add_parser("grid", help="TEM-MDM files -> Zarr Grid store (valid cells only)",
                         description="TEM-MDM files -> Zarr Grid store (valid cells only)")
    g.add_argument("--src", required=True, help="X-MethaneWet dataset root (with TEM-MDM/) or the TEM-MDM folder")
    g.add_argument("--out", required=True, help="store path or URL")
    g.add_argument("--years", help="Y0-Y1 (default: every year with a full set of files)")
    g.add_argument("--cells-per-chunk", type=int, default=DEFAULT_CELLS_PER_CHUNK, metavar="N",
                   help="grid cells per Zarr chunk; one chunk of one year is one block of samples (one Ray Data "
                        f"read task) (default {DEFAULT_CELLS_PER_CHUNK})")
    g.add_argument("--chunks-per-shard", type=int, default=DEFAULT_CHUNKS_PER_SHARD, metavar="N",
                   help="chunks grouped into one shard file along the cell axis: fewer, larger files, e.g. for "
                        f"object storage (default {DEFAULT_CHUNKS_PER_SHARD})")
    g.add_argument("--wetland-area", metavar="FILE",
                   help="NetCDF wetland fraction (e.g. WAD2M's Fw), static or monthly, on this grid or a finer one "
                        "nesting in it; needed for the global budget (CH4_emission_intensity is per wetland m2)")
    g.set_defaults(func=_prepare_grid)

    s = kinds.add_parser("sites", help="FLUXNET-CH4 daily files -> Parquet Site store",
                         description="FLUXNET-CH4 daily files -> Parquet Site store (one sample per site-year)")
    s.add_argument("--src", required=True, help="folder with FLX_*_DD_*.csv + META, or FLUXNET_T1_DD.csv")
    s.add_argument("--out", required=True, help="Site store folder (path or URL) to write")
    s.add_argument("--grid", help="Grid store giving NPP, static maps and CH4/CO2 at each tower's cell")
    s.add_argument("--target", choices=TARGET_CHOICES, default=DEFAULT_TARGET,
                   help="daily CH4 flux to learn: FCH4 (measured days only), FCH4_F (gap-filled), xmw-fill "
                        f"(FCH4_F, remaining gaps from FCH4_F_ANNOPTLM) (default {DEFAULT_TARGET})")
    s.add_argument("--wetland-types", metavar="xmw|CSV", help="per-tower wetlandtype override: 'xmw' (X-MethaneWet preset) or CSV")
    s.add_argument("--max-input-gap", type=int, default=DEFAULT_MAX_INPUT_GAP, metavar="DAYS",
                   help="fill driver gaps of at most this many days by interpolation (0: none; xmw and map drivers only) "
                        f"(default {DEFAULT_MAX_INPUT_GAP})")
    s.add_argument("--drivers", choices=DRIVER_SETS, default=DEFAULT_DRIVERS,
                   help="xmw: X-MethaneWet's 5 drivers (gap site-years dropped); tower: the towers' own columns, "
                        "trailing means, gap flags (gaps kept as NaN) and metadata descriptors; map: the Grid store's "
                        "slots a tower supplies without one (daily weather, wetland type, CH4/CO2; gaps "
                        "kept as NaN), so the model maps a Grid store "
                        f"(default {DEFAULT_DRIVERS})")
    s.add_argument("--sim-sites", metavar="DIR",
                   help="with --drivers tower: 'xmw simulate sites' output whose FCH4 becomes the SIM_FCH4 input")
    s.set_defaults(func=_prepare_sites)

    i = subparsers.add_parser("inspect", help="describe a Grid or Site store",
                              description="describe a Grid or Site store: grid or sites, years, samples, and a summary of "
                                          "every feature")
    i.add_argument("store", metavar="STORE", help="Grid store (Zarr) or Site store (Parquet) path or URL")
    i.set_defaults(func=_inspect)
