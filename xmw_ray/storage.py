"""The one storage module: URL detection, run paths, and writes that a crash or bad input never leaves half done.

Every write to a file or folder the project publishes goes through here (a test greps the package for renames and
URL checks elsewhere). Local paths are written to a temporary sibling and renamed (``directory_aside``,
``file_aside``); object-store URLs are written to a local temporary folder and uploaded with a commit object last
(``upload_aside``), single files in one PUT (``write_bytes_atomic``).

A local target is checked before anything is written (``refuse_foreign_local``): a file, or a folder holding
anything the command would not write itself, is refused, never deleted. Writers of the same target take a lock on
its parent folder for the short commit (swap the new one in), and each run first removes
the temporary siblings that dead processes on this host left (``sweep_stale_asides``).

Replacing a folder is one atomic step on Linux: the new folder and the old one are swapped by
``renameat2(RENAME_EXCHANGE)``, so ``out`` always holds the old or the new content. Where the kernel or the file
system lacks it, the old folder is renamed aside and the new one renamed in; a crash between the two leaves no
``out`` but the old one aside, and ``recover_aside`` (run by the next write of ``out`` and by ``published_dir``
readers) renames it back.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xmw_ray.errors import XmwInputError

_HOST = socket.gethostname()
#: The environment variable naming the local cache that mirrors runs stored at a URL (default ``~/.cache/xmw``).
CACHE_ENV = "XMW_CACHE_DIR"
_URL_SEP = "://"


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an object store or other fsspec URL (``s3://…``, ``gs://…``) rather than a local path."""
    return _URL_SEP in str(path)


def url_scheme(path: str | os.PathLike) -> str:
    """The lower-case scheme of a URL (``gs``), or ``""`` for a local path."""
    return str(path).split(_URL_SEP, 1)[0].lower() if is_url(path) else ""


def join_path(base: str | os.PathLike, *parts: str) -> str:
    """``base/parts…`` for a URL (``Path`` would fold its ``//``) or a local path (kept relative if it is)."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return str(Path(base).joinpath(*parts))


def run_path(output_dir: str, *parts: str) -> str:
    """``<output_dir>/<parts…>`` where a run's files live: joined as a URL for object storage, else the absolute
    local path (Ray and Tune change the working directory, so a relative path would name another folder)."""
    if is_url(output_dir):
        return join_path(output_dir, *parts)
    return str(Path(output_dir).resolve().joinpath(*parts))


def local_run_dir(output_dir: str, name: str) -> Path:
    """The local folder of run ``name``: under ``output_dir``, or for a URL ``output_dir`` its local mirror
    (``local_mirror``), where the run's ``best`` and history are written before they are uploaded."""
    return local_mirror(output_dir) / name if is_url(output_dir) else Path(run_path(output_dir, name))


