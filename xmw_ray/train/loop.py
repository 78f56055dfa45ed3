"""The one ``train_loop_per_worker``: DDP model, streamed shards, masked loss, AdamW, clipping, cosine schedule,
bfloat16 autocast on GPU, early stopping on the validation split, a report (and rank-0 checkpoint) every epoch.
Each epoch's metrics carry ``train_seconds`` (wall time of its training steps, data waits included; validation
and checkpointing excluded), ``train_samples`` (all workers) and ``skipped_batches``, for throughput figures.

The loss is the masked MSE divided by the target variance (``target_std``² from the training split), so learning
rates mean the same thing whatever the flux magnitude; predictions stay in mg CH4 m-2 d-1.

Transfer hooks (general, used by ``xmw_ray/transfer``): a ``"source"`` dataset shard streams alongside the
training shard (one epoch = one pass over the source, the training shard cycled) and an ``objective`` (see
:class:`Objective`) replaces the plain loss with its own terms and may add trainable modules (a discriminator),
whose weights travel in the training state for resuming.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch

from xmw_ray.config import TrainConfig
from xmw_ray.data import schema
from xmw_ray.data.features import FeatureSet
from xmw_ray.models import build_model
from xmw_ray.models.base import resolve_output_constraint
from xmw_ray.models.checkpoint import load_model_state, load_train_state, unwrap, write_checkpoint
from xmw_ray.train.losses import masked_mse
from xmw_ray.train.progress import report_epoch
from xmw_ray.train.resources import use_assigned_cpus


def _device() -> torch.device:
    return ray.train.torch.get_device()


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over all workers (no-op in a single process)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def skip_everywhere(loss: torch.Tensor, device: torch.device) -> bool:
    """True when ``loss`` is non-finite on ANY worker, so every worker skips the step together.

    Under DDP each ``backward`` all-reduces the gradients: a batch skipped on one rank but not on another would
    pair different steps' gradients (or hang), so the skip is a collective decision (one extra tiny all-reduce
    per step, only when there are several workers).
    """
    bad = (~torch.isfinite(loss.detach())).to(torch.float32).reshape(1).to(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(bad)
    return bool(bad.item() > 0)


#: Optional per-sample loss weight column of a training dataset (``masked_mse``'s ``weight``).
WEIGHT_COLUMN = "weight"


class Objective:
    """A training loss a strategy provides instead of the plain masked MSE (picklable: it crosses to workers).

    ``modules`` returns extra trainable modules (optimised with the model, not part of the saved model);
    ``loss`` gets the DDP-wrapped ``model`` (call it, so gradients synchronise), its bare module, the extra
    modules (also wrapped), the training batch and the paired source batch (dicts of tensors, or None),
    the training progress in [0, 1] (per step when the runner knows the steps per epoch: ``training_progress``)
    and the epoch; it returns the loss and scalars to log.
    """

    def modules(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {}

    def loss(self, model: torch.nn.Module, bare: torch.nn.Module, extras: dict[str, torch.nn.Module],
             batch: dict[str, torch.Tensor], source: dict[str, torch.Tensor] | None, progress: float,
             epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


def training_progress(epoch: int, step: int, epochs: int, steps_per_epoch: int | None) -> float:
    """Fraction of the run's optimisation steps done before this step, in [0, 1].

    Per step when the steps per epoch are known (Ganin et al.'s λ schedule moves every step), else per epoch.
    Derived from the epoch, not counted, so a resumed run continues the same schedule."""
    within = min(step / steps_per_epoch, 1.0) if steps_per_epoch else 0.0
    return min((epoch + within) / max(epochs, 1), 1.0)


def shuffle_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The local shuffle's seed for one worker (``seed`` = run seed and rank), epoch and stream (0: the training
    shard, 1: a paired source): fixed, so a re-run shuffles alike, yet different every epoch."""
    return (seed * 100_003 + epoch) * 4 + stream


def batch_dicts(shard: Any, batch_size: int, device: torch.device, shuffle_buffer: int = 0, seed: int = 0):
    """Batches as dicts of float tensors (every column the shard carries, e.g. a per-sample ``weight``); the local
    shuffle is seeded with ``seed`` (the blocks arrive in a fixed order: ``runner.ordered_ingest``).

    The tensors are made here, on the training thread, from Ray Data's numpy batches: ``iter_torch_batches``
    converts on Ray Data's prefetch thread, and torch work on a second thread beside the training thread cost a
    2-CPU worker about a fifth of its speed (``bench/train.py --plain-in-thread`` and ``--in-memory``, README)."""
    kwargs: dict[str, Any] = {"batch_size": batch_size, "batch_format": "numpy", "prefetch_batches": 2,
                              "drop_last": False}
    if shuffle_buffer:
        kwargs["local_shuffle_buffer_size"] = shuffle_buffer
        kwargs["local_shuffle_seed"] = seed
    for batch in shard.iter_batches(**kwargs):
        yield {k: _tensor(v, device) for k, v in batch.items()}


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float32 tensor of one batch column. Ray Data's arrays may be read-only views, which torch would share
    and warn about; those are copied first (the same values, no warning on the user's terminal)."""
    if not array.flags.writeable:
        array = np.array(array, dtype=np.float32)
    return torch.as_tensor(array, dtype=torch.float32).to(device)


class ShardCache:
    """A worker's shard kept in memory after its first full pass (``data.in_memory``).

    Why: for a small store (the Site store: tens of tower-years) re-running the Ray Data pipeline every epoch
    costs far more than the epoch's training. The first pass streams as usual; later passes are seeded
    permutations of the kept samples (or the kept order, for evaluation) in batches of the same size.
    """

    def __init__(self, shard: Any, seed: int) -> None:
        self.shard = shard
        self.seed = seed
        self._kept: dict[str, torch.Tensor] | None = None

    def batches(self, batch_size: int, device: torch.device, shuffle_buffer: int, epoch: int, shuffle: bool):
        if self._kept is None:
            got = []
            for batch in batch_dicts(self.shard, batch_size, device, shuffle_buffer, shuffle_seed(self.seed, epoch)):
                got.append(batch)
                yield batch
            self._kept = {k: torch.cat([b[k] for b in got]) for k in got[0]} if got else {}
            return
        n = len(next(iter(self._kept.values()))) if self._kept else 0
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
                 if shuffle else torch.arange(n))
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size].to(device)
            yield {k: v[idx] for k, v in self._kept.items()}


