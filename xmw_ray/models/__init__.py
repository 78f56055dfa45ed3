"""The model zoo: every architecture registers itself in ``MODELS`` on import of this package."""

from xmw_ray.models import ealstm, itransformer, lstm, pyraformer, residual, tcn, transformer  # noqa: F401  (registers)
from xmw_ray.models.base import NormDict, XmwModel
from xmw_ray.models.registry import MODELS, build_model, load_model, model_class, register

__all__ = ["MODELS", "NormDict", "XmwModel", "build_model", "load_model", "model_class", "register"]
