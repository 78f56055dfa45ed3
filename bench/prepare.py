"""Benchmark of ``xmw prepare grid`` and of random access to the Grid store.

1. Writes one year of a synthetic global TEM-MDM world (default 0.5°, ~10 % of cells valid) with the tests' writer.
2. Prepares the Grid store in a fresh process: cell-years per second and that process's peak RSS. Reference: a
   plain pass in a fresh process that loads each of the year's six files whole with xarray and gathers the valid
   cells into one NumPy array saved with ``np.save`` (no validation, no chunking, no compression).
3. Random access: 1,024 random samples via ``GridStore.read_samples`` against the same samples fancy-indexed from
   a plain ``.npy`` memmap of the same year (both from a warm page cache).

Run: ``.venv/bin/python bench/prepare.py [--res 0.5] [--cells-per-chunk 256]``; prints the figures and ratios.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def _write_world(root: str, res: float) -> int:
    from builders import write_tiny_temmdm

    truth = write_tiny_temmdm(Path(root), res=res, years=(2001,), seed=0, land_fraction=0.3,
                              wetland_fraction=0.34, spoil_cells=0, keep_arrays=False)
    return int(truth["valid"].sum())


def _prepare(root: str, out: str, cells_per_chunk: int) -> tuple[float, float, int]:
    from xmw_ray.data.grid_store import prepare_grid

    t = time.perf_counter()
    summary = prepare_grid(root, out, cells_per_chunk=cells_per_chunk)
    elapsed = time.perf_counter() - t
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, summary["cell_years"]


def _plain(root: str, out: str) -> tuple[float, float]:
    import xarray as xr

    from xmw_ray.data import layout
    from xmw_ray.data.contract import DAILY_VARS, slots_to_days

    t = time.perf_counter()
    wet = xr.open_dataset(layout.static_path(Path(root), "wetlandtype"))["wetlandtype"].values
    ilat, ilon = np.nonzero(np.nan_to_num(wet) > 0)
    parts = []
    for var in DAILY_VARS:
        slots = xr.open_dataset(layout.daily_path(Path(root), var, 2001))[var].values
        parts.append(slots_to_days(slots[ilat, ilon]))
        del slots
    npp = xr.open_dataset(layout.npp_path(Path(root), 2001))["NPP"].values[ilat, ilon]
    parts.append(npp[:, np.repeat(np.arange(12), [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])])
    target = xr.open_dataset(layout.target_path(Path(root), 2001))["CH4_emission"].values
    parts.append(slots_to_days(target[ilat, ilon]))
    np.save(out, np.stack(parts, axis=-1).astype(np.float32))
    elapsed = time.perf_counter() - t
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=float, default=0.5)
    ap.add_argument("--cells-per-chunk", type=int, default=256)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--workdir", help="where to write (default: a temporary folder, removed afterwards)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="xmw-bench-"))
    ctx = mp.get_context("spawn")
    try:
        with ctx.Pool(1) as pool:
            t = time.perf_counter()
            n_valid = pool.apply(_write_world, (str(work / "src"), args.res))
            print(f"wrote 1 year at {args.res} deg: {n_valid} valid cells ({time.perf_counter() - t:.1f} s)")
        with ctx.Pool(1) as pool:
            t_plain, rss_plain = pool.apply(_plain, (str(work / "src"), str(work / "plain.npy")))
        with ctx.Pool(1) as pool:
            t_prep, rss_prep, cell_years = pool.apply(_prepare, (str(work / "src"), str(work / "grid.zarr"),
                                                                 args.cells_per_chunk))
        print(f"prepare grid: {cell_years} cell-years in {t_prep:.2f} s = {cell_years / t_prep:,.0f} cell-years/s, "
              f"peak RSS {rss_prep:,.0f} MiB")
        print(f"plain reference (load whole files, gather, np.save): {t_plain:.2f} s, peak RSS {rss_plain:,.0f} MiB")
        print(f"ratio prepare/plain: time {t_prep / t_plain:.2f}x, peak memory {rss_prep / rss_plain:.2f}x")

        from xmw_ray.data.grid_store import GridStore

        store = GridStore.open(work / "grid.zarr")
        dyn = np.load(work / "plain.npy")[..., :5]
        np.save(work / "dynamic.npy", np.ascontiguousarray(dyn))
        del dyn
        mm = np.load(work / "dynamic.npy", mmap_mode="r")
        rng = np.random.default_rng(0)
        cells = rng.integers(0, store.n_cells, args.samples)
        years = np.zeros(args.samples, dtype=np.int64)
        store.read_samples(years[:8], cells[:8])  # warm-up (metadata, imports)
        t = time.perf_counter()
        got = store.read_samples(years, cells)
        t_store = time.perf_counter() - t
        t = time.perf_counter()
        ref = np.asarray(mm[cells])
        t_mm = time.perf_counter() - t
        assert np.array_equal(got["dynamic"], ref), "store and memmap disagree"
        print(f"random access, {args.samples} samples: Grid store {t_store * 1e3:.1f} ms, "
              f"NumPy memmap {t_mm * 1e3:.1f} ms, ratio {t_store / t_mm:.1f}x")
        size = sum(p.stat().st_size for p in (work / "grid.zarr").rglob("*") if p.is_file())
        print(f"store size {size / 2**20:,.0f} MiB vs plain {(work / 'plain.npy').stat().st_size / 2**20:,.0f} MiB")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
