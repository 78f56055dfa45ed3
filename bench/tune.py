"""Smoke-preset search throughput: trials per hour, and the share of the search's wall time spent in Ray overhead
(trial and worker-group start-up, dataset set-up, checkpoint I/O, scheduling) rather than training epochs.

Reference, measured in the same process: a trial's steady-state epoch (Tune's ``time_this_iter_s`` of its 2nd and
later reports: one epoch of training + validation + its checkpoint report). Training time of the search = sum over
trials of (epochs run x that trial's steady epoch time); overhead = concurrency-weighted wall time minus training.

    .venv/bin/python bench/tune.py --store demo/grid.zarr [--trials 4 --epochs 3] [--no-early-stopping]

``--no-early-stopping`` sets ASHA's grace period to the epochs, so every trial runs all of them: the issue's
overhead goal is for trials of at least a minute, and with the preset's grace period of 1 epoch ASHA stops half
the trials after their first epoch. The median trial length (its reports' ``time_this_iter_s`` summed) is printed,
and the per-trial overhead: each trial's time beyond its epochs at its steady rate, over the trials' time (the
slot-based share also counts slots left idle while the search's last trial runs alone). Not in the per-trial
figure: the trial actor's own process start before its function runs, and the teardown after its last report;
the slot-based share counts both.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True, help="Grid store (e.g. demo/grid.zarr from the README demo)")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=4, help="logical CPUs of the local Ray instance")
    ap.add_argument("--no-early-stopping", action="store_true",
                    help="ASHA grace period = epochs: every trial runs every epoch (trials of a minute or more)")
    args = ap.parse_args()

    import ray
    from measure import start_ray  # bench/ is on the path when run as a script

    start_ray(num_cpus=args.cpus, num_gpus=0, include_dashboard=True, log_to_driver=False)
    out = tempfile.mkdtemp(prefix="xmw_bench_tune_")  # every trial's checkpoints: removed at the end, whatever happens
    try:
        _search(args, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        ray.shutdown()


def _search(args: argparse.Namespace, out: str) -> None:
    """Run the search into ``out`` and print its figures."""
    import ray

    from xmw_ray.config import load_config
    from xmw_ray.tune.search import experiment_path, max_concurrent_trials, restore_or_build

    cfg = load_config(REPO / "configs/tune/smoke.yaml",
                      [f"data.store={args.store}", f"run.output_dir={out}", f"search.num_samples={args.trials}",
                       f"optim.epochs={args.epochs}", "search.evaluate_test=false",
                       *([f"search.grace_period={args.epochs}"] if args.no_early_stopping else [])],
                      require="search")
    slots = max_concurrent_trials(cfg, ray.cluster_resources())
    tuner, _ = restore_or_build(cfg, slots)
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    train = 0.0
    lengths, startup = [], []
    for result in grid:
        df = result.metrics_dataframe
        if df is None or df.empty:
            continue
        lengths.append(float(df["time_this_iter_s"].sum()))
        steady = df["time_this_iter_s"].iloc[1:]
        per_epoch = float(steady.median()) if len(steady) else float(df["time_this_iter_s"].iloc[0])
        train += per_epoch * len(df)
        startup.append(max(0.0, lengths[-1] - per_epoch * len(df)))
    busy = wall * slots  # trial-slot seconds the search held
    n = len(grid)
    print(f"search {experiment_path(cfg)}: {n} trials, {slots} at once, wall {wall:.1f} s")
    print(f"trials per hour: {n / wall * 3600:.1f}")
    if lengths:
        print(f"trial length (reported epochs summed): median {sorted(lengths)[len(lengths) // 2]:.1f} s, "
              f"min {min(lengths):.1f} s, max {max(lengths):.1f} s over {len(lengths)} trials; "
              f"epochs run: {', '.join(str(len(r.metrics_dataframe)) for r in grid if r.metrics_dataframe is not None)}")
    if lengths:
        # inside each trial: its reports' time beyond its epochs at the steady rate (worker group, datasets, the
        # first epoch's warm-up, checkpoint I/O); the slot figure below adds the slots left idle by the search's tail
        print(f"per-trial overhead: {sum(startup):.1f} s of the trials' {sum(lengths):.1f} s "
              f"({sum(startup) / sum(lengths):.1%}); per trial " + ", ".join(
                  f"{o:.1f}/{t:.1f} s" for o, t in zip(startup, lengths, strict=True)))
    print(f"training (steady epochs) {train:.1f} s of {busy:.1f} slot-s; "
          f"Ray overhead share (idle slots included): {max(0.0, 1 - train / busy):.1%}")
    print(f"ratio slot-time / training-time: {busy / train:.2f}x")


if __name__ == "__main__":
    main()
