"""The checkpoint format, in one place that training, transfer, tuning and inference all read and write through
(inference needs no training code to load a model). Checkpoint directories: the unwrapped model (with its normalisation buffers), the resolved config, the
optimiser state for resuming, and the epoch's metrics. Self-contained: inference needs nothing else.

The model file (``model.pt``, ``save_model`` / ``load_model``) is ``{"format", "config", "state_dict"[, "features"]
[, "extra"]}`` of plain values and tensors, read with ``torch.load(weights_only=True)``: run storage is shared, so a
checkpoint must never be able to run code when it is read.

An ensemble checkpoint (``write_ensemble_checkpoint``) is the same directory holding an ``ensemble`` model built
from trained member checkpoints, so evaluation and inference load it like any other."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from xmw_ray.data.features import FeatureSet
from xmw_ray.errors import XmwInputError
from xmw_ray.models.base import XmwModel
from xmw_ray.models.ensemble import ensemble_from_models
from xmw_ray.models.registry import build_model
from xmw_ray.storage import (
    directory_aside,
    file_aside,
    is_url,
    publish_dir,
    published_dir,
    refuse_foreign_local,
    refuse_foreign_objects,
    write_text_atomic,
)

#: Version of the model file's payload (``save_model``).
CHECKPOINT_FORMAT = 1
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
#: The folder a run, a transfer experiment and a search publish their best checkpoint to.
BEST_DIR = "best"
#: Every file a checkpoint folder holds: what publishing a ``best`` folder may replace.
CHECKPOINT_FILES = frozenset({MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE})
#: The ``config.json`` key listing an ensemble checkpoint's member directories.
ENSEMBLE_MEMBERS_KEY = "ensemble_members"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under a DDP wrapper (``prepare_model`` wraps whenever world size > 1, also on CPU)."""
    return getattr(model, "module", model)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with file_aside(path) as tmp:
        torch.save(obj, tmp)


def save_model(model: XmwModel, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s file: its config (what ``build_model`` needs), weights and normalisation buffers, feature
    descriptors; written aside and renamed. ``extra`` must hold only plain values and tensors so that
    ``torch.load(weights_only=True)`` can read it. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if model.features is not None:
        payload["features"] = model.features.to_record()
    if extra is not None:
        payload["extra"] = extra
    _atomic_torch_save(payload, path)
    return path


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> XmwModel:
    """Rebuild a model from ``save_model`` output (read with ``weights_only=True``: no code is unpickled)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise XmwInputError(f"{path}: not a readable model checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise XmwInputError(f"{path}: not a model checkpoint (needs 'config' and 'state_dict')")
    model = build_model(**ckpt["config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise XmwInputError(f"{path}: weights do not match its config: {first}") from None
    if ckpt.get("features") is not None:  # absent in checkpoints written before descriptors existed
        model.features = FeatureSet.from_record(ckpt["features"], str(path))
    return model.to(map_location)


#: The way out a refused ``best`` names: it lies in a run folder named by the config.
OTHER_RUN = "use another run.name, or move that file out"


def refuse_foreign_checkpoint(dest: str | os.PathLike) -> None:
    """Before any work: refuse (one line) a ``dest`` (a run's ``best``, a local folder or a URL) holding anything
    but a checkpoint's files, which publishing a checkpoint there would delete."""
    if is_url(dest):
        refuse_foreign_objects(str(dest), CHECKPOINT_FILES.__contains__, OTHER_RUN)
    else:
        refuse_foreign_local(dest, CHECKPOINT_FILES.__contains__, "checkpoint", OTHER_RUN)


def publish_checkpoint(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy the checkpoint folder ``src`` to the local ``dest`` in one atomic step (``storage.publish_dir``),
    replacing an earlier checkpoint there, never anything else."""
    return publish_dir(src, dest, CHECKPOINT_FILES.__contains__, "checkpoint", OTHER_RUN)


def write_checkpoint(directory: str | os.PathLike, model: torch.nn.Module, config: dict[str, Any],
                     metrics: dict[str, Any], train_state: dict[str, Any] | None = None) -> Path:
    """Write one checkpoint directory (every file written aside and renamed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_model(unwrap(model), d / MODEL_FILE)
    if train_state is not None:
        _atomic_torch_save(train_state, d / STATE_FILE)
    for name, obj in ((CONFIG_FILE, config), (METRICS_FILE, metrics)):
        write_text_atomic(d / name, json.dumps(obj, indent=1, default=str))
    return d


def load_checkpoint_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model of a checkpoint directory (``weights_only=True``: no code is unpickled)."""
    path = published_dir(directory) / MODEL_FILE
    if not path.is_file():
        raise XmwInputError(f"{directory}: not a checkpoint ({MODEL_FILE} missing)")
    model = load_model(path, map_location=map_location)
    model.eval()
    return model


def load_model_state(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a checkpoint directory's model (weights and normalisation buffers), without building
    the model: for loading into one already built (resuming, transfer)."""
    path = published_dir(directory) / MODEL_FILE
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def load_train_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def load_config_json(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise XmwInputError(f"{directory}: not a checkpoint ({CONFIG_FILE} missing)")
    return parse_config_json(path.read_bytes(), path)


def parse_config_json(raw: bytes, where: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``config.json``; one line naming ``where`` when it is not a JSON object (cut short, edited)."""
    try:
        config = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both
        raise XmwInputError(f"{where}: not a checkpoint's config ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise XmwInputError(f"{where}: not a checkpoint's config (not a JSON object)")
    return config


def write_ensemble_checkpoint(member_dirs: list[str | os.PathLike], out_dir: str | os.PathLike,
                              metrics: dict[str, Any]) -> Path:
    """Average the models of ``member_dirs`` into one checkpoint directory ``out_dir``: ``model.pt`` (an
    ``ensemble`` model), the first member's ``config.json`` (its ``model`` section now the ensemble's, plus the
    member directories) and ``metrics``. Built in a sibling temporary directory and renamed into place; re-running
    replaces it. Members must share one data split, else "evaluate --split test" would be ambiguous."""
    if not member_dirs:
        raise XmwInputError("ensemble: no member checkpoint directories given")
    models = [load_checkpoint_model(d) for d in member_dirs]
    configs = [load_config_json(d) for d in member_dirs]
    split = configs[0].get("data", {}).get("split")
    for d, cfg in zip(member_dirs[1:], configs[1:], strict=True):
        if cfg.get("data", {}).get("split") != split:
            raise XmwInputError(f"{d}: its data split differs from {member_dirs[0]}'s (ensemble members share one)")
    for d, model in zip(member_dirs[1:], models[1:], strict=True):
        if model.features != models[0].features:
            raise XmwInputError(f"{d}: its input features differ from {member_dirs[0]}'s (ensemble members are "
                                "trained on stores prepared alike)")
    ensemble = ensemble_from_models(models)
    ensemble.features = models[0].features
    config = {**configs[0], "model": {"name": ensemble.registry_name, "params": ensemble.hp.model_dump()},
              ENSEMBLE_MEMBERS_KEY: [str(d) for d in member_dirs]}
    out = Path(out_dir)
    with directory_aside(out, CHECKPOINT_FILES.__contains__, "checkpoint", OTHER_RUN) as tmp:
        write_checkpoint(tmp, ensemble, config, metrics)
    return out
