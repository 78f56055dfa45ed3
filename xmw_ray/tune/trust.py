"""Resume only searches this installation wrote: an HMAC-SHA256 signature over every file that resuming unpickles.

``Tuner.restore`` unpickles state from the run folder (Ray 2.60, read from its source): ``tuner.pkl``
(``impl/tuner_internal.py``), the newest ``experiment_state-*.json`` whose trial fields are cloudpickles
(``execution/tune_controller.py`` ``resume`` -> ``_loads_with_cloudpickle``), every root ``*.json``/``*.pkl``, which
it copies to the driver and then loads as searcher, search-generator and callback state (``searcher-state-*.pkl``,
``search_gen_state-*.json`` read with cloudpickle, ``callback-states-*.pkl``), and per-trial pickles such as
``error.pkl``. Anyone who can write to a shared run folder could plant one of them and run code on the driver, so
:func:`sign_run` records an HMAC of each such file in ``xmw-signature.json`` (itself HMAC'ed) and
:func:`verify_run` checks them all before anything is unpickled. Checkpoints (``model.pt``) are not covered: xmw
loads them with ``torch.load(weights_only=True)``, which runs no code.

The key (:func:`run_key`): ``XMW_RUN_KEY``, else the cluster's Ray auth token (``RAY_AUTH_TOKEN``, the file named
by ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), else a per-user key created once with mode 0600 at
``~/.config/xmw_ray/run.key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from xmw_ray.errors import XmwInputError
from xmw_ray.storage import create_file_once, write_bytes_atomic

if TYPE_CHECKING:
    import pyarrow.fs

logger = logging.getLogger(__name__)

SIGNATURE_FILE = "xmw-signature.json"
KEY_ENV = "XMW_RUN_KEY"
#: Where the per-user key lives when neither ``XMW_RUN_KEY`` nor a Ray auth token is set.
USER_KEY_PATH = Path("~/.config/xmw_ray/run.key")
_VERSION = 1
_DOMAIN = b"xmw-ray run signature v1"


def _read_secret_file(path: Path) -> bytes | None:
    try:
        secret = path.expanduser().read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise XmwInputError(f"{path}: cannot read the run signing key ({exc.strerror})") from None
    return secret or None


def _user_key() -> bytes:
    """The per-user key, created on first use (mode 0600: never readable by others). Created whole or not at all
    (``storage.create_file_once``): a kill while it was written left an empty key that refused every later search,
    and a second first launch at the same moment could read it empty; whoever creates it first, all read that one."""
    path = USER_KEY_PATH.expanduser()
    existing = _read_secret_file(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    create_file_once(path, (secrets.token_hex(32) + "\n").encode())
    return _read_secret_file(path) or b""


def run_key() -> bytes:
    """The secret the signatures are keyed with; the same on every node of a cluster that shares its Ray token."""
    if os.environ.get(KEY_ENV):
        secret = os.environ[KEY_ENV].encode()
    elif os.environ.get("RAY_AUTH_TOKEN"):
        secret = os.environ["RAY_AUTH_TOKEN"].strip().encode()
    else:
        token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
        secret = (_read_secret_file(Path(token_path)) if token_path else None) \
            or _read_secret_file(Path("~/.ray/auth_token")) or _user_key()
    if not secret:
        raise XmwInputError(f"{USER_KEY_PATH}: the run signing key is empty; delete it or set {KEY_ENV}")
    # a key of its own: a signature never doubles as anything the raw token authenticates
    return hmac.new(secret, _DOMAIN, hashlib.sha256).digest()


def _storage(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem Ray itself reads the run through (``run_storage``), local folders included."""
    from pyarrow.fs import LocalFileSystem

    from xmw_ray.train.runner import run_storage

    fs, fs_path = run_storage(path)
    return (fs or LocalFileSystem()), fs_path.rstrip("/")


#: The file Tune writes first, when a search is created: without it there is nothing to resume.
TUNER_FILE = "tuner.pkl"


def restore_reads(relpath: str) -> bool:
    """Whether resuming may unpickle this file: a ``*.json``/``*.pkl`` at the root, a ``*.pkl`` anywhere below."""
    if relpath == SIGNATURE_FILE:
        return False
    if "/" not in relpath:
        return relpath.endswith((".json", ".pkl"))
    return relpath.endswith(".pkl")


def _signed_files(fs: pyarrow.fs.FileSystem, root: str) -> list[str]:
    from pyarrow.fs import FileSelector, FileType

    infos = fs.get_file_info(FileSelector(root, allow_not_found=True, recursive=True))
    rel = [i.path[len(root):].lstrip("/") for i in infos if i.type == FileType.File]
    return sorted(r for r in rel if restore_reads(r))


