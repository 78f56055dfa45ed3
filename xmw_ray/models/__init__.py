"""The model zoo: every architecture registers itself in ``MODELS`` on import of this package."""

from xmw_ray.models import (  # noqa: F401  (registers)
    ealstm,
    ensemble,
    itransformer,
    lstm,
    pyraformer,
    residual,
    tcn,
    transformer,
)
from xmw_ray.models.base import NormDict, XmwModel
from xmw_ray.models.checkpoint import load_model
from xmw_ray.models.ensemble import EnsembleModel, ensemble_from_models
from xmw_ray.models.registry import MODELS, build_model, model_class, register

__all__ = [
    "MODELS",
    "EnsembleModel",
    "NormDict",
    "XmwModel",
    "build_model",
    "ensemble_from_models",
    "load_model",
    "model_class",
    "register",
]
