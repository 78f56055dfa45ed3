"""The ``xmw`` command. Each room registers its own sub-commands; ``jobs/*.py`` call the same functions.

A room's ``commands`` module exposes ``register(subparsers)`` and sets ``func`` on each sub-parser; the function
takes the parsed arguments and returns an exit status. Building the parser imports only those ``commands`` modules
and light constants (``xmw_ray.data.options``...): torch, Ray, pandas and the rest are imported by the ``func`` that
needs them, so ``xmw --help`` answers at once (tests/test_cli_help.py checks both).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from xmw_ray import console
from xmw_ray.console import RAY_LOG
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
#: The commands that run Ray: their Ray output goes to a log file unless -v (xmw_ray.console).
RAY_COMMANDS = ("train", "evaluate", "transfer", "tune", "infer", "demo")


class XmwParser(argparse.ArgumentParser):
    """An argument parser whose epilog may be a function (``epilog_fn``), called only when help is printed: a
    command's help may list what an import would tell (config keys) without slowing every other call down."""

    def __init__(self, *args, epilog_fn: Callable[[], str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self) -> str:
        if self.epilog_fn is not None:
            self.epilog = self.epilog_fn()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser (sub-parsers are :class:`XmwParser` too: argparse makes them of the parent's class)."""
    parser = XmwParser(
        prog="xmw", description="X-MethaneWet on Ray: wetland CH4 flux sequence models, from simulations and "
                                "FLUXNET-CH4 towers to global flux maps",
        epilog="'xmw COMMAND --help' explains each command; 'xmw demo' runs the whole pipeline on the built-in "
               "world")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for name in RAY_COMMANDS:
        sub.choices[name].add_argument(
            "-v", "--verbose", action="store_true",
            help=f"show Ray's own output (status tables, raylet warnings, Tune's trial tables) here instead of in "
                 f"{RAY_LOG} in the folder the command writes, whose path it prints")
    return parser


#: Exit status of a command ended by SIGTERM (the shell's 128 + signal number).
SIGTERM_STATUS = 128 + signal.SIGTERM


def _end_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(SIGTERM_STATUS)


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While the command runs, SIGTERM (a batch scheduler's time limit, ``timeout``, a pod's stop) ends it as
    Ctrl-C does, through every ``finally``: the temporary folders and half-built stores it holds are removed, exit
    status 143. By default the process just died, leaving them (a hidden copy of a store, a Site store bound for a
    bucket). A command that starts Ray gets Ray's handler instead, to the same effect (exit status 15); a handler
    someone else set is kept."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _end_on_sigterm)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is _end_on_sigterm:  # Ray's, once it started, stays for its shutdown
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_unwinds():
            return int(args.func(args) or 0)
    except XmwInputError as exc:
        console.err(f"xmw: error: {exc}")
        return 2
    except FileNotFoundError as exc:
        console.err(f"xmw: error: {exc.filename or ''}: file not found")
        return 2
    except OSError as exc:  # a path the user named cannot be written (permission, name length, read-only disk)
        if exc.filename is None:  # no path to blame: not a bad input, let the traceback show
            raise
        console.err(f"xmw: error: {exc.filename}: {exc.strerror or exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
