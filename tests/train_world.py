"""A small learnable Grid store for training tests: the tests' TEM-MDM writer, with the target replaced by a
known function of the drivers (so a model that learns anything scores well above zero NSE)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
from builders import write_tiny_extent, write_tiny_temmdm

from xmw_ray.data import layout
from xmw_ray.data.contract import days_to_slots
from xmw_ray.data.grid_store import prepare_grid
from xmw_ray.train.loop import Objective

YEARS = (2000, 2001, 2002, 2003)


def learnable_target(tair: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """Flux rising with temperature and with the 10-day mean precipitation (a memory a sequence model needs)."""
    kernel = np.ones(10) / 10.0
    wet = np.apply_along_axis(lambda s: np.convolve(s, kernel, mode="full")[: s.shape[0]], -1, np.nan_to_num(prec))
    return (20.0 + 1.5 * tair + 2.0 * wet).astype(np.float32)


#: The worlds built so far in this process, by resolution: later calls copy them (a build takes seconds).
_BUILT: dict[float, Path] = {}


def make_grid_store(root: Path, res: float = 10.0) -> Path:
    """``root/src`` (TEM-MDM files) and ``root/grid.zarr`` (the prepared store): a private copy for each caller."""
    if res not in _BUILT:
        master = Path(tempfile.mkdtemp(prefix="xmw-train-world-"))
        atexit.register(shutil.rmtree, master, ignore_errors=True)
        _build(master, res)
        _BUILT[res] = master
    shutil.copytree(_BUILT[res], root, dirs_exist_ok=True)
    return root / "grid.zarr"


def _build(root: Path, res: float) -> None:
    src = root / "src"
    arrays = write_tiny_temmdm(src, res=res, years=YEARS, seed=1, land_fraction=0.5, wetland_fraction=0.6,
                               spoil_cells=0)
    for year in YEARS:
        target = learnable_target(arrays["daily"][("TAIR", year)], arrays["daily"][("PREC", year)])
        target[~np.isfinite(arrays["daily"][("TAIR", year)])] = np.nan
        layout.write_target(src, year, days_to_slots(target), res)
    extent, _ = write_tiny_extent(root, res=res, seed=1)
    prepare_grid(src, root / "grid.zarr", cells_per_chunk=16, wetland_area=extent)


def make_emission_store(root: Path, years: tuple[int, ...] = (2000, 2001, 2002)) -> Path:
    """``root/grid.zarr``: the tests' TEM-MDM world as is, whose target (gamma-distributed emission) is >= 0."""
    write_tiny_temmdm(root / "src", years=years, seed=3, keep_arrays=False)
    prepare_grid(root / "src", root / "grid.zarr", cells_per_chunk=16)
    return root / "grid.zarr"


def diverging_objective(rank_to_diverge: int | None) -> Objective:
    """The plain loss, except that the first batch of every epoch gives NaN on ``rank_to_diverge`` (None: all)."""
    import ray.train
    import torch

    from xmw_ray.data import schema
    from xmw_ray.train.losses import masked_mse

    class DivergesOnce(Objective):  # defined here, so workers get it by value (tests/ is not on their path)
        def __init__(self) -> None:
            self.epochs_seen: set[int] = set()

        def loss(self, model, bare, extras, batch, source, progress, epoch):
            loss = masked_mse(model(batch[schema.DYNAMIC], batch[schema.STATIC]).float(), batch[schema.TARGET])
            loss = loss / float(bare.target_std) ** 2
            rank = ray.train.get_context().get_world_rank()
            if epoch not in self.epochs_seen and rank_to_diverge in (None, rank):
                self.epochs_seen.add(epoch)
                return loss * torch.nan, {}
            return loss, {}

    return DivergesOnce()
