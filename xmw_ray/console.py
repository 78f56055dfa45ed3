"""What the terminal shows: the command's own lines and one progress display per stage; Ray's output goes to a log.

Ray prints from the driver through several channels: Python logging (``ray``, ``ray.data``, ``ray.tune``, Optuna),
resolved to ``sys.stderr`` when a record is emitted; ``print`` to ``sys.stdout`` (Tune's trial tables, the raylet
warnings that ``listen_error_messages`` relays, "Unhandled error" tracebacks); and the core worker's C++ log written
straight to file descriptor 2. :func:`ray_output` therefore points both the Python streams and descriptors 1 and 2
at ``ray.log`` while a command runs Ray, and the command writes its own lines through :func:`out` and :func:`err`,
which keep the terminal. ``-v`` (``verbose``) leaves everything on the terminal, as Ray prints it.

A progress display (:class:`Progress`) rewrites one line in place on a terminal; into a file or a pipe it writes a
plain line at every tenth of the way and at the end, so a log of 40 years holds about ten lines, not forty.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

#: Name of the file that receives Ray's output, in the folder a command writes.
RAY_LOG = "ray.log"
#: What the scores of a ``val NSE … test NSE …`` line mean, printed once under them.
NSE_NOTE = ("  NSE: 1 is perfect, 0 no better than the observed mean, below 0 worse. val: the validation part, which "
            "chose the model; test: held-out data never used to choose, the figure to report (a large gap between "
            "them means the small validation part is a noisy guide).")

_terminal: dict[str, TextIO | None] = {"out": None, "err": None}


def out_stream() -> TextIO:
    """Where the command's results go: the terminal's stdout, also while Ray's output is routed to the log."""
    _announce_log()
    return _terminal["out"] or sys.stdout


def err_stream() -> TextIO:
    """Where progress and notes go: the terminal's stderr, also while Ray's output is routed to the log."""
    _announce_log()
    return _terminal["err"] or sys.stderr


def _announce_log() -> None:
    """The log's path, once, before the first line the command shows after Ray started (or at its end): a command
    refused meanwhile names no log, and leaves none."""
    if _routing and _routing[0].started and not _routing[0].announced and _terminal["err"] is not None:
        _routing[0].announced = True
        _terminal["err"].write(f"Ray's own output: {_routing[0].path} (-v shows it here)\n")
        _terminal["err"].flush()


def out(msg: str = "", end: str = "\n") -> None:
    """A result line (stdout)."""
    _close_open_line()
    stream = out_stream()
    stream.write(msg + end)
    stream.flush()


def err(msg: str) -> None:
    """A progress or note line (stderr)."""
    _close_open_line()
    stream = err_stream()
    stream.write(msg + "\n")
    stream.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


class Step(str):
    """A progress message that also says how far a stage is (``done`` of ``total`` in ``phase``): library code
    passes it to a plain ``progress(msg)`` callback, which may print it as it is; :class:`StageLog` turns it
    into one progress display per phase."""

    done: int
    total: int
    phase: str

    def __new__(cls, msg: str, done: int, total: int, phase: str) -> Step:
        step = super().__new__(cls, msg)
        step.done, step.total, step.phase = done, total, phase
        return step


_open_line: list[Progress] = []  # the progress display whose line is unfinished on a terminal


def _close_open_line() -> None:
    if _open_line:
        _open_line.pop().break_line()


