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
    p = sub.add_parser("report", help="one HTML page: leaderboard, transfer table, plots, global budget")
    p.add_argument("inputs", nargs="+", help="folders to gather from (e.g. demo/runs demo/maps)")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.set_defaults(func=cmd_report)
