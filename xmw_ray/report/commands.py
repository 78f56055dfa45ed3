"""``xmw report``."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> int:
    from xmw_ray import console
    from xmw_ray.report.html import write_report

    path = write_report([Path(f) for f in args.inputs], Path(args.out))
    console.out(f"report: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one HTML page: set-up, definitions, leaderboard, transfer table, maps, budget",
                       description="one self-contained HTML page (figures embedded) of everything found under the "
                                   "folders: the set-up (a built-in world's truth.json, the flux maps, the transfer "
                                   "runs' splits and seeds), definitions of the scores, the search leaderboard, the "
                                   "transfer table, the budget, the seasonal cycle and every year's map")
    p.add_argument("inputs", nargs="+",
                   help="folders to gather from (e.g. demo/world demo/runs demo/maps); paths on the page are shown "
                        "relative to the folder of --out")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.set_defaults(func=cmd_report)
