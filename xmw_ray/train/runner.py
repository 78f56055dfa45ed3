"""Driver side of one training run: datasets, normalisation statistics, resource check, ``TorchTrainer.fit``.

``xmw train``, ``jobs/train.py``, transfer strategies and Tune trials all call :func:`run_training`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from xmw_ray.config import TrainConfig
from xmw_ray.console import route_ray_output
from xmw_ray.data import schema
from xmw_ray.data.arrow_fs import arrow_filesystem
from xmw_ray.data.ray_datasets import SampleDatasets, build_datasets, store_info
from xmw_ray.data.stores import check_trains_on_store
from xmw_ray.errors import XmwInputError
from xmw_ray.models.base import resolve_output_constraint
from xmw_ray.models.checkpoint import (
    BEST_DIR,
    CHECKPOINT_FILES,
    MODEL_FILE,
    OTHER_RUN,
    load_train_state,
    parse_config_json,
    publish_checkpoint,
    refuse_foreign_checkpoint,
)
from xmw_ray.storage import (
    is_url,
    join_path,
    local_run_dir,
    run_path,
    upload_aside,
    write_bytes_atomic,
    write_text_atomic,
)
from xmw_ray.train.loop import Objective, WorkerSpec, reading_checkpoint, train_loop_per_worker
from xmw_ray.train.progress import epoch_feed
from xmw_ray.train.resources import check_fits

if TYPE_CHECKING:
    import pyarrow.fs
    from ray.data import ExecutionOptions

HISTORY_FILE = "history.json"
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
    return local_run_dir(cfg.run.output_dir, cfg.run.name)


def run_url_of(cfg: TrainConfig) -> str | None:
    """``<output_dir>/<name>`` when run storage is an object store (``s3://``, ``gs://``), else None."""
    out = cfg.run.output_dir
    return run_path(out, cfg.run.name) if is_url(out) else None


def run_storage(output_dir: str) -> tuple[pyarrow.fs.FileSystem | None, str]:
    """Ray's ``(storage_filesystem, storage_path)`` for ``output_dir``: a URL's pyarrow filesystem (``arrow_fs``:
    gs:// through gcsfs) and its path, or no filesystem and the absolute local folder."""
    if is_url(output_dir):
        return arrow_filesystem(output_dir)
    return None, run_path(output_dir)


def _publish(run_dir: Path, url: str) -> None:
    """Copy the best checkpoint and then the history to run storage. ``best`` goes through ``upload_aside`` with
    the model file as its commit object: a reader of a bucket checkpoint (``xmw infer``) reads that file, so it
    finds the old model, none, or the new one, never the new model beside an old run's other files."""
    with upload_aside(join_path(url, BEST_DIR), MODEL_FILE, CHECKPOINT_FILES.__contains__, OTHER_RUN) as tmp:
        shutil.copytree(run_dir / BEST_DIR, tmp, dirs_exist_ok=True)
    write_bytes_atomic(join_path(url, HISTORY_FILE), (run_dir / HISTORY_FILE).read_bytes())


LOCAL_MIN_CPUS = 4
#: Ray settings of a local instance started by :func:`ensure_ray` (``worker_niceness``: Ray's default is 15).
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}


def _local_cpus() -> int:
    return int(os.environ.get("XMW_NUM_CPUS", max(os.cpu_count() or 1, LOCAL_MIN_CPUS)))


def planned_cluster_resources() -> dict[str, float]:
    """CPU and GPU totals of the cluster :func:`ensure_ray` gives, without starting a local instance (so a request
    that cannot fit is refused before any output exists); joins the cluster when ``RAY_ADDRESS`` names one."""
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        ensure_ray()
        return dict(ray.cluster_resources())
    import torch

    return {"CPU": float(_local_cpus()), "GPU": float(torch.cuda.device_count())}


#: Ray's switch (read when ``ray._private.ray_constants`` is imported) between the node's outward address and
#: loopback; Ray itself uses loopback where clusters are unsupported (macOS, Windows).
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


