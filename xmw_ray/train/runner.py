"""Driver side of one training run: datasets, normalisation statistics, resource check, ``TorchTrainer.fit``.

``xmw train``, ``jobs/train.py``, transfer strategies and Tune trials all call :func:`run_training`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from xmw_ray.config import TrainConfig
from xmw_ray.data import schema
from xmw_ray.data.arrow_fs import arrow_filesystem
from xmw_ray.data.grid_store import is_url
from xmw_ray.data.ray_datasets import SampleDatasets, build_datasets
from xmw_ray.train.checkpoint import load_train_state
from xmw_ray.train.loop import Objective, train_loop_per_worker
from xmw_ray.train.resources import check_fits

if TYPE_CHECKING:
    import pyarrow.fs

BEST_DIR = "best"
HISTORY_FILE = "history.json"
#: Where runs stored at a URL keep their local copy (best checkpoint, history): ``$XMW_CACHE_DIR/runs/<url>``.
CACHE_ENV = "XMW_CACHE_DIR"
#: The tensor columns a training worker consumes (ids stay behind: torch cannot collate strings).
TRAIN_COLUMNS = [schema.DYNAMIC, schema.STATIC, schema.TARGET]


@dataclass
class TrainOutcome:
    """What a finished run leaves: the best checkpoint (copied to ``<run>/best``) and its metrics."""

    run_dir: Path
    best_checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]


def run_dir_of(cfg: TrainConfig) -> Path:
    """Local folder of a run: the run itself, or for a URL ``output_dir`` its local copy (``run_url_of``)."""
    out = cfg.run.output_dir
    if is_url(out):
        cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "xmw")
        return cache / "runs" / out.replace("://", "/", 1).rstrip("/") / cfg.run.name
    return Path(out).resolve() / cfg.run.name


def run_url_of(cfg: TrainConfig) -> str | None:
    """``<output_dir>/<name>`` when run storage is an object store (``s3://``, ``gs://``), else None."""
    out = cfg.run.output_dir
    return f"{out.rstrip('/')}/{cfg.run.name}" if is_url(out) else None


def run_storage(output_dir: str) -> tuple[pyarrow.fs.FileSystem | None, str]:
    """Ray's ``(storage_filesystem, storage_path)`` for ``output_dir``: a URL's pyarrow filesystem (``arrow_fs``:
    gs:// through gcsfs) and its path, or no filesystem and the absolute local folder."""
    if is_url(output_dir):
        return arrow_filesystem(output_dir)
    return None, str(Path(output_dir).resolve())


def _publish(run_dir: Path, url: str) -> None:
    """Copy the best checkpoint and the history to run storage, history last (whole objects, no partial file)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    best = run_dir / BEST_DIR
    for f in sorted(p for p in best.rglob("*") if p.is_file()):
        fs.put_file(str(f), f"{root}/{BEST_DIR}/{f.relative_to(best).as_posix()}")
    fs.put_file(str(run_dir / HISTORY_FILE), f"{root}/{HISTORY_FILE}")


LOCAL_MIN_CPUS = 4
#: Ray settings of a local instance started by :func:`ensure_ray` (``worker_niceness``: Ray's default is 15).
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}


def ensure_ray() -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (``ray job submit``), else start a local instance; quiet logs."""
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        # A new local instance gets logical CPUs (at least LOCAL_MIN_CPUS): a trial's driver, its worker and
        # Ray Data then fit on a 2-core laptop; the OS shares the cores. XMW_NUM_CPUS overrides. Its workers run
        # at normal priority: Ray's default (nice 15) lets any other process on the machine starve training.
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            cpus = int(os.environ.get("XMW_NUM_CPUS", max(os.cpu_count() or 1, LOCAL_MIN_CPUS)))
            ray.init(num_cpus=cpus, log_to_driver=False, logging_level=logging.WARNING,
                     _system_config=LOCAL_SYSTEM_CONFIG)
    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _latest_local_checkpoint(root: Path) -> str | None:
    found = sorted(p for p in root.glob("epoch_*") if (p / "model.pt").is_file() and (p / "train_state.pt").is_file())
    return str(found[-1]) if found else None


def _best_of(history: list[dict[str, Any]]) -> int:
    scored = [(h["val_loss"], i) for i, h in enumerate(history) if h.get("val_loss") == h.get("val_loss")]
    return min(scored)[1] if scored else len(history) - 1


def steps_per_epoch(rows: int, num_workers: int, batch_size: int) -> int:
    """Optimisation steps of one epoch on each worker: ``rows`` split evenly over the workers, in batches."""
    return max(1, math.ceil(math.ceil(rows / max(num_workers, 1)) / batch_size))


def run_training(cfg: TrainConfig, datasets: SampleDatasets | None = None, *,
                 init_state: dict[str, Any] | None = None, freeze: list[str] | None = None,
                 callbacks: list[Any] | None = None, fail_at_epoch: int | None = None,
                 source: ray.data.Dataset | None = None, objective: Objective | None = None,
                 norm: dict[str, Any] | None = None, source_rows: int | None = None) -> TrainOutcome:
    """Train one model as configured; resumes when ``<output_dir>/<name>`` holds an earlier run's checkpoints.

    Transfer hooks: ``source`` is a second training dataset streamed beside ``train`` (``TRAIN_COLUMNS`` and
    optionally ``loop.WEIGHT_COLUMN``); ``objective`` replaces the plain loss (see ``loop.Objective``); ``norm`` overrides the
    normalisation statistics the model is built with (default: the training split's); ``source_rows`` (the
    source's sample count, e.g. ``ray_datasets.part_rows``) gives the steps per epoch, so the objective's
    progress advances every optimisation step, not every epoch. Validation, and so the best checkpoint, always
    uses the ``val`` split of ``cfg.data``.
    """
    ensure_ray()
    res = cfg.resources
    check_fits(res.num_workers, res.cpus_per_worker, res.use_gpu)
    ds = datasets or build_datasets(cfg.data)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    local = res.num_workers == 0
    loop_config: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "n_dynamic": ds.n_dynamic,
        "n_static": ds.n_static,
        "norm": norm if norm is not None else ds.norm,
        "init_state": init_state,
        "freeze": freeze or [],
        "fail_at_epoch": fail_at_epoch,
        "objective": objective,
        "paired": source is not None,
        "steps_per_epoch": steps_per_epoch(source_rows, res.num_workers, cfg.data.batch_size)
        if source is not None and source_rows else None,
        "cache_val": cfg.data.in_memory or ds.val_bytes <= cfg.data.val_cache_mb * 2**20,
    }
    datasets = {"train": ds.train.select_columns(TRAIN_COLUMNS), "val": ds.val.select_columns(TRAIN_COLUMNS)}
    if source is not None:  # tensor columns only: TRAIN_COLUMNS, optionally WEIGHT_COLUMN
        datasets["source"] = source
    if local:  # local mode keeps no checkpoints of its own: write them to the run folder and resume from there
        ck_root = run_dir / "checkpoints"
        ck_root.mkdir(exist_ok=True)
        loop_config["local_checkpoint_root"] = str(ck_root)
        loop_config["resume_dir"] = _latest_local_checkpoint(ck_root)
    storage_fs, storage_path = run_storage(cfg.run.output_dir)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=res.num_workers, use_gpu=res.use_gpu,
                                     resources_per_worker={"CPU": res.cpus_per_worker}),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints,
                                               checkpoint_score_attribute="val_loss",
                                               checkpoint_score_order="min"),
            callbacks=callbacks,
        ),
        datasets=datasets,
        # one worker reads the datasets itself: a streaming split would add a coordinator actor per dataset,
        # relaying every block, for nothing to split (and on a small machine it takes CPU from training)
        dataset_config=DataConfig(datasets_to_split="all" if res.num_workers > 1 else []),
    )
    result = trainer.fit()
    history = _history(result, run_dir, local)
    best_src = _best_checkpoint_dir(result, run_dir, local, history)
    best = run_dir / BEST_DIR
    tmp = run_dir / (BEST_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best_src, tmp)
    shutil.rmtree(best, ignore_errors=True)
    os.replace(tmp, best)
    (run_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1))
    url = run_url_of(cfg)
    if url is not None:
        _publish(run_dir, url)
    metrics = history[_best_of(history)] if history else {}
    return TrainOutcome(run_dir=run_dir, best_checkpoint=best, metrics=metrics, history=history)


