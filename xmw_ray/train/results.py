"""One result row for every table of scores: a transfer run (``results.jsonl``, ``results.csv``), a group of
them over seeds (``summary.csv``), a search trial (``leaderboard.csv``), and the report that shows them all. The
rows' CSV and JSON-lines read and write live here, so each column is named once and the report reads these files,
never Markdown.

Test metrics carry the names of ``train/metrics.py`` (``METRIC_KEYS``); in a file each is the column
``test_<name>`` (and ``test_<name>_std``, the spread over seeds, in a summary), beside ``val_nse``, so a file says
which split a score is on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmw_ray.errors import XmwInputError, reading
from xmw_ray.storage import write_text_atomic
from xmw_ray.train.metrics import METRIC_KEYS

TEST_PREFIX, STD_SUFFIX = "test_", "_std"


def metric_column(metric: str) -> str:
    """The file column of a test metric (``nse`` → ``test_nse``)."""
    return f"{TEST_PREFIX}{metric}"


def spread_column(metric: str) -> str:
    """The file column of a test metric's spread over seeds (``nse`` → ``test_nse_std``)."""
    return f"{metric_column(metric)}{STD_SUFFIX}"


@dataclass
class ResultRow:
    """What ran, how it scored, and where its checkpoint is. A transfer run fills ``key``, ``setting``,
    ``fraction`` and ``seed``; a summary row is a group of runs over ``seeds`` (``test`` their mean, ``test_std``
    their spread); a search trial fills ``rank``, ``trial``, ``status``, its epochs and hyper-parameters. ``None``
    is "not measured" (an empty CSV cell); NaN is "measured, undefined" (e.g. the trees' validation NSE)."""

    model: str = ""
    strategy: str = ""
    key: str = ""
    setting: str = ""
    fraction: float | None = None
    seed: int | None = None
    seeds: int | None = None
    rank: int | None = None
    trial: int | None = None
    trial_id: str = ""
    status: str = ""
    epochs: int | None = None
    best_epoch: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    params: str = ""  # hyper-parameters as JSON text
    val_nse: float | None = None
    val_loss: float | None = None
    test: dict[str, float] = field(default_factory=dict)  # METRIC_KEYS → value
    test_std: dict[str, float] = field(default_factory=dict)
    test_median_nse: float | None = None  # the median over towers of their own NSE
    test_error: str = ""  # why the checkpoint could not be scored on the test split
    checkpoint: str = ""

    def value(self, column: str) -> Any:
        """The value under a file column (a field, ``test_<metric>`` or ``test_<metric>_std``)."""
        metric, spread = _metric_of(column)
        if metric is not None:
            return (self.test_std if spread else self.test).get(metric)
        return getattr(self, column)

    def record(self, columns: Sequence[str]) -> dict[str, Any]:
        """The row as ``{column: value}`` for a file of these columns."""
        return {c: self.value(c) for c in columns}

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str = "row") -> ResultRow:
        """A row from a CSV or JSON record: strings are parsed, unknown columns ignored, and the names files
        written before this module used (``nse`` for ``test_nse``, ``nse_mean``/``nse_std`` in a summary) read."""
        row = cls()
        for column, raw in record.items():
            metric, spread = _metric_of(column)
            if metric is None:
                metric, spread = _legacy_metric(column)
            try:
                if metric is not None:
                    value = _parse(raw, int if metric == "n" else float)
                    if value is not None:
                        (row.test_std if spread else row.test)[metric] = value
                elif column in _KINDS:
                    kind = _KINDS[column]
                    value = _parse(raw, kind)
                    setattr(row, column, ("" if value is None else value) if kind is str else value)
            except ValueError:
                raise XmwInputError(f"{where}: column {column}: not a number: {raw!r}") from None
        return row


_INT_FIELDS = ("seed", "seeds", "rank", "trial", "epochs", "best_epoch")
_FLOAT_FIELDS = ("fraction", "lr", "weight_decay", "val_nse", "val_loss", "test_median_nse")
_KINDS: dict[str, type] = {**dict.fromkeys(_INT_FIELDS, int), **dict.fromkeys(_FLOAT_FIELDS, float),
                           **dict.fromkeys(("model", "strategy", "key", "setting", "trial_id", "status", "params",
                                            "test_error", "checkpoint"), str)}