@contextmanager
def _loopback_node() -> Iterator[None]:
    """Meanwhile, a new Ray node takes 127.0.0.1 as its address. Ray 2.60's GCS, raylet and workers bind their
    gRPC ports to all interfaces unless the node address is exactly 127.0.0.1, and ``ray.init`` turns an explicit
    ``_node_ip_address="127.0.0.1"`` back into the outward address unless Ray clusters are switched off
    (``services.get_node_ip_address``): switch them off for the node's start, in this process (the constant) and
    in the processes it spawns (the variable), then restore both so a later ``ray.init(address=…)`` still works."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(RAY_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[RAY_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(RAY_CLUSTER_ENV, None)
        else:
            os.environ[RAY_CLUSTER_ENV] = saved_env


#: Ray Train V2's controller polls its workers this often (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``; Ray's default 2 s),
#: and every step of a run (worker group up, training done, shut down) waits for the next poll: at 2 s a 1-worker,
#: 1-epoch run on a small store took 14.4-14.7 s, at 0.5 s 12.0-12.1 s, at 0.2 s 10.5-11.0 s (README, "Start-up of
#: a training run"). A poll is one small call per worker; a worker counts as dead only after
#: ``RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S`` (10 minutes) of missed polls, so a busy worker is not lost by it.
TRAIN_POLL_INTERVAL_S = "0.2"
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"

#: Ray Train 2.60 starts a ``PreemptionWatcher`` actor for every run, a process that polls Ray Core every 5 s for
#: nodes being drained (an autoscaler reclaiming a spot node). The local instance ``ensure_ray`` starts is one node
#: that nobody drains, so there the watcher is a process per run that can see nothing (1.6-2.5 CPU-s of a 1-epoch
#: run on the 2-core machine; 4.0 s on the H200 machine's profile): off unless the environment names a value. On a
#: cluster (``RAY_ADDRESS``: ``ray job submit``, the cluster files) Ray's default, on, is kept.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
_watcher_off_here: list[bool] = [False]  # ensure_ray turned the watcher off (for a local instance it started)


def ensure_ray() -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (``ray job submit``), else start a local instance; quiet logs.
    A local instance listens on loopback only: it has no token authentication, and anyone who reaches a Ray
    port can run code. Sets :data:`TRAIN_POLL_INTERVAL_S` unless the environment names another interval (read by
    each ``TorchTrainer.fit`` from this process's environment: a Tune trial's process calls this too), and for a
    local instance turns Train's preemption watcher off (:data:`PREEMPTION_WATCHER_ENV`) unless the environment
    names a value."""
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_INTERVAL_S)
    if not ray.is_initialized():
        route_ray_output()  # Ray's start-up lines belong in the command's log too (xmw_ray.console)
        address = os.environ.get("RAY_ADDRESS")
        # A new local instance gets logical CPUs (at least LOCAL_MIN_CPUS): a trial's driver, its worker and
        # Ray Data then fit on a 2-core laptop; the OS shares the cores. XMW_NUM_CPUS overrides. Its workers run
        # at normal priority: Ray's default (nice 15) lets any other process on the machine starve training.
        if address:
            if _watcher_off_here[0]:  # a local instance of this process's past: a cluster gets Ray's default
                os.environ.pop(PREEMPTION_WATCHER_ENV, None)
                _watcher_off_here[0] = False
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # before the instance starts, so that its processes (a Tune trial's among them) inherit it
            if PREEMPTION_WATCHER_ENV not in os.environ:
                os.environ[PREEMPTION_WATCHER_ENV] = "0"
                _watcher_off_here[0] = True
            with _loopback_node():
                ray.init(num_cpus=_local_cpus(), log_to_driver=False, logging_level=logging.WARNING,
                         _node_ip_address=LOOPBACK, dashboard_host=LOOPBACK, _system_config=LOCAL_SYSTEM_CONFIG)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # Blocks in their datasource's order (else the order they finish in): the same command with the same seed
    # then gives the same batches, so the same numbers, wherever the driver iterates (baselines, evaluation).
    ctx.execution_options.preserve_order = True
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _own_data_stats_actor()


