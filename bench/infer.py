"""Benchmark of global inference (``xmw infer``) against a plain single-process PyTorch loop.

1. Builds (once, cached under ``/tmp/xmw-bench-infer``) synthetic TEM-MDM worlds with the tests' writer and
   prepares their Grid stores: 1° with ten years (2001-2010; ~9,700 cells at the default land and wetland shares),
   and 0.5° with two years (~38,800 cells, four times the cells).
2. Checkpoint: the paper's LSTM (hidden 8, 3 layers) with plausible normalisation statistics.
3. Reference, in this process: read every chunk of the years with ``GridStore.read_block`` and run the model on
   batches of the same size, keeping each year's ``(cells, 365)`` predictions (no maps, no budget, no Ray); its
   1-year figure is the time to the end of its first year (model loading included), in the same 10-year run.
4. ``run_inference`` (actor pool, CF Zarr maps, budget, PNGs) on 1 and 10 years at 1° (``--res``: 2°, 1° or 0.5°,
   the full grid's ~38,800 cells; a 0.5° world of N years is built and cached once) and 1 year at 0.5°:
   cell-days per second and the ratio to the reference. Fixed start-up = the 1-year time minus one year at the
   per-year rate of the 10-year run, ``t1 - (t10 - t1) / 9``. Ray itself is started once, before (``ray.init``
   is timed on its own line). A profile line splits the per-year time into the time between the years' commits
   (actors, block decode, model, map writing) and what follows the last commit (the figures drawn on the shared
   colour scale: a PNG per year and the all-years grid; the budget).

Peak memory is sampled every 50 ms as the rise in resident memory over the phase, for this (driver) process and
for the whole process tree (driver + Ray's processes, actors included).

Ends with ``infer/plain throughput at 10 years: R`` (cell-days/s of ``xmw infer`` over the plain loop's, on the
``--res`` grid).

With ``--use-gpu`` both sides run the model on the one CUDA device (float32, as the ``--use-gpu`` actors do), with
one actor; ``--years N`` shortens the long run (the last line then names N).

``--startup-profile`` (a profile, instead of the above): where the fixed start-up goes, three times in one Ray
instance. The driver's side from one 1-year ``run_inference`` (set-up until its ``on_start`` call: checkpoint load
and hash, store open, map store created; then actors and the year until its commit; then figures and budget), and
an actor built like ``FluxWorker`` that times its own steps (process start until its constructor runs, thread
sizing, CUDA initialisation, checkpoint hash and model load onto the device, store open, the first and a second
unit of cells).

Run: ``.venv/bin/python bench/infer.py [--land 0.3 --wetland 0.5] [--batch-size 2048] [--actors N] [--no-half]
[--use-gpu] [--years 10] [--res 1] [--startup-profile]``.
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
sys.path.insert(0, str(REPO / "bench"))  # also when imported as bench.infer

from measure import PeakRSS, require_cuda, start_ray  # noqa: E402  (bench/ is on the path: the one peak-memory sampler)

CACHE = Path("/tmp/xmw-bench-infer")
NORM = {"dynamic": {"mean": [10.0, 175.0, 0.0, 15.5, 30.0], "std": [6.0, 100.0, 17.0, 8.0, 17.0]},
        "static": {"mean": [5.0] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
        "target": {"mean": 40.0, "std": 10.0}}


def _build(res: float, years: tuple[int, ...], land: float, wetland: float, out: str) -> int:
    from builders import write_tiny_extent, write_tiny_temmdm

    from xmw_ray.data.grid_store import prepare_grid

    src = Path(out).with_name(Path(out).name + ".src")
    try:
        write_tiny_temmdm(src, res=res, years=years, seed=0, land_fraction=land, wetland_fraction=wetland,
                          spoil_cells=0, keep_arrays=False)
        extent, _ = write_tiny_extent(src, res=res)
        summary = prepare_grid(src, out, wetland_area=extent)
    finally:
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


def checkpoint(path: Path, store_path: Path) -> Path:
    """The bench's model, recording the Grid store's feature meanings as training on it would (``xmw infer``
    refuses a checkpoint without them)."""
    import torch

    from xmw_ray.data.grid_store import GridStore
    from xmw_ray.models import build_model
    from xmw_ray.models.checkpoint import write_checkpoint

    torch.manual_seed(0)
    model = build_model("lstm", 5, 10, norm=NORM)  # X-MethaneWet's sizes are the defaults: hidden 8, 3 layers
    model.features = GridStore.open(store_path).features
    return write_checkpoint(path, model, {"model": {"name": "lstm", "params": {}}}, {})


def plain_loop(store_path: Path, ckpt: Path, batch_size: int, n_years: int,
               use_gpu: bool = False) -> tuple[list[float], int]:
    """Seconds (from the start, model loading included) until each of the store's first ``n_years`` years was
    predicted for every cell, in one process, and the cell count."""
    import torch

    from xmw_ray.data.grid_store import GridStore
    from xmw_ray.models.checkpoint import load_checkpoint_model

    device = torch.device("cuda" if use_gpu else "cpu")
    t = time.perf_counter()
    model = load_checkpoint_model(ckpt).to(device)
    store = GridStore.open(store_path)
    per_batch = max(1, batch_size // store.cells_per_chunk)
    marks = []
    with torch.inference_mode():
        for yi in range(n_years):
            out = np.empty((store.n_cells, 365), dtype=np.float32)
            for c in range(0, store.n_chunks, per_batch):
                blocks = [store.read_block(yi, ci) for ci in range(c, min(store.n_chunks, c + per_batch))]
                dyn = torch.from_numpy(np.concatenate([b["dynamic"] for b in blocks])).to(device)
                stat = torch.from_numpy(np.concatenate([b["static"] for b in blocks])).to(device)
                c0 = store.chunk_cells(c)[0]
                out[c0:c0 + len(dyn)] = model(dyn, stat).float().cpu().numpy()
            assert np.isfinite(out).all()
            marks.append(time.perf_counter() - t)
    return marks, store.n_cells


def pipeline(store_path: Path, ckpt: Path, years: tuple[int, int], batch_size: int,
             actors: int | None, use_gpu: bool = False) -> tuple[list[float], float, PeakRSS]:
    """(seconds to each committed year, total seconds with budget and PNGs, memory) of one inference run."""
    from xmw_ray.infer.run import run_inference

    out = CACHE / "maps.zarr"
    shutil.rmtree(out, ignore_errors=True)
    marks: list[float] = []
    try:
        with PeakRSS() as mem:
            t = time.perf_counter()
            run_inference(ckpt, store_path, out, years, batch_size=batch_size, actors=actors, use_gpu=use_gpu,
                          on_year_done=lambda y, tg: marks.append(time.perf_counter() - t))
            total = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return marks, total, mem


class StartupProbe:
    """``FluxWorker``'s constructor and first units, each step timed (``time.time``: the driver's clock, one
    machine). Wrapped with ``ray.remote`` like the inference actors (1 CPU, 1 GPU with ``use_gpu``)."""

    def __init__(self, created_at: float, checkpoint: str, grid: str, use_gpu: bool, batch_size: int):
        import torch

        from xmw_ray.data.grid_store import GridStore
        from xmw_ray.data.tower_features import file_sha256
        from xmw_ray.infer.predictor import inference_device
        from xmw_ray.models.checkpoint import MODEL_FILE, load_checkpoint_model
        from xmw_ray.train.resources import use_assigned_cpus

        marks = [("process start and imports", time.time() - created_at)]

        def step(name: str, fn):
            t = time.time()
            out = fn()
            marks.append((name, time.time() - t))
            return out

        step("thread sizing", use_assigned_cpus)
        self.device = step("device check", lambda: inference_device(use_gpu))
        if use_gpu:
            step("first tensor on the device (CUDA initialisation)", lambda: torch.zeros(1, device=self.device).sum().item())
        step("checkpoint hash", lambda: file_sha256(Path(checkpoint) / MODEL_FILE))
        self.model = step("model load onto the device", lambda: load_checkpoint_model(checkpoint).to(self.device))
        self.store = step("store open", lambda: GridStore.open(grid))
        self.cells = min(batch_size, self.store.n_cells)
        self.marks = marks

    def units(self) -> list[tuple[str, float]]:
        import torch

        for name in ("first unit (read, forward, copy back)", "second unit"):
            t = time.time()
            dynamic, static = self.store.read_inputs(0, 0, self.cells)
            with torch.inference_mode():
                self.model(torch.from_numpy(dynamic).to(self.device),
                           torch.from_numpy(static).to(self.device)).float().cpu().numpy()
            self.marks.append((name, time.time() - t))
        return self.marks


def one_year_phases(store_path: Path, ckpt: Path, batch_size: int, use_gpu: bool) -> tuple[float, float, float]:
    """Seconds of a 1-year, 1-actor ``run_inference``: until its ``on_start`` call (checkpoint, store, map store),
    from there to the year's commit (actors, the year's units, writing), and after the commit (figures, budget)."""
    from xmw_ray.infer.run import run_inference

    out = CACHE / "maps-startup.zarr"
    shutil.rmtree(out, ignore_errors=True)
    marks: dict[str, float] = {}
    t = time.perf_counter()
    try:
        run_inference(ckpt, store_path, out, (2001, 2001), batch_size=batch_size, actors=1, use_gpu=use_gpu,
                      on_start=lambda wanted, missing: marks.setdefault("start", time.perf_counter() - t),
                      on_year_done=lambda y, tg: marks.setdefault("commit", time.perf_counter() - t))
        total = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return marks["start"], marks["commit"] - marks["start"], total - marks["commit"]


def startup_profile(store_path: Path, ckpt: Path, batch_size: int, use_gpu: bool, runs: int = 3) -> None:
    """Print where ``xmw infer``'s fixed start-up goes (see the module's ``--startup-profile``)."""
    import ray

    probe = ray.remote(StartupProbe).options(num_cpus=1, num_gpus=1 if use_gpu else 0)
    for i in range(runs):
        set_up, year, figures = one_year_phases(store_path, ckpt, batch_size, use_gpu)
        print(f"run {i + 1}: xmw infer, 1 year: driver set-up {set_up:.2f} s, actors and the year until its commit "
              f"{year:.2f} s, figures and budget {figures:.2f} s, total {set_up + year + figures:.2f} s", flush=True)
        actor = probe.remote(time.time(), str(ckpt), str(store_path), use_gpu, batch_size)
        steps = ray.get(actor.units.remote())
        ray.kill(actor)
        print(f"run {i + 1}: a FluxWorker-like actor: " + "; ".join(f"{n} {s:.2f} s" for n, s in steps)
              + f" (sum {sum(s for _, s in steps):.2f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--land", type=float, default=0.3, help="land share of the synthetic world")
    ap.add_argument("--wetland", type=float, default=0.5, help="wetland share of land")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--actors", type=int, default=None)
    ap.add_argument("--no-half", action="store_true", help="skip the 0.5 deg one-year case")
    ap.add_argument("--use-gpu", action="store_true", help="the model on the CUDA device, on both sides")
    ap.add_argument("--years", type=int, default=10, help="years of the long run (at least 2)")
    ap.add_argument("--res", type=float, default=1.0, choices=(2.0, 1.0, 0.5),
                    help="grid spacing in degrees of the 1- and N-year runs (0.5: the full grid's cells)")
    ap.add_argument("--startup-profile", action="store_true",
                    help="profile: where the fixed start-up goes (driver phases, an actor's own steps), 3 runs")
    args = ap.parse_args()
    if args.years < 2:
        ap.error("--years must be at least 2 (the per-year rate is (t_N - t_1) / (N - 1))")
    gpu = args.use_gpu
    if gpu:
        require_cuda(ap)

    import ray

    n = args.years
    years10 = tuple(range(2001, 2001 + n))
    one = grid_store(args.res, years10, args.land, args.wetland)
    deg = f"{args.res:g} deg"
    ckpt = checkpoint(CACHE / "ckpt", one)
    # on a GPU machine without Ray's dashboard packages (bench/gpu.sh carries only what the benches import)
    ray_kwargs = {"num_cpus": os.cpu_count(), "log_to_driver": False,
                  **({"num_gpus": 1, "include_dashboard": False} if gpu else {})}
    if args.startup_profile:
        start_ray(**ray_kwargs)
        startup_profile(one, ckpt, args.batch_size, gpu)
        ray.shutdown()
        return
    half = None if args.no_half or args.res == 0.5 else grid_store(0.5, (2001, 2002), args.land, args.wetland)

    with PeakRSS() as mem_plain:
        marks, n_one = plain_loop(one, ckpt, args.batch_size, n, gpu)
    p1, p10 = marks[0], marks[-1]  # one year (model loading included) and ten
    cd = n_one * 365
    print(f"plain PyTorch loop at {deg} ({n_one} cells): first year {p1:.1f} s = {cd / p1:,.0f} cell-days/s; "
          f"{n} years {p10:.1f} s = {n * cd / p10:,.0f} cell-days/s; peak +{mem_plain.driver:,.0f} MiB", flush=True)

    took = start_ray(**ray_kwargs)
    print(f"ray.init (local, {os.cpu_count()} CPUs): {took:.1f} s (not counted below)", flush=True)
    marks1, t1, mem1 = pipeline(one, ckpt, (2001, 2001), args.batch_size, args.actors, gpu)
    marks10, t10, mem10 = pipeline(one, ckpt, (2001, 2000 + n), args.batch_size, args.actors, gpu)
    per_year = (t10 - t1) / (n - 1)
    print(f"xmw infer at {deg}, 1 year: {t1:.1f} s (year committed at {marks1[0]:.1f} s) = {cd / t1:,.0f} "
          f"cell-days/s; ratio to the plain loop {p1 / t1:.2f} (throughput), peak +{mem1.driver:,.0f} MiB driver, "
          f"+{mem1.tree:,.0f} MiB with Ray processes", flush=True)
    print(f"xmw infer at {deg}, {n} years: {t10:.1f} s (first year committed at {marks10[0]:.1f} s) = "
          f"{n * cd / t10:,.0f} cell-days/s; ratio to the plain loop {p10 / t10:.2f} (throughput), peak "
          f"+{mem10.driver:,.0f} MiB driver (x{mem10.driver / max(mem1.driver, 1):.2f} of 1 year), "
          f"+{mem10.tree:,.0f} MiB with Ray processes", flush=True)
    print(f"per year: xmw infer {per_year:.2f} s vs plain loop {(p10 - p1) / (n - 1):.2f} s "
          f"({(p10 - p1) / (n - 1) / per_year:.2f}x its throughput); fixed start-up of xmw infer "
          f"t1 - (t{n} - t1)/{n - 1} = {t1 - per_year:.1f} s", flush=True)
    # where the per-year time goes: the years' commits (actors, decode, model, map writing) against what follows
    # the last commit (the figures: a PNG per year and the all-years grid drawn on the shared scale, the budget)
    committed = (marks10[-1] - marks10[0]) / (n - 1)
    print(f"profile: per year between commits {committed:.2f} s ({(p10 - p1) / (n - 1) / committed:.2f}x the plain "
          f"loop's throughput); after the last commit (figures, budget) {t1 - marks1[-1]:.1f} s for 1 year, "
          f"{t10 - marks10[-1]:.1f} s for {n}: {(t10 - marks10[-1] - (t1 - marks1[-1])) / (n - 1):.2f} s per "
          f"extra year", flush=True)
    if half is not None:
        with PeakRSS() as mem_ph:
            [ph], n_half = plain_loop(half, ckpt, args.batch_size, 1, gpu)
        _, th, memh = pipeline(half, ckpt, (2001, 2001), args.batch_size, args.actors, gpu)
        print(f"0.5 deg, 1 year ({n_half} cells): plain loop {ph:.1f} s, xmw infer {th:.1f} s = "
              f"{n_half * 365 / th:,.0f} cell-days/s; ratio {ph / th:.2f} (throughput); driver peak "
              f"+{memh.driver:,.0f} MiB ({memh.driver / max(mem_ph.driver, 1):.2f}x the plain loop's); time "
              f"x{th / t1:.2f} for x{n_half / n_one:.2f} cells", flush=True)
    ray.shutdown()
    print(f"infer/plain throughput at {n} years: {p10 / t10:.2f}")


if __name__ == "__main__":
    main()
