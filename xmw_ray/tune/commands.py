"""``xmw tune`` (``jobs/tune.py`` calls the same function)."""

from __future__ import annotations

import argparse


def cmd_tune(args: argparse.Namespace) -> int:
    from xmw_ray import console
    from xmw_ray.config import load_config
    from xmw_ray.storage import local_run_dir
    from xmw_ray.tune.search import run_search

    cfg = load_config(args.config, args.overrides, require="search")
    with console.ray_output(local_run_dir(cfg.run.output_dir, cfg.run.name) / console.RAY_LOG, args.verbose):
        out = run_search(cfg)
    done = sum(r.get("status") == "completed" for r in out.rows)
    stopped = sum(r.get("status") == "stopped" for r in out.rows)
    failed = sum(r.get("status") in ("error", "no report") for r in out.rows)
    console.out(f"search {cfg.run.name!r}: {len(out.rows)} trials ({done} completed, {stopped} stopped early, "
                f"{failed} failed) in {out.wall_s:.0f} s")
    if out.rows and out.best_checkpoint:
        b = out.rows[0]
        console.out(f"best: trial {b['trial']} {b['model']} / {b['strategy']}: val NSE {b['val_nse']:.3f}"
                    + (f", test NSE {b['test_nse']:.3f}" if "test_nse" in b else ""))
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
