"""``xmw train`` and ``xmw evaluate`` (``jobs/train.py`` calls the same functions)."""

from __future__ import annotations

import argparse
import json


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML experiment file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.001 (repeatable)")


def cmd_train(args: argparse.Namespace) -> int:
    from xmw_ray.config import load_config
    from xmw_ray.train.runner import run_training

    cfg = load_config(args.config, args.overrides)
    out = run_training(cfg)
    m = out.metrics
    print(f"best epoch {m.get('epoch')}: val_loss {m.get('val_loss', float('nan')):.4f} "
          f"val_nse {m.get('val_nse', float('nan')):.3f}")
    print(f"best checkpoint: {out.best_checkpoint}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from xmw_ray.train.evaluate import evaluate_checkpoint, format_report

    report = evaluate_checkpoint(args.checkpoint, args.store, split=args.split, aggregation=args.aggregation)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model on Ray Train (config + overrides)")
    add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a store's split")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. runs/<name>/best)")
    p.add_argument("--store", required=True, help="Grid store or Site store")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test")
    p.add_argument("--aggregation", choices=["daily", "monthly"], default="daily")
    p.add_argument("--json", action="store_true", help='one JSON object {"pooled", "median", "per_entity"}')
    p.set_defaults(func=cmd_evaluate)