def _dicts(shard: Any, batch_size: int, device: torch.device, shuffle_buffer: int, epoch: int = 0,
           shuffle: bool = True, seed: int = 0):
    """Batches of a Ray Data shard, or of a :class:`ShardCache` (which carries its own seed)."""
    if isinstance(shard, ShardCache):
        yield from shard.batches(batch_size, device, shuffle_buffer, epoch, shuffle)
    else:
        yield from batch_dicts(shard, batch_size, device, shuffle_buffer, shuffle_seed(seed, epoch))


def _paired_steps(train_shard: Any, source_shard: Any | None, batch_size: int, device: torch.device,
                  shuffle_buffer: int, epoch: int = 0, seed: int = 0):
    """``(batch, source_batch)`` pairs: the source drives the epoch, the training shard is cycled beside it.

    The cycled shard is the small side (observations): it is read once per epoch BEFORE the source streams (two
    pipelines at once starve each other of CPUs) and its batches are replayed in a fresh random order.
    """
    if source_shard is None:
        for batch in _dicts(train_shard, batch_size, device, shuffle_buffer, epoch, seed=seed):
            yield batch, None
        return
    kept = list(_dicts(train_shard, batch_size, device, shuffle_buffer, epoch, seed=seed))
    if not kept:
        return
    replay: list[int] = []
    for src in batch_dicts(source_shard, batch_size, device, shuffle_buffer, shuffle_seed(seed, epoch, stream=1)):
        if not replay:
            replay = torch.randperm(len(kept)).tolist()
        yield kept[replay.pop()], src


def _batches(shard: Any, batch_size: int, device: torch.device, shuffle_buffer: int = 0):
    for batch in _dicts(shard, batch_size, device, shuffle_buffer, shuffle=False):
        yield batch[schema.DYNAMIC], batch[schema.STATIC], batch[schema.TARGET]