def _read(fs: pyarrow.fs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.readall()


def _file_mac(key: bytes, relpath: str, data: bytes) -> str:
    # the name is part of the message: a signed file cannot be moved to where another is read
    return hmac.new(key, relpath.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def _manifest_mac(key: bytes, files: dict[str, str]) -> str:
    body = json.dumps({"version": _VERSION, "files": files}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def sign_run(path: str) -> int:
    """Sign every file of the run at ``path`` (folder or URL) that resuming would unpickle; returns how many.
    Call it only on a run this process wrote or verified."""
    key = run_key()
    fs, root = _storage(path)
    files = {rel: _file_mac(key, rel, _read(fs, f"{root}/{rel}")) for rel in _signed_files(fs, root)}
    doc = {"version": _VERSION, "files": files, "mac": _manifest_mac(key, files)}
    data = json.dumps(doc, indent=1, sort_keys=True).encode()
    from pyarrow.fs import LocalFileSystem

    if isinstance(fs, LocalFileSystem):  # replaced in one rename: a full disk or a kill leaves the old signature
        write_bytes_atomic(Path(root) / SIGNATURE_FILE, data)
    else:
        with fs.open_output_stream(f"{root}/{SIGNATURE_FILE}") as f:  # one whole object: never half written
            f.write(data)
    return len(files)


def refuse_planted_state(path: str) -> None:
    """Before a new search starts at ``path`` (no ``tuner.pkl``: nothing to resume), refuse a folder that already
    holds files a later resume would unpickle (``experiment_state-*.json``, ``searcher-state-*.pkl``, ...): no
    search left them (another command's run of the same name, or a planted file), and the search's signature
    would otherwise vouch for them."""
    fs, root = _storage(path)
    found = _signed_files(fs, root)
    if found and TUNER_FILE not in found:
        raise XmwInputError(f"{path.rstrip('/')}/{found[0]}: a new search's folder already holds a file a resume "
                            "would unpickle, and no search left it there (another command's run of the same name, "
                            "or someone else's file); use another run.name or remove it")


def verify_run(path: str) -> None:
    """Raise ``XmwInputError`` naming the file unless every file that resuming would unpickle carries this
    installation's signature. Reads bytes only; unpickles nothing."""
    from pyarrow.fs import FileType

    key = run_key()
    fs, root = _storage(path)
    shown = path.rstrip("/")
    sig_path = f"{root}/{SIGNATURE_FILE}"
    fresh = "; start the search afresh under another run.name"
    if fs.get_file_info(sig_path).type != FileType.File:
        raise XmwInputError(
            f"{shown}/{SIGNATURE_FILE}: missing, so the stored search cannot be trusted (written elsewhere, by an "
            f"older xmw, or interrupted before it was signed); refusing to resume it{fresh}")
    try:
        doc = json.loads(_read(fs, sig_path))
        files, mac = dict(doc["files"]), str(doc["mac"])
    except (ValueError, KeyError, TypeError):
        raise XmwInputError(f"{shown}/{SIGNATURE_FILE}: not a signature file; refusing to resume{fresh}") from None
    if doc.get("version") != _VERSION or not hmac.compare_digest(_manifest_mac(key, files), mac):
        raise XmwInputError(
            f"{shown}/{SIGNATURE_FILE}: not signed with this installation's key ({KEY_ENV}, the Ray auth token or "
            f"{USER_KEY_PATH}); refusing to resume{fresh}")
    present = _signed_files(fs, root)
    for rel in present:
        if rel not in files:
            raise XmwInputError(f"{shown}/{rel}: not covered by {SIGNATURE_FILE} (added after the search was "
                                f"signed, or the search was interrupted); refusing to resume{fresh}")
        if not hmac.compare_digest(_file_mac(key, rel, _read(fs, f"{root}/{rel}")), files[rel]):
            raise XmwInputError(f"{shown}/{rel}: changed since the search was signed; refusing to resume{fresh}")
    for rel in sorted(set(files) - set(present)):
        raise XmwInputError(f"{shown}/{rel}: listed in {SIGNATURE_FILE} but missing; refusing to resume{fresh}")


class RunSigner(tune.Callback):
    """Tune callback: re-sign the run every ``interval_s`` of the search loop (Tune has just saved its experiment
    state when ``on_step_end`` runs), so a driver killed outright leaves state that its next launch may resume.
    A signature taken while an upload is still in flight only makes that resume refuse, never trust more."""

    def __init__(self, path: str, interval_s: float = 30.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._last = time.monotonic()

    def setup(self, **info: Any) -> None:
        self._last = time.monotonic()  # a resumed search brings this object back from another process's clock

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        try:
            sign_run(self.path)
        except Exception as exc:  # storage briefly unreachable: the next interval, or the end of the search, signs
            logger.warning("signing %s failed: %s", self.path, exc)


class PlainTextErrors(tune.Callback):
    """Tune callback: a failed trial's error is read back as text (``error.txt``), never unpickled.

    When a trial fails, Tune writes its exception twice into the trial folder: ``error.txt`` and ``error.pkl``.
    Building the ``ResultGrid`` at the end of every search, new or resumed, then runs ``cloudpickle.loads`` on
    ``error.pkl`` from run storage. Someone who could write to the bucket could swap it in the meantime and run code
    on the driver, and no signature is checked at that point. Dropping the pickled file's name from the trial's
    metadata as soon as the error is recorded makes Tune fall back to the text file. Only the message is needed
    (``leaderboard`` only records whether a trial failed)."""

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _forget_pickled_error(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _forget_pickled_error(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:  # before the result grid is built: a failure on a path that called neither hook above
            _forget_pickled_error(trial)


def _forget_pickled_error(trial: Any) -> None:
    if trial.run_metadata.pickled_error_filename is not None:  # setting it invalidates Tune's cached state
        trial.run_metadata.pickled_error_filename = None
