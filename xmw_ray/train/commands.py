"""``xmw train`` and ``xmw evaluate`` (``jobs/train.py`` calls the same functions)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import textwrap
from pathlib import Path


def presets(command: str) -> list[tuple[str, str]]:
    """``(path, first sentence of its header)`` of each shipped config whose header comment runs it with
    ``xmw COMMAND --config``."""
    from xmw_ray.data.presets import CONFIGS_DIR

    runs = re.compile(rf"\bxmw {re.escape(command)} --config\b")
    found = []
    for path in sorted(CONFIGS_DIR.rglob("*.yaml")):
        lines = path.read_text().splitlines()
        header = [line for line in lines if line.startswith("#")]
        if not any(runs.search(line) for line in header):
            continue
        first = []  # the opening comment paragraph
        for line in lines:
            text = line.removeprefix("#").strip()
            if not line.startswith("#") or not text:
                break
            first.append(text)
        paragraph = " ".join(first)
        end = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", paragraph)
        found.append((str(path.relative_to(CONFIGS_DIR.parent)), paragraph[:end.start() + 1] if end else paragraph))
    return found


def _help_width() -> int:
    """The width argparse wraps help to, so that the pre-wrapped texts of :func:`add_config_parser` match it."""
    return max(60, min(100, shutil.get_terminal_size().columns - 2))


def config_help(command: str, config_class: str, requires: str | None = None) -> str:
    """The ``--help`` epilog of a config-driven command: every key of its config class (``module:Class``,
    imported only when help is printed), the section the command requires, and the presets that run it."""
    module, name = config_class.split(":")
    from xmw_ray.config import describe_keys
    from xmw_ray.data.presets import PRESETS_DIR

    width = _help_width()
    keys = describe_keys(getattr(importlib.import_module(module), name), width)
    lines = [*textwrap.wrap("config keys (YAML; a nested key is dotted on the command line, e.g. --set "
                            "optim.lr=0.001; an unknown key or a wrong type is refused with one line naming it):",
                            width), *keys, ""]
    if requires is not None:
        lines += [*textwrap.wrap(f"xmw {command} requires the {requires} section (the other commands ignore it).",
                                 width), ""]
    found = presets(command)
    if found:
        lines.append("presets (use one as it is, with --set overrides, or copy and edit it):")
        for path, title in found:
            lines += [f"  {path}", *textwrap.wrap(title, width, initial_indent=" " * 6, subsequent_indent=" " * 6)]
    else:
        lines.append("presets: configs/ in the xmw_ray repository (not found next to this installation)")
    lines += textwrap.wrap("X-MethaneWet's own tower folds (data.split.folds: xmw) and wetland types (xmw prepare "
                           f"sites --wetland-types xmw): {PRESETS_DIR / 'README.md'}", width)
    return "\n".join(lines)


def add_config_parser(sub: argparse._SubParsersAction, command: str, config_class: str,
                      requires: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """A sub-command read from a YAML config plus ``--set`` overrides; its help lists the keys, the section it
    requires and the presets (the epilog is kept as laid out, so the description is wrapped here)."""
    if "description" in kwargs:
        kwargs["description"] = textwrap.fill(kwargs["description"], _help_width())
    p = sub.add_parser(command, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog_fn=lambda: config_help(command, config_class, requires), **kwargs)
    p.add_argument("--config", required=True, metavar="FILE",
                   help="YAML config (keys and presets below)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.001 (repeatable; the value is read as YAML)")
    return p


def cmd_train(args: argparse.Namespace) -> int:
    from xmw_ray import console
    from xmw_ray.config import load_config
    from xmw_ray.train.runner import run_dir_of, run_training

    cfg = load_config(args.config, args.overrides).training()
    with console.ray_output(run_dir_of(cfg) / console.RAY_LOG, args.verbose):
        out = run_training(cfg)
    m = out.metrics
    console.out(f"best epoch {m.get('epoch')}: val_loss {m.get('val_loss', float('nan')):.4f} "
                f"val_nse {m.get('val_nse', float('nan')):.3f}")
    console.out(f"best checkpoint: {out.best_checkpoint}")
    return 0


def evaluate_log(checkpoint: str) -> Path:
    """Where ``xmw evaluate`` logs Ray's output: beside the checkpoint (in its run folder), never inside it; for a
    checkpoint on a share this user may not write (a lab's published model), in the user's cache instead (the
    command failed there on creating its log)."""
    from xmw_ray import console
    from xmw_ray.storage import cache_root, is_url, local_mirror

    ckpt = local_mirror(checkpoint) if is_url(checkpoint) else Path(checkpoint).resolve()
    log = ckpt.parent / f"evaluate-{console.RAY_LOG}"
    if (log.parent.is_dir() and not os.access(log.parent, os.W_OK | os.X_OK)) or \
            (log.exists() and not os.access(log, os.W_OK)):  # or another user's log in a shared folder
        return cache_root() / "logs" / log.name
    return log


def cmd_evaluate(args: argparse.Namespace) -> int:
    from xmw_ray import console
    from xmw_ray.train.evaluate import evaluate_checkpoint, format_report

    with console.ray_output(evaluate_log(args.checkpoint), args.verbose):
        report = evaluate_checkpoint(args.checkpoint, args.store, split=args.split, aggregation=args.aggregation,
                                     predictions=args.predictions)
    console.out(json.dumps(report) if args.json else format_report(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_config_parser(sub, "train", "xmw_ray.config:ExperimentConfig",
                          help="train one model on Ray Train (config + overrides)",
                          description="train one model on Ray Train: best checkpoint, metrics and curves under "
                                      "run.output_dir/run.name")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a store's split",
                       description="metrics (NSE, RMSE, KGE, bias...) of a checkpoint on a split of a store: pooled, "
                                   "median over cells or towers, and per cell or tower")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. runs/<name>/best)")
    p.add_argument("--store", required=True, help="Grid store or Site store")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test",
                   help="part of the store to score, by the checkpoint's own split rule; all: every sample "
                        "(default test)")
    p.add_argument("--aggregation", choices=["daily", "monthly"], default="daily",
                   help="score daily values, or monthly means of them (default daily)")
    p.add_argument("--json", action="store_true", help='one JSON object {"pooled", "median", "per_entity"}')
    p.add_argument("--predictions", metavar="FILE.csv", default=None,
                   help="Site store only: also write every scored tower-day (site, date, observed, predicted, mg "
                        "CH4 m-2 d-1; an ensemble adds its members' lowest and highest prediction) to this CSV")
    p.set_defaults(func=cmd_evaluate)
