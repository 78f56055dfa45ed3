"""Benchmark of global inference (``xmw infer``) against a plain single-process PyTorch loop.

1. Builds (once, cached under ``/tmp/xmw-bench-infer``) synthetic TEM-MDM worlds with the tests' writer and
   prepares their Grid stores: 0.5° with two years, and 1° with one year (a quarter of the cells).
2. Checkpoint: the paper's LSTM (hidden 8, 3 layers) with plausible normalisation statistics.
3. Reference, in this process: read every chunk of one year with ``GridStore.read_block`` and run the model on
   batches of the same size, keeping the ``(cells, 365)`` predictions (no maps, no budget, no Ray).
4. ``run_inference`` (Ray Data actor pool, CF Zarr maps, budget, PNGs) on 1 year at 0.5°, 2 years at 0.5° and
   1 year at 1°: cell-days per second, the ratio to the reference, and how time grows with years and cells.

Peak memory is sampled every 50 ms as the rise in resident memory over the phase, for this (driver) process and
for the whole process tree (driver + Ray's processes, actors included).

Run: ``.venv/bin/python bench/infer.py [--land 0.3 --wetland 0.5] [--batch-size 2048] [--actors N]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from measure import PeakRSS  # noqa: E402  (bench/ is on the path: the one peak-memory sampler)

CACHE = Path("/tmp/xmw-bench-infer")
NORM = {"dynamic": {"mean": [10.0, 175.0, 0.0, 15.5, 30.0], "std": [6.0, 100.0, 17.0, 8.0, 17.0]},
        "static": {"mean": [5.0] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
        "target": {"mean": 40.0, "std": 10.0}}


def _build(res: float, years: tuple[int, ...], land: float, wetland: float, out: str) -> int:
    from builders import write_tiny_extent, write_tiny_temmdm

    from xmw_ray.data.grid_store import prepare_grid

    src = Path(out).with_name(Path(out).name + ".src")
    write_tiny_temmdm(src, res=res, years=years, seed=0, land_fraction=land, wetland_fraction=wetland,
                      spoil_cells=0, keep_arrays=False)
    extent, _ = write_tiny_extent(src, res=res)
    summary = prepare_grid(src, out, wetland_area=extent)
    shutil.rmtree(src, ignore_errors=True)
    return summary["cells"]


def grid_store(res: float, years: tuple[int, ...], land: float, wetland: float) -> Path:
    """The cached Grid store of one synthetic world (built in a fresh process so its memory is returned)."""
    path = CACHE / f"grid-{res}-{len(years)}y-{land}-{wetland}.zarr"
    if not (path / "zarr.json").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with mp.get_context("spawn").Pool(1) as pool:
            cells = pool.apply(_build, (res, years, land, wetland, str(path)))
        print(f"built {path.name}: {cells} cells ({time.perf_counter() - t:.0f} s, cached)", flush=True)
    return path


def checkpoint(path: Path) -> Path:
    import torch

    from xmw_ray.models import build_model
    from xmw_ray.models.checkpoint import write_checkpoint

    torch.manual_seed(0)
    model = build_model("lstm", 5, 10, norm=NORM)  # X-MethaneWet's sizes are the defaults: hidden 8, 3 layers
    return write_checkpoint(path, model, {"model": {"name": "lstm", "params": {}}}, {})


def plain_loop(store_path: Path, ckpt: Path, batch_size: int) -> tuple[float, int]:
    """Seconds to predict every cell of the store's first year in one process, and the number of cells."""
    import torch

    from xmw_ray.data.grid_store import GridStore
    from xmw_ray.models.checkpoint import load_checkpoint_model

    t = time.perf_counter()
    model = load_checkpoint_model(ckpt)
    store = GridStore.open(store_path)
    out = np.empty((store.n_cells, 365), dtype=np.float32)
    per_batch = max(1, batch_size // store.cells_per_chunk)
    with torch.inference_mode():
        for c in range(0, store.n_chunks, per_batch):
            blocks = [store.read_block(0, ci) for ci in range(c, min(store.n_chunks, c + per_batch))]
            dyn = torch.from_numpy(np.concatenate([b["dynamic"] for b in blocks]))
            stat = torch.from_numpy(np.concatenate([b["static"] for b in blocks]))
            c0 = store.chunk_cells(c)[0]
            out[c0:c0 + len(dyn)] = model(dyn, stat).numpy()
    assert np.isfinite(out).all()
    return time.perf_counter() - t, store.n_cells


def pipeline(store_path: Path, ckpt: Path, years: tuple[int, int], batch_size: int,
             actors: int | None) -> tuple[float, float, PeakRSS]:
    """(seconds to the last committed year, total seconds with budget and PNGs, memory) of one inference run."""
    from xmw_ray.infer.run import run_inference

    out = CACHE / "maps.zarr"
    shutil.rmtree(out, ignore_errors=True)
    marks: list[float] = []
    with PeakRSS() as mem:
        t = time.perf_counter()
        run_inference(ckpt, store_path, out, years, batch_size=batch_size, actors=actors,
                      on_year_done=lambda y, tg: marks.append(time.perf_counter() - t))
        total = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return marks[-1], total, mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--land", type=float, default=0.3, help="land share of the synthetic world")
    ap.add_argument("--wetland", type=float, default=0.5, help="wetland share of land")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--actors", type=int, default=None)
    args = ap.parse_args()

    import ray

    from xmw_ray.data.grid_store import GridStore

    half = grid_store(0.5, (2001, 2002), args.land, args.wetland)
    one = grid_store(1.0, (2001,), args.land, args.wetland)
    ckpt = checkpoint(CACHE / "ckpt")
    n_half, n_one = GridStore.open(half).n_cells, GridStore.open(one).n_cells

    with PeakRSS() as mem_plain:
        t_plain, _ = plain_loop(half, ckpt, args.batch_size)
    cd = n_half * 365
    print(f"plain PyTorch loop, 1 year at 0.5 deg ({n_half} cells): {t_plain:.1f} s = {cd / t_plain:,.0f} cell-days/s, "
          f"peak +{mem_plain.driver:,.0f} MiB", flush=True)

    ray.init(num_cpus=os.cpu_count(), log_to_driver=False)
    t_year, t1, mem1 = pipeline(half, ckpt, (2001, 2001), args.batch_size, args.actors)
    print(f"xmw infer, 1 year at 0.5 deg: maps committed in {t_year:.1f} s ({t1:.1f} s with budget + PNGs) = "
          f"{cd / t1:,.0f} cell-days/s; peak +{mem1.driver:,.0f} MiB driver, +{mem1.tree:,.0f} MiB with Ray "
          f"processes", flush=True)
    print(f"ratio xmw infer / plain loop (1 year, 0.5 deg): time {t1 / t_plain:.2f}x, "
          f"driver peak memory {mem1.driver / max(mem_plain.driver, 1):.2f}x", flush=True)
    _, t2, mem2 = pipeline(half, ckpt, (2001, 2002), args.batch_size, args.actors)
    print(f"xmw infer, 2 years at 0.5 deg: {t2:.1f} s = {2 * cd / t2:,.0f} cell-days/s; time x{t2 / t1:.2f} for x2 "
          f"years; driver peak +{mem2.driver:,.0f} MiB (x{mem2.driver / max(mem1.driver, 1):.2f})", flush=True)
    _, t3, mem3 = pipeline(one, ckpt, (2001, 2001), args.batch_size, args.actors)
    print(f"xmw infer, 1 year at 1 deg ({n_one} cells): {t3:.1f} s = {n_one * 365 / t3:,.0f} cell-days/s; "
          f"time x{t1 / t3:.2f} for x{n_half / n_one:.2f} cells; driver peak +{mem3.driver:,.0f} MiB", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