def cache_root() -> Path:
    """This user's own folder for what the commands keep locally: ``$XMW_CACHE_DIR``, else ``~/.cache/xmw``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "xmw")


def local_mirror(url: str) -> Path:
    """The local folder that mirrors ``url`` (a run stored in object storage is written here first, then
    uploaded): ``$XMW_CACHE_DIR/runs/<scheme>/<bucket>/<path>``."""
    return cache_root() / "runs" / url.replace(_URL_SEP, "/", 1).rstrip("/")


#: What follows ``.NAME.tmp-`` / ``.NAME.old-`` in an aside's name: the writer's pid, then ``@host.token`` (asides
#: written before they carried it have the pid alone).
_ASIDE_TAIL = re.compile(r"(?P<pid>\d+)(?:@(?P<host>.+)\.[0-9a-f]{8})?")


def _aside(out: Path, role: str) -> Path:
    """A unique sibling of ``out`` named after this process and host (``.NAME.tmp-PID@HOST.TOKEN``): threads of
    one process get their own, and ``sweep_stale_asides`` can tell whose it is."""
    aside = out.with_name(f".{out.name}.{role}-{os.getpid()}@{_HOST}.{secrets.token_hex(4)}")
    limit = os.pathconf(out.parent, "PC_NAME_MAX") if out.parent.exists() else 255
    if len(os.fsencode(aside.name)) > limit:
        raise OSError(errno.ENAMETOOLONG, f"name too long to write aside (a sibling adds "
                                          f"{len(aside.name) - len(out.name)} characters)", str(out))
    return aside


def aside_target(name: str) -> str | None:
    """The name of the file or folder whose aside (``.NAME.tmp-…`` / ``.NAME.old-…``) ``name`` is, else None: a
    folder's own writers may leave such siblings, which are not foreign data."""
    m = re.fullmatch(r"\.(?P<target>.+)\.(?:tmp|old)-(?P<tail>.+)", name)
    return m["target"] if m is not None and _ASIDE_TAIL.fullmatch(m["tail"]) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove(path: Path) -> None:
    """Remove a file, link or folder; a concurrent remover that got there first is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def sweep_stale_asides(out: str | Path) -> list[Path]:
    """Remove the ``.NAME.tmp-PID…`` / ``.NAME.old-PID…`` siblings of ``out`` whose process is gone; returns them.

    A killed writer cannot clean up after itself, so the next run does (an old ``out`` that a crash left aside
    with no ``out`` is renamed back first, ``recover_aside``). Only asides of this host are judged (a pid
    means nothing on another machine sharing the folder); those of live processes, and of this process (another
    thread may be writing), are kept.
    """
    out = Path(out)
    swept: list[Path] = []
    if not out.parent.is_dir():
        return swept
    recover_aside(out)  # an old ``out`` left aside by a killed writer is its only copy: put it back, never delete it
    for role in ("tmp", "old"):
        prefix = f".{out.name}.{role}-"
        for path in out.parent.glob(f"{glob.escape(prefix)}*"):
            m = _ASIDE_TAIL.fullmatch(path.name[len(prefix):])
            if m is None or (m["host"] is not None and m["host"] != _HOST):
                continue
            pid = int(m["pid"])
            if pid == os.getpid() or _pid_alive(pid):
                continue
            _remove(path)
            swept.append(path)
    return swept


def _refuse_unwritable_parent(out: Path, instead: str) -> None:
    """Fail before any work when ``out`` cannot be created: its nearest existing ancestor is a file, or a folder
    this process may not write into (``OSError`` naming it, which the CLI reports in one line)."""
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise XmwInputError(f"{ancestor}: is a file, not a folder to write {out.name} into; {instead}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(ancestor).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(ancestor))


#: The way out that a refusal names: outputs given on the command line.
CHOOSE_OUT = "choose another --out or remove it"


def refuse_foreign_local(out: str | Path, replaceable: Callable[[str], bool], what: str,
                         instead: str = CHOOSE_OUT) -> bool:
    """Whether ``out`` (a local path) holds something to replace; ``XmwInputError`` when replacing it could lose
    data: ``out`` is a file, or a folder holding a file for which ``replaceable(relative path)`` is false (another
    kind of store, a user's file). The local twin of ``refuse_foreign_objects``; ``instead`` ends the line."""
    out = Path(out)
    _refuse_unwritable_parent(out, instead)
    if out.is_symlink() and not out.exists():
        raise XmwInputError(f"{out}: is a broken link, not a {what}; {instead}")
    if not out.exists():
        return False
    if not out.is_dir():
        raise XmwInputError(f"{out}: is a file, not a {what}; {instead}")
    foreign = next((key for key in _held_files(out) if not replaceable(key)), None)  # the first: --out ~ is quick
    if foreign is not None:
        raise XmwInputError(f"{out}: holds {foreign!r}, which is not part of a {what}; {instead}")
    return next(_held_entries(out), None) is not None


def _held_entries(folder: Path) -> Iterator[str]:
    """Every entry under ``folder`` (relative, ``/``-separated), files and links before the folders holding
    them. Folder kinds come from the listing itself, so an entry that a concurrent writer moves away meanwhile
    is skipped rather than mistaken for a file."""
    for parent, dirs, files in os.walk(folder):
        rel = Path(parent).relative_to(folder)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(parent, d))]:
            yield (rel / name).as_posix()
        yield from ((rel / d).as_posix() + "/" for d in dirs)


def _held_files(folder: Path) -> Iterator[str]:
    """The files and links under ``folder``: what replacing it would delete (empty folders aside)."""
    return (key for key in _held_entries(folder) if not key.endswith("/"))