def _own_data_stats_actor() -> None:
    """Create Ray Data's cluster-wide ``_StatsActor`` from this driver when it is outside any placement group.

    Ray Data 2.60 creates that detached actor on first use with no scheduling strategy of its own, so when the first
    dataset of a search runs inside a Tune trial (whose placement group captures child tasks) the actor joins that
    trial's placement group, and the raylet kills it when the trial ends and its group is removed (ray-project/ray
    PR #57726: a detached actor in a placement group dies with it). The next trial's statistics then reach a new,
    empty actor and fail with ``KeyError: 'dataset_…'`` ("Unhandled error … _StatsActor.update_execution_metrics").
    Created here first, it lives outside every trial and every later lookup finds it."""
    from ray.data._internal.stats import get_or_create_stats_actor
    from ray.util import get_current_placement_group

    if get_current_placement_group() is None:
        get_or_create_stats_actor()


def _latest_local_checkpoint(root: Path) -> str | None:
    found = sorted(p for p in root.glob("epoch_*") if (p / "model.pt").is_file() and (p / "train_state.pt").is_file())
    return str(found[-1]) if found else None


def _best_of(history: list[dict[str, Any]]) -> int:
    scored = [(h["val_loss"], i) for i, h in enumerate(history) if h.get("val_loss") == h.get("val_loss")]
    return min(scored)[1] if scored else len(history) - 1


def _stored_run_config(cfg: TrainConfig) -> tuple[str, dict[str, Any]] | None:
    """``(file, config)`` of the newest checkpoint of the run ``cfg`` names (a re-run resumes from it), else the
    run's ``best`` checkpoint; None for a new run. Read from the driver, local folder or URL."""
    import fsspec

    from xmw_ray.models.checkpoint import CONFIG_FILE

    url = run_url_of(cfg)
    root = url if url is not None else str(run_dir_of(cfg))
    fs, base = fsspec.core.url_to_fs(root)
    if not fs.exists(base):
        return None
    found: list[str] = []
    for pattern in (f"checkpoints/epoch_*/{CONFIG_FILE}", f"checkpoint_*/{CONFIG_FILE}"):
        found += sorted(fs.glob(f"{base}/{pattern}"))
    for path in [*reversed(found), f"{base}/{BEST_DIR}/{CONFIG_FILE}"]:
        if fs.isfile(path):
            return path, parse_config_json(fs.cat_file(path), path)
    return None


def _model_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the model's defaults filled in: ``{}`` and ``{hidden_size: 8}`` are the same LSTM."""
    from pydantic import ValidationError

    from xmw_ray.models import MODELS

    cls = MODELS.get(name)
    try:
        return dict(params) if cls is None else cls.Params(**params).model_dump(mode="json")
    except ValidationError:  # a checkpoint from an older model version: compare the values as written
        return dict(params)


def check_resume_matches(cfg: TrainConfig) -> None:
    """Refuse to resume a run whose checkpoint was trained with another model or data, naming the first differing
    key, before Ray starts: model name, model parameters (defaults filled in), data source and store define what the
    checkpoint's weights are; optimiser, epochs and resources may change between runs."""
    stored = _stored_run_config(cfg)
    if stored is None:
        return
    path, old = stored
    new = cfg.model_dump(mode="json")
    old_model, old_data = old.get("model", {}), old.get("data", {})
    pairs: list[tuple[str, Any, Any]] = [("model.name", old_model.get("name"), new["model"]["name"])]
    if old_model.get("name") == new["model"]["name"]:
        old_p = _model_params(old_model.get("name", ""), old_model.get("params", {}))
        new_p = _model_params(new["model"]["name"], new["model"]["params"])
        pairs += [(f"model.params.{k}", old_p.get(k), new_p.get(k)) for k in sorted(set(old_p) | set(new_p))]
    if new["model"].get("output_constraint", "auto") != "auto":  # ``auto`` resolves alike on the same store
        pairs.append(("model.output_constraint", old_model.get("output_constraint", "none"),
                      new["model"]["output_constraint"]))
    pairs += [(f"data.{k}", old_data.get(k), new["data"][k]) for k in ("source", "store")]
    for key, was, now in pairs:
        if was != now:
            raise XmwInputError(f"{key}: run {cfg.run.name!r} resumes from {path}, trained with {was!r}, not "
                                f"{now!r} (use another run.name, or remove the run folder to start over)")


