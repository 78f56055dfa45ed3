"""The inference actor: loads a checkpoint once, then reads cell ranges of the Grid store and returns their flux.

An actor is built from small values only (checkpoint path or URL, its SHA-256, Grid store path, a GPU flag), so Ray
can rebuild it after a crash: an actor whose constructor arguments live in the object store cannot be restarted
safely (ray-project/ray#53727, the error-level line Ray Data's actor pools print). It reads its own inputs, so
the drivers never travel through the object store; only the flux ``(cells, 365)`` goes back to the driver.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from xmw_ray.data.contract import DAYS_PER_YEAR, MONTH_STARTS
from xmw_ray.data.grid_store import GridStore
from xmw_ray.data.tower_features import file_sha256
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import MODEL_FILE, load_checkpoint_model
from xmw_ray.storage import is_url
from xmw_ray.train.resources import use_assigned_cpus


@contextmanager
def local_checkpoint(checkpoint: str) -> Iterator[str]:
    """A local folder holding ``checkpoint``'s model file: the folder itself, or for an ``s3://`` / ``gs://`` URL
    (e.g. a run's ``<output_dir>/<name>/best``) a temporary copy of its model file, removed on exit."""
    if not is_url(checkpoint):
        yield checkpoint
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(checkpoint)
    with tempfile.TemporaryDirectory(prefix="xmw-checkpoint-") as tmp:
        try:
            fs.get_file(f"{root.rstrip('/')}/{MODEL_FILE}", str(Path(tmp) / MODEL_FILE))
        except FileNotFoundError as exc:
            raise XmwInputError(f"{checkpoint}: not a checkpoint ({MODEL_FILE} missing)") from exc
        yield tmp


def inference_device(use_gpu: bool) -> torch.device:
    """CUDA when asked for (and present in this process), else the CPU."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise XmwInputError("--use-gpu: no CUDA device is visible to the inference actor")
    return torch.device("cuda")


class FluxWorker:
    """One inference actor (wrapped with ``ray.remote`` by the driver): one model, many cell ranges."""

    def __init__(self, checkpoint: str, checkpoint_sha256: str, grid: str, use_gpu: bool = False,
                 slots: tuple[tuple[int, ...], tuple[int, ...]] | None = None):
        """``slots``: the dynamic and static slots of the store the model reads (``features.select_slots``; a
        map-ready model reads some of the grid's), None for every slot."""
        use_assigned_cpus()
        self.device = inference_device(use_gpu)
        with local_checkpoint(checkpoint) as local:
            # the model the map store records: a checkpoint replaced since the run started is refused
            if file_sha256(Path(local) / MODEL_FILE) != checkpoint_sha256:
                raise XmwInputError(f"{checkpoint}: changed since this inference started")
            self.model = load_checkpoint_model(local).to(self.device)
        self.store = GridStore.open(grid)
        self.slots = None if slots is None else (list(slots[0]), list(slots[1]))

    def _inputs(self, year_index: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        dynamic, static = self.store.read_inputs(year_index, c0, c1)
        if self.slots is not None:
            dynamic, static = dynamic[..., self.slots[0]], static[..., self.slots[1]]
        return np.ascontiguousarray(dynamic), np.ascontiguousarray(static)

    def predict(self, year_index: int, c0: int, c1: int) -> np.ndarray:
        """Daily flux ``(c1 - c0, 365)`` (mg CH4 m-2 d-1) of store cells ``c0..c1`` in year ``year_index``."""
        dynamic, static = self._inputs(year_index, c0, c1)
        with torch.inference_mode():
            flux = self.model(torch.from_numpy(dynamic).to(self.device), torch.from_numpy(static).to(self.device))
            return flux.float().cpu().numpy()

    def predict_members(self, year_index: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For an ensemble (``models.ensemble.ensemble_size`` > 0): the ensemble's daily flux ``(n, 365)`` as ``predict`` gives it,
        each cell's spread (standard deviation across the members, ddof 0, of each member's annual-mean flux,
        ``(n,)`` mg CH4 m-2 d-1) and each member's monthly sums of daily flux ``(members, n, 12)`` (mg CH4 m-2, for
        the members' budgets); the members' daily flux itself stays here."""
        dynamic, static = self._inputs(year_index, c0, c1)
        with torch.inference_mode():
            d, s = torch.from_numpy(dynamic).to(self.device), torch.from_numpy(static).to(self.device)
            each = torch.stack([member(d, s) for member in self.model.members])  # what EnsembleModel.forward stacks
            flux = each.mean(dim=0).float().cpu().numpy()
            each = each.float().cpu().numpy()
        monthly = np.add.reduceat(each.astype(np.float64), MONTH_STARTS, axis=2)
        spread = (monthly.sum(axis=2) / DAYS_PER_YEAR).std(axis=0)
        return flux, spread.astype(np.float32), monthly