@contextmanager
def _parent_lock(out: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``out``'s parent folder: concurrent writers commit one after the other. Nothing is
    left on disk. Where the file system has no such lock (some network mounts) the commit goes on unlocked and
    relies on ``_commit`` tolerating a concurrent winner."""
    try:
        fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


#: ``renameat2`` flag: swap two existing paths atomically (Linux ≥ 3.15, most local file systems).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap the existing paths ``a`` and ``b`` in one atomic step; False where the system cannot (then nothing
    changed and the caller falls back to two renames)."""
    if _renameat2 is None:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # the kernel or this file system has no exchange
    raise OSError(code, os.strerror(code), str(b))


def _commit(tmp: Path, out: Path, check: Callable[[], object]) -> None:
    """Put ``tmp`` at ``out``. An existing ``out`` is swapped with ``tmp`` atomically (``exchange``) and the old
    content, now at ``tmp``, removed; without exchange it is moved aside, ``tmp`` renamed in, the old one removed
    (``recover_aside`` undoes a crash in between). A writer that put its own ``out`` in between (unlocked file
    systems) is replaced in turn, after ``check`` again."""
    for _ in range(8):
        check()
        if out.exists() or out.is_symlink():
            try:
                swapped = exchange(tmp, out)
            except FileNotFoundError:  # a concurrent writer moved ``out`` away meanwhile: try again
                continue
            if swapped:
                _remove(tmp)
                return
        old = _aside(out, "old")
        try:
            os.rename(out, old)
        except FileNotFoundError:
            old = None
        try:
            os.rename(tmp, out)
            committed = True
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                if old is not None:  # not a concurrent winner: put the old one back rather than lose it
                    os.rename(old, out)
                raise
            committed = False  # another writer put its own ``out`` in between: move that aside in turn
        if old is not None:
            _remove(old)
        if committed:
            return
    raise OSError(errno.EBUSY, "other writers keep replacing it", str(out))


def recover_aside(out: str | Path) -> bool:
    """Put back the old ``out`` that a writer killed between its two renames left aside (``.NAME.old-…`` of a
    dead process on this host, ``out`` missing): the newest such aside is renamed to ``out``. True if it did."""
    out = Path(out)
    if out.exists() or out.is_symlink() or not out.parent.is_dir():
        return False
    prefix = f".{out.name}.old-"
    dead = []
    for path in out.parent.glob(f"{glob.escape(prefix)}*"):
        m = _ASIDE_TAIL.fullmatch(path.name[len(prefix):])
        if m is None or (m["host"] is not None and m["host"] != _HOST):
            continue
        if int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])):
            dead.append(path)
    for path in sorted(dead, key=lambda p: p.lstat().st_mtime, reverse=True):
        try:
            os.rename(path, out)
            return True
        except FileNotFoundError:  # another process recovered or swept it first
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # someone wrote a new ``out`` meanwhile
                return False
            raise
    return False


@contextmanager
def directory_aside(out: str | Path, replaceable: Callable[[str], bool] | None = None,
                    what: str = "store", instead: str = CHOOSE_OUT) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; on success it replaces ``out``, on failure it is removed.

    With ``replaceable`` (see ``refuse_foreign_local``) an ``out`` that holds anything else is refused, before the
    block and again at the commit. Stale asides of dead writers are swept first; the commit holds the parent lock.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check = (lambda: refuse_foreign_local(out, replaceable, what, instead)) if replaceable else (lambda: None)
    check()
    sweep_stale_asides(out)
    tmp = _aside(out, "tmp")
    try:
        yield tmp
        with _parent_lock(out):
            _commit(tmp, out, check)
    except BaseException:
        _remove(tmp)
        raise


def _object_keys(url: str) -> tuple[Any, str, list[str]]:
    """(file system, root, the keys of the objects under ``url`` relative to it), listed afresh (no cached listing)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    return fs, root, [key[len(root) + 1:] for key in fs.find(root) if key.startswith(root + "/")]


def refuse_foreign_objects(url: str, replaceable: Callable[[str], bool], instead: str = CHOOSE_OUT) -> list[str]:
    """The keys (relative to ``url``) of the objects already under ``url``; ``XmwInputError`` when one of them is
    not ``replaceable``: replacing a store there deletes the prefix, and must never take other data with it."""
    _, _, old = _object_keys(url)
    foreign = [key for key in old if not replaceable(key)]
    if foreign:
        raise XmwInputError(f"{url}: holds {foreign[0]!r}, which is not part of what would be written there; "
                            f"{instead}")
    return old


def remove_objects(url: str, ours: Callable[[str], bool]) -> None:
    """Delete the objects under ``url`` that are ``ours`` (relative key): what a write that failed there left. Best
    effort: a failure here (the connection that failed the write) must not hide the write's own error."""
    try:
        fs, root, keys = _object_keys(url)
        mine = [f"{root}/{key}" for key in keys if ours(key)]
        if mine:
            fs.rm(mine)
    except Exception:  # noqa: BLE001 - the caller re-raises the write's error
        pass


