"""One registry of model architectures: name → class, a builder, and checkpoint loading."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from xmw_ray.data.features import FeatureSet
from xmw_ray.errors import XmwInputError
from xmw_ray.models.base import XmwModel

if TYPE_CHECKING:
    from xmw_ray.data.normstats import NormStats

MODELS: dict[str, type[XmwModel]] = {}

M = TypeVar("M", bound=type[XmwModel])


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make ``cls`` buildable as ``build_model(name, ...)``."""

    def deco(cls: M) -> M:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {MODELS[name].__name__}")
        cls.registry_name = name
        MODELS[name] = cls
        return cls

    return deco


def model_class(name: str) -> type[XmwModel]:
    """The registered class called ``name``; an unknown name is a one-line ``XmwInputError``."""
    try:
        return MODELS[name]
    except KeyError:
        raise XmwInputError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})") from None


def build_model(
    name: str,
    n_dynamic: int,
    n_static: int,
    norm: NormStats | Mapping[str, Any] | None = None,
    **hparams: Any,
) -> XmwModel:
    """Build model ``name`` for ``n_dynamic`` daily and ``n_static`` static inputs, with optional statistics
    (a nested ``NormDict``, or the data room's ``NormStats`` / its ``to_dict()``)."""
    model = model_class(name)(n_dynamic, n_static, **hparams)
    if norm is not None:
        model.set_normalization(norm)
    return model


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> XmwModel:
    """Rebuild a model from ``XmwModel.save_checkpoint`` output (read with ``weights_only=True``)."""
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
