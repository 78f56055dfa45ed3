"""Scale bench: the whole chain on the built-in world at several sizes, per stage throughput and peak memory.

For each size ``RES x YEARS`` (degrees x years from 2001), in one process with one local Ray instance:

1. simulate: ``xmw simulate`` (built-in world, no towers) → cell-days = land cells x 365 x years.
2. prepare: ``xmw prepare grid`` with the world's own wetland extent → cell-days = store cells x 365 x years.
3. normstats: the training split's normalisation statistics (``ray_datasets.norm_stats``, what training computes
   first; it reads the whole training part).
4. train: ``--steps`` AdamW steps of batch 64 on the X-MethaneWet LSTM (hidden 8, 3 layers), fed by the Ray Data
   stream of the store's spatial training split (``loop.batch_dicts``, the Ray Train worker's own data path,
   run in this process: the worker group's fixed start-up is ``bench/train.py``'s subject) → cell-days =
   steps x 64 x 365; a fixed amount of work, so its time should stay flat while the store grows.
5. infer: ``xmw infer`` over every year → cell-days = store cells x 365 x years.

Each stage prints seconds, cell-days/s and its peak memory rise, sampled every 50 ms: this (driver) process, and
the whole process tree (driver + Ray's raylet, workers and actors). At the end, per stage, a least-squares line of
seconds and of peak tree memory against cell-years (stages whose work grows with the data): cost should be
linear (r² near 1, the intercept the fixed start-up) and memory flat (a slope near 0 MiB per 1,000 cell-years).

Sizes: ``--sizes 2x1,2x4,2x16,1x1,1x4,1x16,0.5x1`` (the default, meant to finish in about 10 minutes on 2 idle
cores, measured idle 2026-11-26 at about 5 minutes; the estimate it was sized by: 21.7 s to simulate a 0.5-degree year,
3,700-5,300 cell-years/s to prepare, ~4,000 cell-years/s to infer) or ``--full``, which adds 0.5 x 4 and 0.5 x 16
years (about 20 minutes more by the same arithmetic, and ~30 GB of NetCDF at the peak: 259,200 grid cells x 365
days x 5 daily variables x 4 bytes is 1.9 GB a year before compression; each size's files are removed after it).

    .venv/bin/python bench/scale.py [--sizes 2x1,2x4] [--full] [--steps 50] [--out /tmp/xmw-bench-scale]

Ends with one line per scaling stage: its fixed seconds, microseconds per cell-year, r², and its memory line, the
object store's (the bytes Ray's object store holds, asked of the raylet), and where the tree's PSS rose at the
largest size, by process role (``measure.PeakRSS.by_role``): a profile of where the memory is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import PeakRSS, linear_fit, start_ray, top_roles  # noqa: E402  (bench/ is on the path)

DEFAULT_SIZES = "2x1,2x4,2x16,1x1,1x4,1x16,0.5x1"
FULL_SIZES = "2x1,2x4,2x16,1x1,1x4,1x16,0.5x1,0.5x4,0.5x16"
BATCH = 64
FIRST_YEAR = 2001
#: Stages whose work grows with cell-years (training does a fixed number of steps).
SCALING_STAGES = ("simulate", "prepare", "normstats", "infer")


@dataclass
class StageResult:
    size: str
    stage: str
    cell_years: int  # the size's cell-years (store cells x years), the x of the fits
    cell_days: int  # the work this stage did
    seconds: float
    driver_mib: float
    tree_mib: float
    tree_pss_mib: float  # the tree's proportional set size: shared object-store pages counted once
    plasma_mib: float = 0.0  # peak rise of the bytes in Ray's object store
    roles: dict[str, float] | None = None  # peak PSS rise per process role (measure.PeakRSS.by_role)

    @property
    def rate(self) -> float:
        return self.cell_days / self.seconds if self.seconds > 0 else float("nan")


def parse_sizes(text: str) -> list[tuple[float, int]]:
    """``"2x1,1x4"`` → ``[(2.0, 1), (1.0, 4)]``: resolution in degrees (dividing 180) and a number of years."""
    sizes = []
    for item in text.split(","):
        try:
            res_text, years_text = item.strip().lower().split("x")
            res, years = float(res_text), int(years_text)
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not RESxYEARS (e.g. 0.5x16)") from None
        if res <= 0 or abs(180 / res - round(180 / res)) > 1e-9 or years < 1:
            raise ValueError(f"--sizes: {item!r}: the resolution must divide 180 degrees and years be at least 1")
        sizes.append((res, years))
    return sizes


def fit_lines(results: list[StageResult]) -> dict[str, dict[str, float]]:
    """Per scaling stage, seconds and peak tree memory against cell-years: ``{stage: {"fixed_s", "us_per_cell_year",
    "r2", "mem_base_mib", "mib_per_1000_cell_years"}}`` (stages with fewer than two distinct sizes are left out)."""
    lines = {}
    for stage in SCALING_STAGES:
        rows = [r for r in results if r.stage == stage]
        if len({r.cell_years for r in rows}) < 2:
            continue
        x = [r.cell_years for r in rows]
        fixed, slope, r2 = linear_fit(x, [r.seconds for r in rows])
        mem0, mem_slope, _ = linear_fit(x, [r.tree_mib for r in rows])
        pss0, pss_slope, _ = linear_fit(x, [r.tree_pss_mib for r in rows])
        _, plasma_slope, _ = linear_fit(x, [r.plasma_mib for r in rows])
        lines[stage] = {"fixed_s": fixed, "us_per_cell_year": slope * 1e6, "r2": r2, "mem_base_mib": mem0,
                        "mib_per_1000_cell_years": mem_slope * 1000, "pss_base_mib": pss0,
                        "pss_mib_per_1000_cell_years": pss_slope * 1000,
                        "plasma_mib_per_1000_cell_years": plasma_slope * 1000}
    return lines


def _stage(size: str, name: str, cell_years: int, fn) -> tuple[StageResult, object]:
    with PeakRSS(plasma=True) as mem:
        t = time.perf_counter()
        value, cell_days = fn()
        seconds = time.perf_counter() - t
    r = StageResult(size, name, cell_years, cell_days, seconds, mem.driver, mem.tree, mem.tree_pss, mem.plasma,
                    dict(mem.by_role))
    print(f"  {name:9s} {seconds:8.1f} s {r.rate:14,.0f} cell-days/s   peak +{mem.driver:7,.0f} MiB driver "
          f"+{mem.tree:7,.0f} MiB tree RSS +{mem.tree_pss:7,.0f} MiB tree PSS, object store +{mem.plasma:,.0f} MiB "
          f"(PSS by process: {top_roles(mem.by_role)})", flush=True)
    return r, value


#: Marks a size's work folder as this bench's: only such a folder is ever deleted.
WORK_MARKER = ".xmw-bench-scale"


def claim_work_folder(work: Path) -> Path:
    """``work`` emptied and marked as this bench's; a folder there that it did not make is refused, not deleted
    (``--out`` is the user's choice)."""
    if work.exists():
        if not (work / WORK_MARKER).is_file():
            raise SystemExit(f"{work}: exists and was not made by bench/scale.py; choose another --out or remove it")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_MARKER).touch()
    return work