def _metric_of(column: str) -> tuple[str | None, bool]:
    if not column.startswith(TEST_PREFIX):
        return None, False
    name = column[len(TEST_PREFIX):]
    if name in METRIC_KEYS:
        return name, False
    if name.endswith(STD_SUFFIX) and name[: -len(STD_SUFFIX)] in METRIC_KEYS:
        return name[: -len(STD_SUFFIX)], True
    return None, False


def _legacy_metric(column: str) -> tuple[str | None, bool]:
    if column in METRIC_KEYS:
        return column, False
    for suffix, spread in (("_mean", False), (STD_SUFFIX, True)):
        if column.endswith(suffix) and column[: -len(suffix)] in METRIC_KEYS:
            return column[: -len(suffix)], spread
    return None, False


def _parse(raw: Any, kind: type) -> Any:
    if raw is None or raw == "":
        return None
    if kind is str:
        return str(raw)
    number = float(raw)
    if kind is int:
        return int(number) if math.isfinite(number) else None
    return number


# --- the columns of each file --------------------------------------------------------------------------------
#: ``results.jsonl`` / ``results.csv``: every scored run of a transfer experiment (a strategy's or the trees').
RUN_COLUMNS: tuple[str, ...] = ("key", "model", "setting", "fraction", "seed", "strategy",
                                *(metric_column(m) for m in METRIC_KEYS), "val_nse", "checkpoint")


def summary_columns(metrics: Iterable[str]) -> tuple[str, ...]:
    """``summary.csv``: a row per (model, setting, fraction, strategy), each metric's mean and spread over seeds."""
    return ("model", "setting", "fraction", "strategy", "seeds",
            *(c for m in metrics for c in (metric_column(m), spread_column(m))))


def leaderboard_columns(test_metrics: Iterable[str]) -> tuple[str, ...]:
    """``leaderboard.csv``: every search trial, best validation NSE first."""
    return ("rank", "trial", "trial_id", "model", "strategy", "status", "epochs", "best_epoch", "val_nse", "val_loss",
            *(metric_column(m) for m in test_metrics), "test_median_nse", "lr", "weight_decay", "params", "checkpoint",
            "test_error")


# --- reading and writing ---------------------------------------------------------------------------------------
def markdown_table(head: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    """The lines of one Markdown table (a ``|`` inside a cell escaped), as the summary and the leaderboard write it."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]


def _cell(value: Any) -> Any:
    return "" if value is None else value


def to_csv(rows: Iterable[ResultRow], columns: Sequence[str]) -> str:
    """The rows as CSV text with a header (a missing value is an empty cell)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.value(c)) for c in columns])
    return buf.getvalue()


def write_csv(rows: Iterable[ResultRow], columns: Sequence[str], path: Path) -> Path:
    """Write the rows as one CSV file, atomically (a reader sees the old file or the new, whole)."""
    write_text_atomic(path, to_csv(rows, columns))
    return path


def read_csv(path: Path) -> list[ResultRow]:
    """Every row of a CSV file written by :func:`write_csv` (or by hand with some of its columns)."""
    with reading(path), Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        names = reader.fieldnames or []
        if not any(c in _KINDS or _metric_of(c)[0] or _legacy_metric(c)[0] for c in names):
            raise XmwInputError(f"{path}: no column of an xmw results table (it has {', '.join(names) or 'none'})")
        return [ResultRow.from_record(r, f"{path}:{i}") for i, r in enumerate(reader, start=2)]


def append_jsonl(path: Path, row: ResultRow, columns: Sequence[str] = RUN_COLUMNS) -> None:
    """Append one row as a JSON line and sync it to disk, so a crash after a run never loses its score. A last
    line an interrupted append left unfinished (no newline; ``read_jsonl`` skips it) is cut off first, so the new
    row starts a line of its own."""
    with Path(path).open("a+b") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        if end:
            fh.seek(max(0, end - 65536))
            tail = fh.read()
            if not tail.endswith(b"\n"):  # keep up to the last newline (none: the whole window goes)
                fh.truncate(end - len(tail) + tail.rfind(b"\n") + 1)
        fh.write((json.dumps(row.record(columns), default=str) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[ResultRow]:
    """Every row of a JSON-lines file; none when the file does not exist yet. An unfinished last line (no newline:
    an append cut short by a full disk or a kill) is skipped, its combination runs again; any other line that is
    not JSON is refused naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    rows = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise XmwInputError(f"{path}:{i}: not a JSON line ({exc.msg}); remove that line to run its combination "
                                "again") from None
        rows.append(ResultRow.from_record(record, f"{path}:{i}"))
    return rows
