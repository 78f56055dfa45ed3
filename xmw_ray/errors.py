"""The one exception type for bad user input: the CLI turns it into a single line and exit status 2."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class XmwInputError(Exception):
    """Bad input (file, field, value): the message names the file or key and the problem, on one line."""


@contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """While a user's text file (a config, a CSV, a JSON record) is read: bytes that are not UTF-8 and a folder
    where the file should be become one line naming ``path``, not a traceback."""
    try:
        yield
    except UnicodeDecodeError:
        raise XmwInputError(f"{path}: not UTF-8 text ({_first_bad_byte(path)})") from None
    except IsADirectoryError:
        raise XmwInputError(f"{path}: a folder, where a file is expected") from None


def _first_bad_byte(path: str | os.PathLike) -> str:
    """Where the file stops being UTF-8, counted in the whole file: a stream's decoder (``csv`` reads through one)
    reports a position within its current chunk."""
    try:
        Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte {exc.start} cannot be decoded"
    except OSError:
        pass
    return "a byte cannot be decoded"
