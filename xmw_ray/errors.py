"""The one exception type for bad user input: the CLI turns it into a single line and exit status 2."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class XmwInputError(Exception):
    """Bad input (file, field, value): the message names the file or key and the problem, on one line."""


@contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """While a user's text file (a config, a CSV, a JSON record) is read: bytes that are not UTF-8 and a folder
    where the file should be become one line naming ``path``, not a traceback."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise XmwInputError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except IsADirectoryError:
        raise XmwInputError(f"{path}: a folder, where a file is expected") from None