@contextmanager
def upload_aside(url: str, commit_file: str, replaceable: Callable[[str], bool],
                 instead: str = CHOOSE_OUT) -> Iterator[Path]:
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
        old = refuse_foreign_objects(url, replaceable, instead)
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


@contextmanager
def file_aside(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of the local file ``path`` to write; on success it replaces ``path`` in one rename,
    on failure it is removed. For writers that take a path (``to_netcdf``, ``savefig``: give them the format, the
    aside's name has no suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_asides(path)
    tmp = _aside(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: a local file through ``file_aside``, a URL in one PUT (an
    object is never seen half written)."""
    if is_url(path):
        import fsspec

        fs, key = fsspec.core.url_to_fs(str(path))
        fs.pipe_file(key, data)
        return
    with file_aside(path) as tmp:
        tmp.write_bytes(data)


def create_file_once(path: str | Path, data: bytes, mode: int = 0o600) -> bool:
    """Create the local file ``path`` holding ``data`` unless it exists; True when this call created it. Written
    aside (with ``mode`` from its creation: a secret is never readable by others, not even for a moment), synced,
    then hard-linked into place, which fails rather than replace a file that another process made meanwhile. A
    kill leaves no file or the whole one, never an empty one."""
    path = Path(path)
    sweep_stale_asides(path)
    tmp = _aside(path, "tmp")
    try:
        _write_synced(tmp, data, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # a file system without hard links (some SMB and FUSE mounts): create it in place, exclusively; there
            # a kill between creating and writing can still leave it empty
            try:
                _write_synced(path, data, mode)
            except FileExistsError:
                return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


#: ``os.link``'s errors where the file system has no hard links.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})


def _write_synced(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (``FileExistsError`` if it exists) with ``mode`` and ``data``, synced to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def refuse_foreign_file(path: str | Path, looks_ours: Callable[[bytes], bool], what: str, flag: str) -> None:
    """Before any work: refuse (one line) an output file (local or URL) that exists and is not ``what``, judged by
    ``looks_ours`` on its first 4 KiB; a user's file is never replaced by a command's output."""
    if is_url(path):
        import fsspec

        fs, key = fsspec.core.url_to_fs(str(path))
        try:
            with fs.open(key, "rb") as fh:
                head = fh.read(4096)
        except FileNotFoundError:
            return
    else:
        local = Path(path)
        if not local.exists():
            return
        if not local.is_file():
            raise XmwInputError(f"{path}: {flag} names a folder; give a file path")
        with open(local, "rb") as fh:
            head = fh.read(4096)
    if not looks_ours(head):
        raise XmwInputError(f"{path}: exists and is not {what}; choose another {flag} or remove it")


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a URL: one PUT); UTF-8 whatever the
    machine's locale, as every reader of our files expects."""
    if is_url(path):
        write_bytes_atomic(path, text.encode(encoding))
        return
    with file_aside(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def publish_dir(src: str | Path, dest: str | Path, replaceable: Callable[[str], bool], what: str,
                instead: str = CHOOSE_OUT) -> Path:
    """Copy the folder ``src`` to ``dest`` (e.g. a run's ``best``), replacing what is there in one atomic step:
    a crash at any point leaves ``dest`` holding the old or the new content, never neither (see the module).
    Only ``src``'s ``replaceable`` files are copied (not, say, the temporary file of a write killed in a run's
    epoch folder), so the next publish replaces all of them; a ``dest`` holding a file that is not
    ``replaceable`` (a user's notes in a run's ``best``) is refused."""
    dest, root = Path(dest), Path(src)

    def others(folder: str, names: list[str]) -> list[str]:
        rel = Path(folder).relative_to(root)
        return [n for n in names if not os.path.isdir(os.path.join(folder, n)) and not replaceable((rel / n).as_posix())]

    with directory_aside(dest, replaceable, what, instead) as tmp:
        shutil.copytree(src, tmp, ignore=others)
    return dest


def published_dir(dest: str | Path) -> Path:
    """``dest`` for reading, after putting back an old copy that a writer killed mid-publish left aside (only
    where the system has no atomic exchange; ``recover_aside``)."""
    dest = Path(dest)
    if not dest.exists():
        recover_aside(dest)
    return dest
