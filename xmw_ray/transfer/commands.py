"""``xmw transfer --config FILE [--set k=v ...]`` (``jobs/transfer.py`` calls the same function)."""

from __future__ import annotations

import argparse


def cmd_transfer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xmw_ray import console
    from xmw_ray.config import load_config
    from xmw_ray.train.runner import ensure_ray
    from xmw_ray.transfer.experiment import check_local_output, check_stores, run_experiment

    cfg = load_config(args.config, args.overrides, require="transfer")
    check_local_output(cfg)
    check_stores(cfg.resolved())  # before Ray starts
    with console.ray_output(Path(cfg.run_dir()) / console.RAY_LOG, args.verbose):
        ensure_ray()
        paths = run_experiment(cfg)
    console.out(paths["summary_md"].read_text(), end="")
    console.out("  test-split scores (mean ± std over seeds; RMSE in mg CH4 m-2 d-1); " + console.NSE_NOTE.strip())
    for name in ("results", "summary_csv", "summary_md", "plot", "best"):
        console.out(f"{name}: {paths[name]}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from xmw_ray.train.commands import add_config_parser

    p = add_config_parser(sub, "transfer", "xmw_ray.config:ExperimentConfig", requires="transfer",
                          help="transfer-learning experiment: strategies x models x settings x fractions x seeds, "
                               "results table and plot",
                          description="transfer learning from simulations (source) to observations (target): "
                                      "every strategy x model x setting x fraction x seed is a Ray Train run scored "
                                      "on the target's test split, next to a gradient-boosted-tree baseline; "
                                      "rerunning skips finished runs")
    p.set_defaults(func=cmd_transfer)
