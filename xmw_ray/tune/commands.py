"""``xmw tune`` (``jobs/tune.py`` calls the same function)."""

from __future__ import annotations

import argparse


def cmd_tune(args: argparse.Namespace) -> int:
    from xmw_ray import console
    from xmw_ray.config import load_config
    from xmw_ray.storage import local_run_dir
    from xmw_ray.tune.leaderboard import summary_line
    from xmw_ray.tune.search import run_search

    cfg = load_config(args.config, args.overrides, require="search")
    with console.ray_output(local_run_dir(cfg.run.output_dir, cfg.run.name) / console.RAY_LOG, args.verbose):
        out = run_search(cfg)
    console.out(summary_line(cfg.run.name, out.rows, cfg.search.num_samples, cfg.search.time_budget_s, out.wall_s))
    if out.rows and out.best_checkpoint:
        b = out.rows[0]
        console.out(f"best: trial {b.trial} {b.model} / {b.strategy}: val NSE {b.val_nse:.3f}"
                    + (f", test NSE {b.test['nse']:.3f}" if "nse" in b.test else ""))
        console.out(console.NSE_NOTE)
    console.out(f"leaderboard: {out.files['markdown']}")
    console.out(f"best checkpoint: {out.best_checkpoint}")
    return 0 if out.best_checkpoint else 1


def register(sub: argparse._SubParsersAction) -> None:
    from xmw_ray.train.commands import add_config_parser

    p = add_config_parser(sub, "tune", "xmw_ray.config:ExperimentConfig", requires="search",
                          help="Ray Tune search (Optuna + ASHA) over models, strategies, hyper-parameters",
                          description="Ray Tune search (Optuna suggestions, ASHA early stopping) over models, "
                                      "transfer strategies and their hyper-parameters; a leaderboard and the best "
                                      "checkpoint; launching again with the same run.name resumes the search")
    p.set_defaults(func=cmd_tune)