def evaluate_shard(model: torch.nn.Module, shard: Any, batch_size: int, device: torch.device,
                   target_var: float) -> dict[str, float]:
    """Pooled validation loss and NSE over all workers' shards (sums all-reduced, so every rank agrees)."""
    model.eval()
    sse = n = sy = syy = 0.0
    with torch.no_grad():
        for dyn, stat, y in _batches(shard, batch_size, device):
            pred = model(dyn, stat).float()
            mask = ~torch.isnan(y)
            d = (pred - torch.nan_to_num(y))[mask]
            yo = y[mask].double()
            sse += float((d.double() ** 2).sum())
            n += float(mask.sum())
            sy += float(yo.sum())
            syy += float((yo**2).sum())
    sse, n, sy, syy = _all_reduce([sse, n, sy, syy], device)
    if n == 0:
        return {"val_loss": float("nan"), "val_nse": float("nan"), "val_n": 0}
    sst = syy - sy * sy / n
    return {"val_loss": sse / n / target_var, "val_nse": 1.0 - sse / sst if sst > 0 else float("nan"),
            "val_n": int(n)}


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a training worker needs, typed and frozen (Ray pickles it to each worker): the validated run
    config (``model.output_constraint`` already resolved by the runner) plus what the driver derived from the data
    and the strategy. Its defaults are those of a plain training run."""

    config: TrainConfig
    n_dynamic: int
    n_static: int
    #: Normalisation statistics the model is built with (``normstats``: means, stds, ``target_min`` ...).
    norm: dict[str, Any]
    #: What the model's inputs mean, saved with every checkpoint; None for a store prepared before descriptors.
    features: FeatureSet | None = None
    #: Transfer: the ``state_dict`` to start from (a pretrained model's weights).
    init_state: dict[str, Any] | None = None
    #: Model parts (attribute names) whose weights stay fixed.
    freeze: tuple[str, ...] = ()
    #: Replaces the plain masked MSE (:class:`Objective`).
    objective: Objective | None = None
    #: A ``"source"`` dataset shard streams beside the training shard.
    paired: bool = False
    #: Optimisation steps per epoch, when known (the objective's progress then advances every step).
    steps_per_epoch: int | None = None
    #: Keep the validation shard in memory after its first pass.
    cache_val: bool = False
    #: Local mode: where checkpoints are written (Ray keeps none of its own there) ...
    local_checkpoint_root: str | None = None
    #: ... and the one to resume from.
    resume_dir: str | None = None
    #: The queue the rank-0 worker reports each epoch to (``train.progress``); None: nobody is watching.
    epoch_queue: Any = None


@contextlib.contextmanager
def checkpoint_folder(local_root: str | None, epoch: int) -> Iterator[str]:
    """Where an epoch's checkpoint is written: in local mode the run folder's ``epoch_NNNN`` (kept: local mode
    persists nothing itself); on workers a temporary folder that Ray uploads to run storage before ``report``
    returns, removed afterwards, also when writing or the upload fails (a full disk, a storage error: every retry
    of a run left a copy of the model and optimiser state otherwise)."""
    if local_root:
        yield f"{local_root}/epoch_{epoch:04d}"
        return
    directory = tempfile.mkdtemp(prefix="xmw_ckpt_")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def reading_checkpoint(ckpt: ray.train.Checkpoint) -> Iterator[str]:
    """A Ray checkpoint's folder while the block runs: in place on local storage; from an object store, a download
    into a temporary folder that is removed on exit whatever happens. Ray's own ``as_directory`` leaves its
    download folder, a lock file beside it and lock files under ``_ray_lockfiles`` in the temporary folder when
    the download fails, and lock files on every call (one run's resume and publish left several). Unlike Ray's,
    workers on one node do not share a download: each reads its own copy of the (small) checkpoint on resume."""
    import pyarrow.fs

    if isinstance(ckpt.filesystem, pyarrow.fs.LocalFileSystem):
        yield ckpt.path
        return
    with tempfile.TemporaryDirectory(prefix="xmw-checkpoint-") as tmp:
        # 64 MiB parts as Ray's own download: pyarrow's 1 MiB default is one ranged GET per MiB of optimiser state
        pyarrow.fs.copy_files(ckpt.path, tmp, source_filesystem=ckpt.filesystem, chunk_size=64 * 2**20)
        yield tmp


def train_loop_per_worker(spec: WorkerSpec) -> None:
    """Ray Train entry point (bound to its :class:`WorkerSpec` by the runner)."""
    cfg = spec.config
    optim_cfg, data_cfg, run_cfg = cfg.optim, cfg.data, cfg.run
    use_assigned_cpus()  # resources.cpus_per_worker threads, whatever OMP_NUM_THREADS the worker inherited
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    worker_seed = run_cfg.seed * 1000 + rank  # weights, dropout, replay order and local shuffles
    torch.manual_seed(worker_seed)
    np.random.seed(worker_seed)
    device = _device()

    constraint = resolve_output_constraint(cfg.model.output_constraint,
                                           spec.norm.get("target_min"))  # the runner resolved ``auto``
    model = build_model(cfg.model.name, spec.n_dynamic, spec.n_static,
                        norm=spec.norm, output_constraint=constraint, **cfg.model.params)
    if spec.features is not None:  # what its inputs mean: saved with every checkpoint
        model.features = spec.features
    if spec.init_state is not None:  # transfer: start from a pretrained model's weights
        model.load_state_dict(spec.init_state)
    for part in spec.freeze:
        for p in getattr(model, part).parameters():
            p.requires_grad_(False)

    objective = spec.objective
    extras = objective.modules(model) if objective is not None else {}
    params = [p for p in model.parameters() if p.requires_grad]
    params += [p for m in extras.values() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    epochs = optim_cfg.epochs
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
             if optim_cfg.scheduler == "cosine" else None)
    start_epoch, best, stale, history = 0, math.inf, 0, []

    ckpt = ray.train.get_checkpoint()
    state = None
    # Ray's checkpoint (in place, or a download deleted afterwards); in local mode the run folder's latest
    source = reading_checkpoint(ckpt) if ckpt is not None else contextlib.nullcontext(spec.resume_dir)
    with source as resume_dir:
        if resume_dir:
            state = load_train_state(resume_dir)
            model.load_state_dict(load_model_state(resume_dir))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        start_epoch, best, stale = state["epoch"] + 1, state["best_val_loss"], state["stale"]
        history = list(state.get("history", []))
        for name, m in extras.items():
            m.load_state_dict(state["extras"][name])

    model = ray.train.torch.prepare_model(model)
    extras = {name: ray.train.torch.prepare_model(m) for name, m in extras.items()}
    bare = unwrap(model)
    target_var = float(bare.target_std) ** 2
    use_amp = optim_cfg.amp and device.type == "cuda"
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    source_shard = ray.train.get_dataset_shard("source") if spec.paired else None
    if data_cfg.in_memory:
        train_shard = ShardCache(train_shard, seed=worker_seed)
    if spec.cache_val:  # small validation part: decode its chunks once, not every epoch
        val_shard = ShardCache(val_shard, seed=0)

    for epoch in range(start_epoch, epochs):
        model.train()
        for m in extras.values():
            m.train()
        tot, nb, seen, skipped = 0.0, 0, 0, 0
        terms: dict[str, float] = {}
        started = time.perf_counter()
        for step, (batch, src) in enumerate(_paired_steps(train_shard, source_shard, data_cfg.batch_size, device,
                                                          data_cfg.shuffle_buffer, epoch, worker_seed)):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                if objective is None:
                    y = batch[schema.TARGET]
                    pred = model(batch[schema.DYNAMIC], batch[schema.STATIC])
                    loss = masked_mse(pred.float(), y, batch.get(WEIGHT_COLUMN)) / target_var
                    logged: dict[str, float] = {}
                else:
                    progress = training_progress(epoch, step, epochs, spec.steps_per_epoch)
                    loss, logged = objective.loss(model, bare, extras, batch, src, progress, epoch)
            seen += len(batch[schema.TARGET])
            if skip_everywhere(loss, device):  # diverged (masked_mse gives 0, not NaN, with no observed day)
                skipped += 1
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, optim_cfg.grad_clip)
            opt.step()
            tot += float(loss.detach())
            nb += 1
            for k, v in logged.items():
                terms[k] = terms.get(k, 0.0) + float(v)
        train_seconds = time.perf_counter() - started
        if sched is not None:
            sched.step()
        train_loss = _all_reduce([tot, float(nb), float(seen)], device)
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss[0] / max(train_loss[1], 1.0),
                                   "train_seconds": train_seconds, "train_samples": int(train_loss[2]),
                                   "skipped_batches": skipped}
        metrics.update({k: v / max(nb, 1) for k, v in terms.items()})
        metrics.update(evaluate_shard(model, val_shard, data_cfg.batch_size * 4, device, target_var))
        val = metrics["val_loss"]
        improved = math.isfinite(val) and val < best
        if improved:
            best, stale = val, 0
        elif metrics.get("val_n"):  # no validation part: no early stopping, every epoch trains
            stale += 1
        metrics["best_val_loss"] = best
        should_stop = stale >= optim_cfg.patience or epoch == epochs - 1
        metrics["done"] = should_stop
        history.append(dict(metrics))
        train_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict() if sched else None,
                       "epoch": epoch, "best_val_loss": best, "stale": stale, "history": history,
                       "extras": {name: unwrap(m).state_dict() for name, m in extras.items()}}
        # A checkpoint when validation improves, every ``checkpoint_every`` epochs (resume points) and at the end.
        save = improved or should_stop or (epoch + 1) % run_cfg.checkpoint_every == 0
        if rank == 0 and save:
            with checkpoint_folder(spec.local_checkpoint_root, epoch) as directory:
                write_checkpoint(directory, model, cfg.model_dump(mode="json"), metrics, train_state)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics, checkpoint=None)
        if rank == 0 and spec.epoch_queue is not None:  # the command's terminal (train.progress)
            report_epoch(spec.epoch_queue, epoch + 1, epochs, metrics)
        if should_stop:
            break