def _history(result: Any, run_dir: Path, local: bool) -> list[dict[str, Any]]:
    """Every epoch's metrics, from the latest checkpoint's training state (it carries the whole history)."""
    if local:
        latest = _latest_local_checkpoint(run_dir / "checkpoints")
    else:
        latest = result.checkpoint.to_directory() if result.checkpoint is not None else None
    state = load_train_state(latest) if latest else None
    return list(state["history"]) if state else []


def _best_kept_checkpoint(result: Any) -> Any:
    """The kept checkpoint with the lowest finite validation loss; with none scored (no validation part), the
    final epoch's (``result.checkpoint``, the latest), as ``_best_of`` picks in local mode."""
    scored = [(float(m["val_loss"]), c) for c, m in (result.best_checkpoints or [])
              if math.isfinite(float(m.get("val_loss", math.nan)))]
    return min(scored, key=lambda t: t[0])[1] if scored else result.checkpoint


def _best_checkpoint_dir(result: Any, run_dir: Path, local: bool, history: list[dict[str, Any]]) -> str:
    if local:
        best_epoch = history[_best_of(history)]["epoch"]
        keep = run_dir / "checkpoints" / f"epoch_{best_epoch:04d}"
        return str(keep)
    ckpt = _best_kept_checkpoint(result)
    from pyarrow.fs import LocalFileSystem

    # on an object store the path has no scheme (it is relative to the checkpoint's filesystem): download it
    return ckpt.path if isinstance(ckpt.filesystem, LocalFileSystem) else ckpt.to_directory()
