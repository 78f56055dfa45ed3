"""Ray Train throughput against a plain PyTorch loop, Ray Data ingest from the Grid store, and 1 → 2 workers.

All on one built-in world (``xmw simulate`` at 5°, 12 years, cached under ``/tmp/xmw-bench-train``), one model
(LSTM, ``--hidden``), batch 64, in one process:

- plain: the training samples read once into memory, then a bare PyTorch loop (same model, loss, AdamW, clipping)
  over them for one epoch, ``torch.set_num_threads(threads)``.
- Ray Train: ``run_training`` with 1 worker of ``threads`` CPUs (so torch gets the same threads), streaming from the
  store. Steady-state epoch time = (time for E epochs - time for 1 epoch) / (E - 1): start-up excluded.
- Ray Data ingest: one pass of ``iter_batches`` over the training split from the store, no model.
- Scaling: the same steady-state epoch time with 2 workers of 1 CPU each.

Prints samples/s, the ratio Ray Train / plain (goal >= 0.9), ingest / training consumption (goal >= 10),
and 2-worker / 1-worker speed-up.

    .venv/bin/python bench/train.py [--hidden 64] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path(tempfile.gettempdir()) / "xmw-bench-train"
YEARS = (1995, 2006)


def world() -> Path:
    from xmw_ray.data.grid_store import prepare_grid
    from xmw_ray.sim.world import SimulationSpec, simulate

    store = CACHE / "grid.zarr"
    if not store.exists():
        simulate(SimulationSpec(out=CACHE / "world", res=5.0, years=YEARS, sites=0, seed=0), log=lambda m: None)
        prepare_grid(CACHE / "world", store)
    return store


def cfg_for(store: Path, hidden: int, epochs: int, workers: int, cpus: float, name: str):
    from xmw_ray.config import TrainConfig, validate

    return validate({
        "data": {"source": "grid", "store": str(store), "batch_size": 64, "shuffle_buffer": 0,
                 "split": {"kind": "temporal", "train_years": [1995, 2003], "test_years": [2004, 2006],
                           "val_fraction": 0.05}},
        "model": {"name": "lstm", "params": {"hidden_size": hidden, "num_layers": 2, "dropout": 0.0}},
        "optim": {"epochs": epochs, "patience": 100, "scheduler": "none"},
        "resources": {"num_workers": workers, "cpus_per_worker": cpus},
        "run": {"output_dir": str(CACHE / "runs"), "name": f"{name}-{time.time_ns()}"},
    }, TrainConfig)


def plain_loop(cfg, threads: int) -> tuple[float, int]:
    """One epoch of a bare PyTorch loop over in-memory samples: samples/s."""
    import torch

    from xmw_ray.data import schema
    from xmw_ray.data.ray_datasets import build_datasets
    from xmw_ray.models import build_model
    from xmw_ray.train.losses import masked_mse

    torch.set_num_threads(threads)
    ds = build_datasets(cfg.data)
    rows = ds.train.take_all()
    dyn = torch.tensor(np.stack([r[schema.DYNAMIC] for r in rows]))
    stat = torch.tensor(np.stack([r[schema.STATIC] for r in rows]))
    y = torch.tensor(np.stack([r[schema.TARGET] for r in rows]))
    model = build_model("lstm", ds.n_dynamic, ds.n_static, norm=ds.norm, **cfg.model.params)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    var = float(model.target_std) ** 2
    t0 = time.perf_counter()
    for i in range(0, len(rows), cfg.data.batch_size):
        sl = slice(i, i + cfg.data.batch_size)
        loss = masked_mse(model(dyn[sl], stat[sl]), y[sl]) / var
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return len(rows) / (time.perf_counter() - t0), len(rows)


def ray_epoch_seconds(store: Path, hidden: int, epochs: int, workers: int, cpus: float) -> float:
    from xmw_ray.train.runner import run_training

    t0 = time.perf_counter()
    run_training(cfg_for(store, hidden, 1, workers, cpus, "one"))
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_training(cfg_for(store, hidden, epochs, workers, cpus, "many"))
    many = time.perf_counter() - t0
    return (many - one) / (epochs - 1)


def ingest(cfg) -> float:
    from xmw_ray.data.ray_datasets import sample_dataset, store_info

    ds = sample_dataset(store_info(cfg.data.store, "grid"), cfg.data.split, "train")
    t0 = time.perf_counter()
    n = sum(len(b["year"]) for b in ds.iter_batches(batch_size=64, batch_format="numpy", prefetch_batches=4))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import ray

    from xmw_ray.train.runner import ensure_ray

    store = world()
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ensure_ray()
    cfg = cfg_for(store, args.hidden, 1, 1, args.threads, "plain")
    plain_sps, n = plain_loop(cfg, args.threads)
    ingest_sps = ingest(cfg)
    one = n / ray_epoch_seconds(store, args.hidden, args.epochs, 1, args.threads)
    two = n / ray_epoch_seconds(store, args.hidden, args.epochs, 2, 1)
    out = {"train_samples": n, "hidden": args.hidden, "plain_samples_s": round(plain_sps, 1),
           "ray_train_1w_samples_s": round(one, 1), "ratio_ray_vs_plain": round(one / plain_sps, 3),
           "ray_data_ingest_samples_s": round(ingest_sps, 1), "ingest_vs_training": round(ingest_sps / one, 1),
           "ray_train_2w_samples_s": round(two, 1), "speedup_2w_vs_1w": round(two / one, 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
