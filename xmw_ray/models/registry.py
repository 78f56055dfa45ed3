"""One registry of model architectures: name → class and a builder (checkpoints: ``checkpoint.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

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
