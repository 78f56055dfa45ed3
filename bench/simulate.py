"""Seconds and peak memory per simulated year of ``xmw simulate``, at 2°, 1° and 0.5°, against plain I/O.

Each resolution runs in a fresh child process (so its peak resident memory is its own): the world is built,
one spin-up year and ``--years`` simulated years are written, no towers. The plain reference, measured in the same
child, is writing the same five year-files' arrays ``(nlat, nlon, 12, 31)`` float32 with ``np.save``: the
``vs_plain_io`` column is a simulated year's wall time ÷ that raw write time (what the weather, the process model
and netCDF cost on top of the unavoidable bytes). The scaling column divides each resolution's time per year by
the 2° one, next to the ratio of land cells (linear cost: the two match). Goal at 0.5°: < 30 s and < 4 GB a year
on 2 cores.

    .venv/bin/python bench/simulate.py [--res 2 1 0.5] [--years 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def child(res: float, n_years: int) -> dict:
    from xmw_ray.data.contract import grid_shape
    from xmw_ray.sim.world import SimulationSpec, simulate

    with tempfile.TemporaryDirectory(prefix="xmw-bench-sim-") as tmp:
        t0 = time.perf_counter()
        summary = simulate(SimulationSpec(out=Path(tmp) / "w", res=res, years=(2000, 1999 + n_years), sites=0, seed=0),
                           log=lambda msg: None)
        total = time.perf_counter() - t0
        per_year = float(np.mean(list(summary["seconds_per_year"].values())))
        nlat, nlon = grid_shape(res)
        arr = np.full((nlat, nlon, 12, 31), 1.0, dtype=np.float32)
        t1 = time.perf_counter()
        for k in range(5):
            np.save(Path(tmp) / f"plain{k}.npy", arr)
        plain = time.perf_counter() - t1
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux
    return {"res": res, "land_cells": summary["land_cells"], "s_per_year": per_year, "total_s": total,
            "plain_io_s": plain, "peak_gb": peak_gb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=float, nargs="+", default=[2.0, 1.0, 0.5])
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.years)))
        return
    rows = []
    for res in args.res:
        out = subprocess.run([sys.executable, __file__, "--child", str(res), "--years", str(args.years)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"{'res':>5} {'land cells':>10} {'s/year':>8} {'peak GB':>8} {'vs_plain_io':>11} "
          f"{'time x':>7} {'cells x':>7}")
    for r in rows:
        print(f"{r['res']:>5} {r['land_cells']:>10} {r['s_per_year']:>8.2f} {r['peak_gb']:>8.2f} "
              f"{r['s_per_year'] / r['plain_io_s']:>11.2f} {r['s_per_year'] / base['s_per_year']:>7.2f} "
              f"{r['land_cells'] / base['land_cells']:>7.2f}")


if __name__ == "__main__":
    main()
