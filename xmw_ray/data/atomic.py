"""Write aside, rename at the end: a crash or bad input never leaves a half-written store or file.

Local paths are written to a temporary sibling and renamed (``directory_aside``); object-store URLs are written
to a local temporary folder and uploaded with a commit object last (``upload_aside``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from xmw_ray.errors import XmwInputError


@contextmanager
def directory_aside(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; on success it replaces ``out``, on failure it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def refuse_foreign_objects(url: str, replaceable: Callable[[str], bool]) -> list[str]:
    """The keys (relative to ``url``) of the objects already under ``url``; ``XmwInputError`` when one of them is
    not ``replaceable``: replacing a store there deletes the prefix, and must never take other data with it."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    old = [key[len(root) + 1:] for key in fs.find(root) if key.startswith(root + "/")]
    foreign = [key for key in old if not replaceable(key)]
    if foreign:
        raise XmwInputError(f"{url}: holds {foreign[0]!r}, which is not part of what would be written there; "
                            "choose another --out or remove it")
    return old


@contextmanager
def upload_aside(url: str, commit_file: str, replaceable: Callable[[str], bool]) -> Iterator[Path]:
    """Yield a local temporary folder to fill; on success publish it at ``url`` (an fsspec URL), ``commit_file`` last.

    Object stores (S3, GCS) have no directory rename, so the commit point is one object: readers must refuse a
    store without ``commit_file``. Publishing deletes the old ``commit_file`` first (from then on readers see no
    store, never a mix of old and new objects), then the old objects, uploads every other file, and uploads
    ``commit_file`` last; a single PUT is atomic, so it is never seen half written. A failure before the commit
    leaves no ``commit_file`` and a rerun replaces what it left. Objects already under ``url`` for which
    ``replaceable(relative key)`` is false are never deleted: the upload is refused with ``XmwInputError``.
    On failure inside the block nothing is uploaded. The local folder is removed in every case.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    tmp = Path(tempfile.mkdtemp(prefix="xmw-upload-"))
    try:
        yield tmp
        old = refuse_foreign_objects(url, replaceable)
        if commit_file in old:
            fs.rm_file(f"{root}/{commit_file}")
        rest = [f"{root}/{key}" for key in old if key != commit_file]
        if rest:
            fs.rm(rest)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        if commit_file not in files:
            raise FileNotFoundError(f"{tmp / commit_file}: the commit file was not written")
        for key in [k for k in files if k != commit_file] + [commit_file]:
            fs.put_file(str(tmp / key), f"{root}/{key}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
