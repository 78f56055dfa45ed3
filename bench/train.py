"""Ray Train throughput against a plain PyTorch loop, Ray Data ingest from the Grid store, and 1 → 2 workers.

All on one built-in world (``xmw simulate`` at 5°, 12 years, cached under ``/tmp/xmw-bench-train``), one model
(LSTM, ``--hidden``), batch 64 (``--batch-size``), in one process:

- plain: the training samples read once into memory, then a bare PyTorch loop (same model, loss, AdamW, clipping)
  over them for E epochs, ``torch.set_num_threads(threads)``; samples/s of its fastest epoch among 2..E.
- Ray Train: ``run_training`` with 1 worker of ``threads`` CPUs (so torch gets the same threads), streaming from the
  store, E epochs. Training-step samples/s of the fastest epoch among 2..E from the loop's own per-epoch metrics
  (``train_samples`` / ``train_seconds``: the training steps and their data waits, as in the plain loop). The
  whole-epoch figure adds what the plain loop does not do (validation pass, checkpoint, report):
  (time for E epochs - time for 1 epoch) / (E - 1), so start-up is excluded.

The first epoch of each warms up; the fastest of the others is taken on both sides because on a shared machine
other jobs only ever add time (the whole-epoch figure is an average, so it carries that noise). A Ray worker keeps
warming up for two or three epochs (Ray pre-starts idle worker processes beside it), so E defaults to 8: with
E = 4 the same machine measured a training-step ratio of 0.81 where E = 8 gave 0.93.
- Ray Data ingest: one pass of ``iter_batches`` over the training split from the store, no model.
- Scaling: the same figures with 2 workers of 1 CPU each.

Ray is started as ``xmw`` starts a local instance (``runner.LOCAL_SYSTEM_CONFIG``: workers at normal priority,
like the plain loop), without the dashboard. The plain / Ray Train pair runs ``--runs`` times (3), one after the
other; ingest and 2 workers once, after. Prints samples/s, the ratio Ray Train / plain on training steps
(goal >= 0.9 in every run) and on whole epochs, ingest / training consumption (goal >= 10), 2-worker / 1-worker
speed-up, and ends with ``Ray Train/plain training steps: min M, median D, max X``. Each run also prints a profile
of its E-epoch Ray Train run: every epoch's training-step samples/s, and the CPU seconds each process role of the
tree used meanwhile (``measure.CpuByRole``: the driver, the Train controller and worker, Ray's raylet, GCS and
helper actors): on 2 cores whatever Ray's own processes use is taken from the worker.

``--plain-in-actor`` (a profile): the plain loop inside a Ray actor of ``--threads`` CPUs against the same loop in
this process, alternated ``--runs`` times; ends with ``plain loop in a Ray actor / in this process: min, median,
max``. ``--plain-in-thread`` (a profile): the plain loop on a second Python thread against the main thread (main
first), alternated; Ray Train V2 runs the training function on such a thread.
``--startup`` (a profile): the wall time of a whole 1-epoch, 1-worker run with Train's controller polling at Ray's
default interval (2 s) against ``runner.TRAIN_POLL_INTERVAL_S``, alternated ``--runs`` times after a warm-up run;
ends with ``1-epoch run wall time, poll 0.2 s / 2.0 s: min, median, max`` (below 1: the shorter interval is faster).

With ``--use-gpu`` both sides run on the one CUDA device (bfloat16 autocast, as ``optim.amp`` does): the plain loop
keeps its samples on the GPU, the Ray Train worker gets 1 GPU; ingest is measured, the 2-worker case is skipped.

    .venv/bin/python bench/train.py [--hidden 64] [--epochs 8] [--runs 3] [--use-gpu] [--in-memory] [--plain-in-actor] [--plain-in-thread] [--startup]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE = Path(tempfile.gettempdir()) / "xmw-bench-train"
YEARS = (1995, 2006)
#: Ray Train V2's own controller poll interval (``DEFAULT_HEALTH_CHECK_INTERVAL_S``), the ``--startup`` reference.
RAY_DEFAULT_POLL_S = "2.0"


def world() -> Path:
    from xmw_ray.data.grid_store import prepare_grid
    from xmw_ray.sim.world import SimulationSpec, simulate

    store = CACHE / "grid.zarr"
    if not store.exists():
        simulate(SimulationSpec(out=CACHE / "world", res=5.0, years=YEARS, sites=0, seed=0), log=lambda m: None)
        prepare_grid(CACHE / "world", store)
    return store


def cfg_for(store: Path, hidden: int, epochs: int, workers: int, cpus: float, name: str, use_gpu: bool = False,
            batch: int = 64, in_memory: bool = False):
    from xmw_ray.config import TrainConfig, validate

    return validate({
        "data": {"source": "grid", "store": str(store), "batch_size": batch, "shuffle_buffer": 0, "in_memory": in_memory,
                 "split": {"kind": "temporal", "train_years": [1995, 2003], "test_years": [2004, 2006],
                           "val_fraction": 0.05}},
        "model": {"name": "lstm", "params": {"hidden_size": hidden, "num_layers": 2, "dropout": 0.0}},
        "optim": {"epochs": epochs, "patience": 100, "scheduler": "none"},
        "resources": {"num_workers": workers, "cpus_per_worker": cpus, "use_gpu": use_gpu},
        "run": {"output_dir": str(CACHE / "runs"), "name": f"{name}-{time.time_ns()}"},
    }, TrainConfig)


def plain_loop(cfg, threads: int, epochs: int, use_gpu: bool = False) -> tuple[float, int]:
    """A bare PyTorch loop over in-memory samples (on the GPU with ``use_gpu``, bfloat16 autocast): (samples/s of
    the fastest epoch among 2..E, samples per epoch)."""
    import torch

    from xmw_ray.data import schema
    from xmw_ray.data.ray_datasets import build_datasets
    from xmw_ray.models import build_model
    from xmw_ray.train.losses import masked_mse

    torch.set_num_threads(threads)
    ds = build_datasets(cfg.data)
    rows = ds.train.take_all()
    device = torch.device("cuda" if use_gpu else "cpu")
    dyn = torch.tensor(np.stack([r[schema.DYNAMIC] for r in rows]), device=device)
    stat = torch.tensor(np.stack([r[schema.STATIC] for r in rows]), device=device)
    y = torch.tensor(np.stack([r[schema.TARGET] for r in rows]), device=device)
    model = build_model("lstm", ds.n_dynamic, ds.n_static, norm=ds.norm, **cfg.model.params).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    var = float(model.target_std) ** 2
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for i in range(0, len(rows), cfg.data.batch_size):
            sl = slice(i, i + cfg.data.batch_size)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_gpu):
                loss = masked_mse(model(dyn[sl], stat[sl]).float(), y[sl]) / var
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        if use_gpu:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    return len(rows) / min(seconds[1:]), len(rows)


def ray_train(store: Path, hidden: int, epochs: int, workers: int, cpus: float,
              use_gpu: bool = False, **data: object) -> tuple[float, float | None, dict]:
    """(training-step samples/s of the fastest epoch among 2..E from the loop's metrics, whole-epoch samples/s or
    None where the E-epoch run was not at least 0.5 s longer than the 1-epoch run, a profile of the E-epoch run:
    each epoch's training-step samples/s and the CPU seconds by process role)."""
    from measure import CpuByRole  # bench/ is on the path when run as a script

    from xmw_ray.train.runner import run_training

    t0 = time.perf_counter()
    run_training(cfg_for(store, hidden, 1, workers, cpus, "one", use_gpu, **data))
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    with CpuByRole() as cpu:
        out = run_training(cfg_for(store, hidden, epochs, workers, cpus, "many", use_gpu, **data))
    many = time.perf_counter() - t0
    per_epoch = [h["train_samples"] / h["train_seconds"] for h in out.history]
    profile = {"epoch_samples_s": [round(x, 1) for x in per_epoch], "run_wall_s": round(cpu.wall, 1),
               "cpu_s_by_role": {k: round(v, 1) for k, v in sorted(cpu.by_role.items(), key=lambda kv: -kv[1])}}
    profile["one_epoch_run_s"], profile["many_epoch_run_s"] = round(one, 2), round(many, 2)
    return max(per_epoch[1:]), whole_epoch_rate(out.history[-1]["train_samples"], epochs, one, many), profile


def whole_epoch_rate(samples: int, epochs: int, one_epoch_run_s: float, many_epoch_run_s: float,
                     min_difference_s: float = 0.5) -> float | None:
    """Samples/s of whole epochs (training, validation, checkpoint, report): ``epochs - 1`` epochs over the
    difference of an ``epochs``-epoch run and a 1-epoch run, so that start-up cancels. None where that difference is
    under ``min_difference_s``: with short epochs (0.3 s on a GPU) start-up varies by more than ``epochs - 1`` of
    them and the difference says nothing (it came out negative on an H200)."""
    extra = many_epoch_run_s - one_epoch_run_s
    return samples * (epochs - 1) / extra if extra >= min_difference_s else None


def rounded(x: float | None, digits: int) -> float | None:
    """``round`` that passes None (a figure that could not be measured) through."""
    return None if x is None else round(x, digits)


def ingest(cfg) -> float:
    from xmw_ray.data.ray_datasets import sample_dataset, store_info

    ds = sample_dataset(store_info(cfg.data.store, "grid"), cfg.data.split, "train")
    t0 = time.perf_counter()
    n = sum(len(b["year"]) for b in ds.iter_batches(batch_size=64, batch_format="numpy", prefetch_batches=4))
    return n / (time.perf_counter() - t0)


def alternate(runs: int, first: Callable[[], float], second: Callable[[], float], names: tuple[str, str],
              unit: str, summary: str) -> None:
    """``first`` then ``second``, ``runs`` times (both see the same machine state each time): print each pair and
    ``second / first``, then ``summary: min M, median D, max X`` of those ratios."""
    ratios = []
    for i in range(runs):
        a, b = first(), second()
        ratios.append(b / a)
        print(f"run {i + 1}: {names[0]} {a:.1f} {unit}, {names[1]} {b:.1f} {unit}: ratio {ratios[-1]:.3f}",
              flush=True)
    ratios.sort()
    print(f"{summary}: min {ratios[0]:.2f}, median {float(np.median(ratios)):.2f}, max {ratios[-1]:.2f}")


def actor_vs_driver(cfg, threads: int, epochs: int, runs: int) -> None:
    """The plain loop in a Ray actor of ``threads`` CPUs (torch sized to them, as a Ray Train worker is) against
    the same loop here, alternated ``runs`` times: a ratio near 1 clears the Ray worker process (its environment,
    threads, affinity) and leaves Ray Train's own loop as the slower part."""
    import ray

    @ray.remote(num_cpus=threads)
    class PlainBox:
        def run(self, cfg) -> float:
            from xmw_ray.train.resources import use_assigned_cpus

            use_assigned_cpus()
            return plain_loop(cfg, threads, epochs)[0]

    box = PlainBox.remote()
    alternate(runs, lambda: plain_loop(cfg, threads, epochs)[0], lambda: ray.get(box.run.remote(cfg)),
              ("plain loop in this process", f"in a {threads}-CPU Ray actor"), "samples/s",
              "plain loop in a Ray actor / in this process")


def thread_vs_main(cfg, threads: int, epochs: int, runs: int) -> None:
    """The plain loop on a second Python thread against the main thread, alternated ``runs`` times, the main thread
    first (as in a Ray Train V2 worker, whose main thread exists before its training thread)."""
    import threading

    def on_thread() -> float:
        got: dict[str, float] = {}
        t = threading.Thread(target=lambda: got.update(sps=plain_loop(cfg, threads, epochs)[0]))
        t.start()
        t.join()
        return got["sps"]

    alternate(runs, lambda: plain_loop(cfg, threads, epochs)[0], on_thread,
              ("plain loop on the main thread", "on a second thread"), "samples/s",
              "plain loop on a second thread / on the main thread")


def startup(store: Path, hidden: int, threads: int, runs: int, **data: object) -> None:
    """Wall time of a whole 1-epoch, 1-worker ``run_training`` (driver set-up, Train controller and worker start,
    the epoch, checkpoint, shut-down) with Train's controller polling its workers at Ray's default interval against
    the interval ``ensure_ray`` sets (``runner.TRAIN_POLL_INTERVAL_S``), alternated ``runs`` times after one
    warm-up run. ``TorchTrainer.fit`` reads the interval from this process's environment on every call."""
    from xmw_ray.train.runner import TRAIN_POLL_ENV, TRAIN_POLL_INTERVAL_S, run_training

    def one_run(interval: str) -> float:
        os.environ[TRAIN_POLL_ENV] = interval
        t0 = time.perf_counter()
        run_training(cfg_for(store, hidden, 1, 1, threads, f"startup-{interval}", **data))
        return time.perf_counter() - t0

    one_run(TRAIN_POLL_INTERVAL_S)  # warm-up: the first run in a fresh Ray instance also starts its pools
    alternate(runs, lambda: one_run(RAY_DEFAULT_POLL_S), lambda: one_run(TRAIN_POLL_INTERVAL_S),
              (f"poll every {RAY_DEFAULT_POLL_S} s", f"every {TRAIN_POLL_INTERVAL_S} s"), "s",
              f"1-epoch run wall time, poll {TRAIN_POLL_INTERVAL_S} s / {RAY_DEFAULT_POLL_S} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="plain vs Ray Train comparisons, one after the other")
    ap.add_argument("--use-gpu", action="store_true", help="both sides on the CUDA device (1 GPU worker)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--in-memory", action="store_true",
                    help="data.in_memory for the Ray worker: its shard kept (on its device) after the first epoch")
    ap.add_argument("--no-extras", action="store_true", help="skip the ingest and 2-worker measurements")
    ap.add_argument("--plain-in-actor", action="store_true",
                    help="profile: the plain loop in a Ray actor of --threads CPUs against the same loop in this "
                         "process (is the Ray worker process, or Ray Train's loop, the slower part?)")
    ap.add_argument("--plain-in-thread", action="store_true",
                    help="profile: the plain loop in a second Python thread (Ray Train V2 runs the training function "
                         "in a thread of its worker) against the same loop on this process's main thread")
    ap.add_argument("--startup", action="store_true",
                    help="profile: wall time of a 1-epoch run with Train's controller polling at Ray's default "
                         "interval against the project's (runner.TRAIN_POLL_INTERVAL_S), alternated --runs times")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first epoch is excluded as warm-up)")
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    from xmw_ray.infer.plots import usable_cores
    from xmw_ray.train.runner import LOCAL_SYSTEM_CONFIG, ensure_ray

    if args.use_gpu:
        from measure import require_cuda  # bench/ is on the path when run as a script

        require_cuda(ap)
    store = world()
    from measure import start_ray  # bench/ is on the path when run as a script

    start_ray(num_cpus=4, num_gpus=1 if args.use_gpu else 0, include_dashboard=False, logging_level="WARNING",
              log_to_driver=False, _system_config=LOCAL_SYSTEM_CONFIG)
    ensure_ray()
    data = {"batch": args.batch_size, "in_memory": args.in_memory}
    cfg = cfg_for(store, args.hidden, 1, 1, args.threads, "plain", **data)
    if args.plain_in_actor:
        actor_vs_driver(cfg, args.threads, args.epochs, args.runs)
        return
    if args.plain_in_thread:
        thread_vs_main(cfg, args.threads, args.epochs, args.runs)
        return
    if args.startup:
        startup(store, args.hidden, args.threads, args.runs, **data)
        return
    runs = []
    for i in range(args.runs):  # plain then Ray Train, each time: both sides see the same machine state
        plain_sps, n = plain_loop(cfg, args.threads, args.epochs, args.use_gpu)
        one, one_epoch, profile = ray_train(store, args.hidden, args.epochs, 1, args.threads, args.use_gpu, **data)
        runs.append({"plain_samples_s": round(plain_sps, 1), "ray_train_1w_samples_s": round(one, 1),
                     "ratio_ray_vs_plain": round(one / plain_sps, 3),
                     "ray_train_1w_whole_epoch_samples_s": rounded(one_epoch, 1),
                     "ratio_whole_epoch_vs_plain": rounded(one_epoch and one_epoch / plain_sps, 3),
                     "profile": profile})
        print(f"run {i + 1}: {json.dumps(runs[-1])}", flush=True)
        roles = profile["cpu_s_by_role"]
        cores = usable_cores()
        print(f"  profile: Ray epochs {profile['epoch_samples_s']} samples/s; CPU seconds during the "
              f"{profile['run_wall_s']} s run ({cores * profile['run_wall_s']:.0f} core-seconds on {cores} cores): "
              + ", ".join(f"{k} {v}" for k, v in list(roles.items())[:6]), flush=True)
    out = {"train_samples": n, "hidden": args.hidden, "epochs": args.epochs, "use_gpu": args.use_gpu, **data,
           "runs": runs}
    if not args.no_extras:
        ingest_sps = ingest(cfg)
        out.update({"ray_data_ingest_samples_s": round(ingest_sps, 1),
                    "ingest_vs_training": round(ingest_sps / one, 1)})
        if not args.use_gpu:  # one GPU here: two GPU workers would need two
            two, two_epoch, _ = ray_train(store, args.hidden, args.epochs, 2, 1, **data)
            out.update({"ray_train_2w_samples_s": round(two, 1), "speedup_2w_vs_1w": round(two / one, 3),
                        "ray_train_2w_whole_epoch_samples_s": rounded(two_epoch, 1),
                        "speedup_2w_vs_1w_whole_epoch": rounded(two_epoch and one_epoch and two_epoch / one_epoch,
                                                                3)})
    print(json.dumps(out, indent=1))
    ratios = sorted(r["ratio_ray_vs_plain"] for r in runs)
    print(f"Ray Train/plain training steps: min {ratios[0]:.2f}, median {float(np.median(ratios)):.2f}, "
          f"max {ratios[-1]:.2f}")


if __name__ == "__main__":
    try:
        main()
    finally:  # every run's checkpoints (the cached world and store stay for the next bench)
        shutil.rmtree(CACHE / "runs", ignore_errors=True)
