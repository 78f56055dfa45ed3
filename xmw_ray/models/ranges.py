"""What a search may vary: the size ranges every model's search space draws from, and the space's signature.

Each model declares its own space beside its ``Params`` (``search_space`` on the class, e.g. ``recurrent_space`` in
``lstm.py``), so adding a model is one file; ``xmw_ray/tune/space.py`` only asks them. A space takes an object with
Optuna's ``suggest_categorical`` / ``suggest_int`` / ``suggest_float``, a prefix for the parameter names and the
size ranges, and returns keyword arguments of the model's ``Params``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SizeRanges:
    """Ranges of the size hyper-parameters: ``small`` for laptops and tests, ``full`` for a GPU cluster
    (it brackets X-MethaneWet's own sizes: hidden/d_model 8, 3 layers, dropout 0.2)."""

    widths: tuple[int, ...]
    max_layers: int
    max_dropout: float
    heads: tuple[int, ...]


#: The ranges a search config names with ``search.space``.
SIZES = {
    "small": SizeRanges(widths=(4, 8), max_layers=1, max_dropout=0.1, heads=(2,)),
    "full": SizeRanges(widths=(8, 16, 32, 64), max_layers=3, max_dropout=0.3, heads=(2, 4)),
}

#: ``space(trial, prefix, sizes) -> Params keyword arguments``.
ModelSpace = Callable[[Any, str, SizeRanges], dict[str, Any]]


def model_space(model: str) -> ModelSpace:
    """The search space model ``model`` declares beside its ``Params`` (``XmwModel.search_space``)."""
    from xmw_ray.models import model_class

    space = model_class(model).search_space
    if space is None:
        raise ValueError(f"model {model!r} has no search space (searchable: {', '.join(searchable_models())})")
    return space


def searchable_models() -> list[str]:
    """Every registered model that declares a search space."""
    from xmw_ray.models import MODELS

    return sorted(name for name, cls in MODELS.items() if cls.search_space is not None)