class Progress:
    """One stage's progress ``label: done/total unit[, detail]``: on a terminal one line rewritten in place (carriage
    return); elsewhere a plain line each time another tenth of ``total`` is done, and at the end."""

    def __init__(self, label: str, total: int, unit: str = "") -> None:
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self._shown_tenth = -1
        self._last_shown: tuple[int, str] | None = None  # (done, detail) of the last line shown
        self._line_open = False

    def text(self, done: int, detail: str = "") -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"  {self.label}: {done}/{self.total}{unit}" + (f", {detail}" if detail else "")

    def update(self, done: int, detail: str = "") -> None:
        """Show ``done`` (on a terminal always; elsewhere when it reaches another tenth, or the total)."""
        if _is_tty(err_stream()):
            self._rewrite(done, detail)
            if done >= self.total:
                self.break_line()
            return
        tenth = 10 if self.total == 0 else min(10, done * 10 // self.total)
        if tenth > self._shown_tenth or done >= self.total:
            self._shown_tenth = tenth
            self._write_line(done, detail)

    def finish(self, done: int, detail: str = "") -> None:
        """The last state, shown whatever tenth it falls in (a run stopped early ends below its total)."""
        if _is_tty(err_stream()):
            if self._last_shown != (done, detail) or self._line_open:
                self._rewrite(done, detail)
            self.break_line()
        elif self._last_shown != (done, detail):
            self._shown_tenth = 10
            self._write_line(done, detail)

    def _rewrite(self, done: int, detail: str) -> None:
        stream = err_stream()
        if _open_line and _open_line[-1] is not self:
            _close_open_line()
        stream.write("\r" + self.text(done, detail) + "\x1b[K")
        stream.flush()
        self._line_open, self._last_shown = True, (done, detail)
        if self not in _open_line:
            _open_line.append(self)

    def _write_line(self, done: int, detail: str) -> None:
        _close_open_line()
        stream = err_stream()
        stream.write(self.text(done, detail) + "\n")
        stream.flush()
        self._last_shown = (done, detail)

    def break_line(self) -> None:
        """End the line rewritten in place (before another line is printed)."""
        if self._line_open:
            err_stream().write("\n")
            err_stream().flush()
            self._line_open = False
        if self in _open_line:
            _open_line.remove(self)


class StageLog:
    """A ``progress(msg)`` callback for library code: each :class:`Step` phase becomes one progress display, any
    other message a plain line on stderr."""

    def __init__(self, indent: str = "  ") -> None:
        self.indent = indent
        self._phases: dict[str, Progress] = {}

    def __call__(self, msg: str) -> None:
        if isinstance(msg, Step):
            bar = self._phases.get(msg.phase)
            if bar is None or bar.total != msg.total:
                bar = self._phases[msg.phase] = Progress(msg.phase, msg.total)
            bar.update(msg.done, str(msg))
        else:
            err(f"{self.indent}{msg}")


def _terminal_copy(stream: TextIO, fd: int) -> tuple[TextIO, bool]:
    """A stream to what ``stream`` writes to now, that stays there when descriptor ``fd`` is pointed elsewhere: a
    new file object on a duplicate of its descriptor, or ``stream`` itself when it has none (pytest's capsys)."""
    try:
        own_fd = stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return stream, False
    if own_fd != fd:
        return stream, False
    copy = open(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",  # noqa: SIM115
                errors="backslashreplace", closefd=True)
    return copy, True


class _Routing:
    """The log a command asked for (:func:`ray_output`) and, once :func:`route_ray_output` started it, what to
    restore."""

    def __init__(self, path: Path, verbose: bool) -> None:
        self.path = path
        self.verbose = verbose
        self.started = False
        self.announced = False
        self.new_file = not path.exists()
        self.made_dirs: list[Path] = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
        self.ray_was_up = False
        self.log: TextIO | None = None
        self.saved_fds: dict[int, int] = {}
        self.saved_streams: tuple[TextIO, TextIO] | None = None
        self.own_copies: list[TextIO] = []


_routing: list[_Routing] = []


@contextlib.contextmanager
def ray_output(log_path: str | os.PathLike, verbose: bool = False) -> Iterator[None]:
    """Meanwhile, once Ray starts (:func:`route_ray_output`, called by ``ensure_ray``), Ray's output, and anything
    else written to stdout/stderr other than :func:`out`/:func:`err`, goes to ``log_path``, appended; its path is
    printed once (:func:`_announce_log`). Nothing is routed with ``verbose``; an inner ``ray_output`` keeps the
    outer one's log (one log per command: ``xmw demo`` runs its stages' commands inside its own).

    Nothing is created before Ray starts, so a command refused for bad input leaves no log; a new log that a
    refusal after Ray's start would leave behind, before the command showed anything, is removed unnamed. A Ray
    instance started meanwhile is shut down before the block ends, its last words in the log: the raylet's later
    warnings would reach the terminal."""
    if _routing:
        yield
        return
    routing = _Routing(Path(log_path).resolve(), verbose)
    _routing.append(routing)
    refused = False
    try:
        yield
    except Exception as exc:
        from xmw_ray.errors import XmwInputError

        refused = isinstance(exc, XmwInputError)
        raise
    finally:
        try:
            if routing.started:
                _stop_routing(routing, drop_log=refused)
        finally:
            _routing.clear()


def route_ray_output() -> Path | None:
    """Start routing to the log of the :func:`ray_output` in force, if any and not yet started; returns the log's
    path while routing. Called just before Ray starts, so that its start-up lines are in the log too."""
    if not _routing or _routing[0].verbose:
        return None
    r = _routing[0]
    if r.started:
        return r.path
    r.path.parent.mkdir(parents=True, exist_ok=True)
    r.ray_was_up = _ray_initialized()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    term_out, own_out = _terminal_copy(sys.stdout, 1)
    term_err, own_err = _terminal_copy(sys.stderr, 2)
    r.own_copies = [s for s, own in ((term_out, own_out), (term_err, own_err)) if own]
    r.log = open(r.path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    r.saved_fds = {fd: os.dup(fd) for fd in (1, 2)}
    r.saved_streams = (sys.stdout, sys.stderr)
    _terminal["out"], _terminal["err"] = term_out, term_err
    for fd in (1, 2):
        os.dup2(r.log.fileno(), fd)
    sys.stdout = sys.stderr = r.log
    r.started = True
    return r.path


def in_command() -> bool:
    """Whether a command's :func:`ray_output` block is in force in this process: its driver, whose terminal the
    progress displays are for (a Tune trial's process has none)."""
    return bool(_routing)


def routed_log() -> Path | None:
    """The log that receives Ray's output now, or None."""
    return _routing[0].path if _routing and _routing[0].started else None


def _stop_routing(r: _Routing, drop_log: bool) -> None:
    drop_log = drop_log and not r.announced
    if not drop_log:
        _announce_log()
    try:
        if not r.ray_was_up and _ray_initialized():
            import ray

            ray.shutdown()
    finally:
        _close_open_line()
        assert r.log is not None and r.saved_streams is not None
        r.log.flush()
        sys.stdout, sys.stderr = r.saved_streams
        for fd, saved in r.saved_fds.items():
            os.dup2(saved, fd)
            os.close(saved)
        r.log.close()
        for stream in (_terminal["out"], _terminal["err"]):
            if stream is not None:
                stream.flush()
        for stream in r.own_copies:
            stream.close()
        _terminal["out"] = _terminal["err"] = None
        if drop_log and r.new_file:
            r.path.unlink(missing_ok=True)
            for d in r.made_dirs:  # innermost first
                with contextlib.suppress(OSError):
                    d.rmdir()


def _ray_initialized() -> bool:
    """Whether this process is connected to Ray (without importing Ray when it is not loaded)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())

