"""The Ray Data actor of global inference: loads a checkpoint once, then turns sample batches into flux.

Each call gets a batch in the sample schema and returns only what the driver needs to place the result:
grid row/column of each cell, its year and its daily flux ``(n, 365)`` in mg CH4 m-2 d-1 (the drivers are
dropped here, so they never travel back to the driver).
"""

from __future__ import annotations

import numpy as np
import torch

from xmw_ray.data import schema
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import load_checkpoint_model

ILAT, ILON, FLUX = "ilat", "ilon", "flux"


def parse_cell_entities(entities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid row and column of cell entity ids ``c<ilat>_<ilon>`` (the inverse of ``schema.cell_entity``)."""
    pairs = [str(e)[1:].split("_", 1) for e in entities]
    if not pairs:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32)
    arr = np.asarray(pairs, dtype=np.int32)
    return arr[:, 0], arr[:, 1]


def inference_device(use_gpu: bool) -> torch.device:
    """CUDA when asked for (and present in this process), else the CPU."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise XmwInputError("--use-gpu: no CUDA device is visible to the inference actor")
    return torch.device("cuda")


class FluxPredictor:
    """Callable class for ``Dataset.map_batches`` with an actor pool: one model per actor, many batches."""

    def __init__(self, checkpoint: str, use_gpu: bool = False,
                 slots: tuple[tuple[int, ...], tuple[int, ...]] | None = None):
        """``slots``: the dynamic and static slots of the store the model reads (``features.select_slots``; a
        map-ready model reads some of the grid's), None for every slot."""
        self.device = inference_device(use_gpu)
        self.model = load_checkpoint_model(checkpoint).to(self.device)
        self.slots = None if slots is None else (list(slots[0]), list(slots[1]))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dyn, stat = batch[schema.DYNAMIC], batch[schema.STATIC]
        if self.slots is not None:
            dyn, stat = dyn[..., self.slots[0]], stat[..., self.slots[1]]
        with torch.inference_mode():
            dynamic = torch.tensor(dyn, dtype=torch.float32, device=self.device)
            static = torch.tensor(stat, dtype=torch.float32, device=self.device)
            flux = self.model(dynamic, static).float().cpu().numpy()
        ilat, ilon = parse_cell_entities(batch[schema.ENTITY])
        return {ILAT: ilat, ILON: ilon, schema.YEAR: np.asarray(batch[schema.YEAR], dtype=np.int64), FLUX: flux}
