"""Checkpoint directories: the unwrapped model (with its normalisation buffers), the resolved config, the
optimiser state for resuming, and the epoch's metrics. Self-contained: inference needs nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from xmw_ray.errors import XmwInputError
from xmw_ray.models import load_model

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under a DDP wrapper (``prepare_model`` wraps whenever world size > 1, also on CPU)."""
    return getattr(model, "module", model)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_checkpoint(directory: str | os.PathLike, model: torch.nn.Module, config: dict[str, Any],
                     metrics: dict[str, Any], train_state: dict[str, Any] | None = None) -> Path:
    """Write one checkpoint directory (every file written aside and renamed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    unwrap(model).save_checkpoint(d / MODEL_FILE)
    if train_state is not None:
        _atomic_torch_save(train_state, d / STATE_FILE)
    for name, obj in ((CONFIG_FILE, config), (METRICS_FILE, metrics)):
        tmp = d / (name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=1, default=str))
        os.replace(tmp, d / name)
    return d


def load_checkpoint_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model of a checkpoint directory (``weights_only=True``: no code is unpickled)."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise XmwInputError(f"{directory}: not a checkpoint ({MODEL_FILE} missing)")
    model = load_model(path, map_location=map_location)
    model.eval()
    return model


def load_train_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def load_config_json(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise XmwInputError(f"{directory}: not a checkpoint ({CONFIG_FILE} missing)")
    return json.loads(path.read_text())
