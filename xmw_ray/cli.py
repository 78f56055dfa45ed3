"""The ``xmw`` command. Each room registers its own sub-commands; ``jobs/*.py`` call the same functions.

A room's ``commands`` module exposes ``register(subparsers)`` and sets ``func`` on each sub-parser; the function
takes the parsed arguments and returns an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from xmw_ray.errors import XmwInputError

#: Modules whose ``register(subparsers)`` adds sub-commands, in the order of the pipeline.
COMMAND_MODULES = (
    "xmw_ray.sim.commands",
    "xmw_ray.data.commands",
    "xmw_ray.train.commands",
    "xmw_ray.transfer.commands",
    "xmw_ray.tune.commands",
    "xmw_ray.infer.commands",
    "xmw_ray.report.commands",
    "xmw_ray.pipeline.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmw", description="X-MethaneWet on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # that room is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except XmwInputError as exc:
        print(f"xmw: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"xmw: error: {exc.filename or ''}: file not found", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user named cannot be written (permission, name length, read-only disk)
        if exc.filename is None:  # no path to blame: not a bad input, let the traceback show
            raise
        print(f"xmw: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