def run_size(work: Path, res: float, years: int, steps: int) -> list[StageResult]:
    import torch

    from xmw_ray.data.grid_store import GridStore, prepare_grid
    from xmw_ray.data.ray_datasets import norm_stats, sample_dataset, store_info
    from xmw_ray.data.splits import SplitSpec
    from xmw_ray.infer.run import run_inference
    from xmw_ray.models import build_model
    from xmw_ray.models.checkpoint import write_checkpoint
    from xmw_ray.sim.world import SimulationSpec, simulate
    from xmw_ray.train.loop import batch_dicts
    from xmw_ray.train.losses import masked_mse
    from xmw_ray.train.runner import TRAIN_COLUMNS

    size = f"{res:g}x{years}"
    y0, y1 = FIRST_YEAR, FIRST_YEAR + years - 1
    print(f"{size}: {res:g} deg, {y0}-{y1}", flush=True)

    def sim():
        out = simulate(SimulationSpec(out=work / "world", res=res, years=(y0, y1), sites=0, seed=0),
                       log=lambda msg: None)
        return out, out["land_cells"] * 365 * years

    sim_r, _ = _stage(size, "simulate", 0, sim)

    def prep():
        summary = prepare_grid(work / "world", work / "grid.zarr",
                               wetland_area=work / "world" / "WAD2M" / "wetland_fraction.nc")
        return summary, summary["cells"] * 365 * years

    prep_r, summary = _stage(size, "prepare", 0, prep)
    cell_years = summary["cells"] * years
    sim_r.cell_years = prep_r.cell_years = cell_years
    info = store_info(str(work / "grid.zarr"), "grid")
    spec = SplitSpec(kind="spatial", n_folds=5, test_fold=0)
    stats_r, stats = _stage(size, "normstats", cell_years, lambda: (norm_stats(info, spec), cell_years * 365))

    def train():
        torch.manual_seed(0)
        model = build_model("lstm", len(info.dynamic_vars), len(info.static_vars), norm=stats.to_dict())
        model.features = GridStore.open(info.path).features
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        var = float(model.target_std) ** 2
        done = 0
        stream = sample_dataset(info, spec, "train").select_columns(TRAIN_COLUMNS)  # as run_training hands it
        for batch in batch_dicts(stream, BATCH, torch.device("cpu"), 256):
            loss = masked_mse(model(batch["dynamic"], batch["static"]), batch["target"]) / var
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            done += 1
            if done == steps:
                break
        write_checkpoint(work / "ckpt", model.eval(), {"model": {"name": "lstm", "params": {}}}, {})
        return model, done * BATCH * 365

    train_r, _ = _stage(size, "train", cell_years, train)

    def infer():
        res_ = run_inference(work / "ckpt", work / "grid.zarr", work / "maps.zarr", (y0, y1))
        return res_, res_.cells * 365 * years

    infer_r, _ = _stage(size, "infer", cell_years, infer)
    return [sim_r, prep_r, stats_r, train_r, infer_r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"RESxYEARS list (default {DEFAULT_SIZES})")
    ap.add_argument("--full", action="store_true", help=f"all of {FULL_SIZES}")
    ap.add_argument("--steps", type=int, default=50, help="training steps of batch 64 per size (default 50)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/xmw-bench-scale"))
    args = ap.parse_args()
    try:
        sizes = parse_sizes(FULL_SIZES if args.full else args.sizes)
    except ValueError as exc:
        ap.error(str(exc))

    import ray

    from xmw_ray.train.runner import LOCAL_SYSTEM_CONFIG, ensure_ray

    took = start_ray(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                     _system_config=LOCAL_SYSTEM_CONFIG)
    ensure_ray()  # quiet Ray Data as xmw does
    print(f"ray.init ({os.cpu_count()} CPUs): {took:.1f} s", flush=True)
    results: list[StageResult] = []
    for res, years in sizes:
        work = claim_work_folder(args.out / f"{res:g}x{years}")
        try:
            results += run_size(work, res, years, args.steps)
        finally:  # a 0.5-degree 16-year world is ~10 GB: never left behind, also when a stage fails
            shutil.rmtree(work, ignore_errors=True)
    ray.shutdown()

    print("\nstage      size    cell-years   seconds   cell-days/s  driver MiB  tree RSS MiB  tree PSS MiB")
    for r in results:
        print(f"{r.stage:9s} {r.size:>7s} {r.cell_years:12,d} {r.seconds:9.1f} {r.rate:13,.0f} {r.driver_mib:11,.0f} "
              f"{r.tree_mib:13,.0f} {r.tree_pss_mib:13,.0f}")
    print("\nlinear fits against cell-years (seconds = fixed + slope x cell-years; peak tree memory likewise, as RSS "
          "summed over processes and as PSS):")
    for stage, line in fit_lines(results).items():
        print(f"  {stage:9s} fixed {line['fixed_s']:6.1f} s, {line['us_per_cell_year']:9.1f} us per cell-year "
              f"(r2 {line['r2']:.3f}); memory RSS {line['mem_base_mib']:7,.0f} MiB + "
              f"{line['mib_per_1000_cell_years']:6.2f}, PSS {line['pss_base_mib']:7,.0f} MiB + "
              f"{line['pss_mib_per_1000_cell_years']:6.2f} MiB per 1,000 cell-years; object store "
              f"{line['plasma_mib_per_1000_cell_years']:+6.2f} MiB per 1,000 cell-years")
        largest = max((r for r in results if r.stage == stage), key=lambda r: r.cell_years)
        print(f"            at {largest.size}: PSS by process {top_roles(largest.roles or {}, 6)}")
    train = [r for r in results if r.stage == "train"]
    if train:
        rates = [r.rate for r in train]
        print(f"  train     {args.steps} steps: {min(rates):,.0f}-{max(rates):,.0f} cell-days/s over the sizes "
              f"(fixed work: should not fall as the store grows)")


if __name__ == "__main__":
    main()