def with_output_constraint(cfg: TrainConfig, *norms: dict[str, Any] | None) -> TrainConfig:
    """``cfg`` with ``model.output_constraint`` resolved (``auto`` → softplus when the smallest training target
    of every statistics dict in ``norms``, e.g. the training split's and a paired source's, is >= 0), so the
    checkpoint's config records what the model applied."""
    mins = [n.get("target_min") for n in norms if n is not None]
    target_min = None if not mins or any(m is None for m in mins) else min(mins)
    resolved = resolve_output_constraint(cfg.model.output_constraint, target_min)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"output_constraint": resolved})})


def ordered_ingest() -> ExecutionOptions:
    """Ray Train's default ingest options (``DataConfig.default_ingest_options``: this process's resource limits
    and progress setting) with blocks kept in order. Train applies them to each dataset shard wherever it configures
    them, so a run does not depend on the order read tasks finish in; ``streaming_split`` then also ignores
    locality and deals blocks to workers in a fixed order. (Built here rather than by ``default_ingest_options``,
    which passes ``exclude_resources``, deprecated in Ray 2.60, and so warns on every call; nothing here sets it.)"""
    from ray.data import DataContext, ExecutionOptions

    current = DataContext.get_current().execution_options
    return ExecutionOptions(resource_limits=current.resource_limits, preserve_order=True,
                            verbose_progress=current.verbose_progress)


def steps_per_epoch(rows: int, num_workers: int, batch_size: int) -> int:
    """Optimisation steps of one epoch on each worker: ``rows`` split evenly over the workers, in batches."""
    return max(1, math.ceil(math.ceil(rows / max(num_workers, 1)) / batch_size))


def run_training(cfg: TrainConfig, datasets: SampleDatasets | None = None, *,
                 init_state: dict[str, Any] | None = None, freeze: list[str] | None = None,
                 callbacks: list[Any] | None = None,
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
    check_resume_matches(cfg)
    refuse_foreign_checkpoint(run_dir_of(cfg) / BEST_DIR)
    if run_url_of(cfg) is not None:
        refuse_foreign_checkpoint(join_path(run_url_of(cfg), BEST_DIR))
    if datasets is None:  # a missing or wrong store, or a split with nothing to train on, before Ray starts
        check_trains_on_store(store_info(cfg.data.store, cfg.data.source), cfg.data.split, "data.split")
    ensure_ray()
    res = cfg.resources
    check_fits(res.num_workers, res.cpus_per_worker, res.use_gpu)
    ds = datasets or build_datasets(cfg.data)
    cfg = with_output_constraint(cfg, ds.norm, norm)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    local = res.num_workers == 0
    ck_root = None
    if local:  # local mode keeps no checkpoints of its own: write them to the run folder and resume from there
        ck_root = run_dir / "checkpoints"
        ck_root.mkdir(exist_ok=True)
    features = ds.info.features
    spec = WorkerSpec(
        config=cfg, n_dynamic=ds.n_dynamic, n_static=ds.n_static,
        norm=norm if norm is not None else ds.norm,
        # a store prepared before descriptors existed gives a checkpoint without them (refused when paired)
        features=None if features is None or features.legacy else features,
        init_state=init_state, freeze=tuple(freeze or ()), objective=objective, paired=source is not None,
        steps_per_epoch=steps_per_epoch(source_rows, res.num_workers, cfg.data.batch_size)
        if source is not None and source_rows else None,
        cache_val=cfg.data.in_memory or ds.val_bytes <= cfg.data.val_cache_mb * 2**20,
        local_checkpoint_root=None if ck_root is None else str(ck_root),
        resume_dir=None if ck_root is None else _latest_local_checkpoint(ck_root))
    datasets = {"train": ds.train.select_columns(TRAIN_COLUMNS), "val": ds.val.select_columns(TRAIN_COLUMNS)}
    if source is not None:  # tensor columns only: TRAIN_COLUMNS, optionally WEIGHT_COLUMN
        datasets["source"] = source
    storage_fs, storage_path = run_storage(cfg.run.output_dir)
    with epoch_feed(cfg.run.name, cfg.optim.epochs) as queue:  # the epochs on the command's terminal
        # the typed spec is bound to the loop, not passed as ``train_loop_config`` (a dict Ray also records)
        worker_fn = functools.partial(train_loop_per_worker, dataclasses.replace(spec, epoch_queue=queue))
        trainer = TorchTrainer(
            worker_fn,
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
            dataset_config=DataConfig(datasets_to_split="all" if res.num_workers > 1 else [],
                                      execution_options=ordered_ingest()),
        )
        with _sigint_restored():
            result = trainer.fit()
    history = _history(result, run_dir, local)
    with _best_checkpoint_dir(result, run_dir, local, history) as best_src:
        best = publish_checkpoint(best_src, run_dir / BEST_DIR)
    write_text_atomic(run_dir / HISTORY_FILE, json.dumps(history, indent=1))
    url = run_url_of(cfg)
    if url is not None:
        _publish(run_dir, url)
    metrics = history[_best_of(history)] if history else {}
    return TrainOutcome(run_dir=run_dir, best_checkpoint=best, metrics=metrics, history=history)


@contextmanager
def _sigint_restored() -> Iterator[None]:
    """Meanwhile Ctrl-C aborts the Train run (Ray's handler); afterwards it is again what it was. ``TorchTrainer.fit``
    leaves its handler installed when it returns: the command's next Ctrl-C (a transfer experiment's later stage,
    writing results) then went to the finished run's controller instead of stopping the command, the third exited
    with status 0, and the handler's hold on the controller kept that actor (and its dataset manager) alive until
    the next run. Only the main thread installs signal handlers (a Tune trial runs ``fit`` in another)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main and before is not None:
            signal.signal(signal.SIGINT, before)


def _history(result: Any, run_dir: Path, local: bool) -> list[dict[str, Any]]:
    """Every epoch's metrics, from the latest checkpoint's training state (it carries the whole history)."""
    if local:
        latest = _latest_local_checkpoint(run_dir / "checkpoints")
        state = load_train_state(latest) if latest else None
    elif result.checkpoint is None:
        state = None
    else:
        with reading_checkpoint(result.checkpoint) as latest:
            state = load_train_state(latest)
    return list(state["history"]) if state else []


def _best_kept_checkpoint(result: Any) -> Any:
    """The kept checkpoint with the lowest finite validation loss; with none scored (no validation part), the
    final epoch's (``result.checkpoint``, the latest), as ``_best_of`` picks in local mode."""
    scored = [(float(m["val_loss"]), c) for c, m in (result.best_checkpoints or [])
              if math.isfinite(float(m.get("val_loss", math.nan)))]
    return min(scored, key=lambda t: t[0])[1] if scored else result.checkpoint


@contextmanager
def _best_checkpoint_dir(result: Any, run_dir: Path, local: bool,
                         history: list[dict[str, Any]]) -> Iterator[str]:
    """The best checkpoint's folder while the block runs: in place on local storage; from an object store (whose
    paths have no scheme) a download that is deleted afterwards."""
    if local:
        best_epoch = history[_best_of(history)]["epoch"]
        yield str(run_dir / "checkpoints" / f"epoch_{best_epoch:04d}")
        return
    with reading_checkpoint(_best_kept_checkpoint(result)) as best:
        yield best
