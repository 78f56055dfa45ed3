"""The one interface every transfer strategy implements, the job it runs, and the phases they share.

A strategy trains whatever phases it has (pretraining on the simulations, then the observation phase) and returns
the FINAL phase's :class:`TrainOutcome`; that phase's best checkpoint is chosen on the TARGET validation split
only and predicts mg CH4 m-2 d-1 through the normal ``load_checkpoint_model`` path.

Normalisation (one set per phase, never mixed): a phase that starts from a pretrained model keeps that model's
buffers (the source's training statistics), so its loss is the MSE in mg CH4 m-2 d-1 divided by the source target
variance; scratch uses the observations' training statistics; joint phases (adversarial, reweight) use the
source's; the residual model keeps the source statistics inside its frozen simulation part and the observations'
for the residual part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xmw_ray.config import (
    DataSection,
    ModelSection,
    OptimSection,
    ResourcesSection,
    RunSection,
    Strict,
    TrainConfig,
)
from xmw_ray.data.features import FeatureSet, check_pairing
from xmw_ray.data.ray_datasets import StoreInfo, store_info
from xmw_ray.data.stores import store_fingerprint
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import MODEL_FILE, load_model_state
from xmw_ray.storage import join_path, write_text_atomic
from xmw_ray.train.runner import TrainOutcome, run_dir_of, run_training

PRETRAIN_DIR = "pretrain"
DONE_FILE = "done.json"


class TransferJob(Strict):
    """One transfer run: simulations (``source``) → observations (``target``), one model, one seed."""

    source: DataSection | None = None
    target: DataSection
    model: ModelSection = Field(default_factory=ModelSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    pretrain_optim: OptimSection = Field(default_factory=OptimSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    run: RunSection = Field(default_factory=RunSection)
    params: dict[str, Any] = Field(default_factory=dict, description="strategy hyper-parameters")


#: A strategy's search space: ``space(trial, prefix) -> Params keyword arguments``, asked with Optuna's
#: ``suggest_*`` under the parameter-name prefix (``xmw_ray/tune/space.py``).
StrategySpace = Callable[[Any, str], dict[str, Any]]


@runtime_checkable
class Strategy(Protocol):
    name: str
    #: The strategy's hyper-parameter class (configs' ``strategy_params`` are checked against it at load time).
    Params: type[StrategyParams]
    #: What a search may vary, declared beside ``Params``; None: nothing to search.
    search_space: StrategySpace | None

    def run(self, job: TransferJob, callbacks: list | None = None) -> TrainOutcome:
        """Train every phase; return the final (observation) phase's outcome."""
        ...


class StrategyParams(BaseModel):
    """Base of a strategy's hyper-parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=StrategyParams)


def validate_params(cls: type[P], params: dict[str, Any], strategy: str) -> P:
    """``job.params`` → typed parameters; the first problem is a one-line ``XmwInputError``."""
    try:
        return cls(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        kind = f"unknown parameter (known: {', '.join(cls.model_fields) or 'none'})" \
            if err["type"] == "extra_forbidden" else err["msg"]
        raise XmwInputError(f"strategy {strategy!r}: params.{key}: {kind}") from None


def check_layouts(source: StoreInfo, target: StoreInfo) -> None:
    """Source and target must offer the same variables in the same order (a model sees positions, not names),
    each with the same meaning, unit and a pairable provenance (``features.check_pairing``)."""
    def features(info: StoreInfo) -> FeatureSet:
        return info.features or FeatureSet.of_store(None, info.dynamic_vars, info.static_vars, info.path)

    check_pairing(features(source), f"the source store {source.path}", features(target), target.path,
                  "prepare the sites with --grid SOURCE so they hold the source's features")


def require_source(job: TransferJob, strategy: str) -> DataSection:
    if job.source is None:
        raise XmwInputError(f"strategy {strategy!r}: needs a source (simulation) store; set 'source'")
    check_layouts(store_info(job.source.store, job.source.source), store_info(job.target.store, job.target.source))
    return job.source


def target_config(job: TransferJob, suffix: str = "", model: ModelSection | None = None,
                  optim: OptimSection | None = None) -> TrainConfig:
    """The observation phase's training config (validation = the target's validation split)."""
    run = job.run.model_copy(update={"name": job.run.name + suffix})
    return TrainConfig(data=job.target, model=model or job.model, optim=optim or job.optim,
                       resources=job.resources, run=run)


def pretrain_key(job: TransferJob) -> str:
    """Hash of everything a source pretraining depends on: source data, model, pretraining optimiser, seed."""
    assert job.source is not None
    blob = json.dumps({"source": job.source.model_dump(mode="json"), "stamp": store_fingerprint(job.source.store),
                       "model": job.model.model_dump(mode="json"),
                       "optim": job.pretrain_optim.model_dump(mode="json"), "seed": job.run.seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_source(job: TransferJob) -> Path:
    """Train ``job.model`` on the source (selected on the SOURCE validation split), cached under
    ``<output_dir>/pretrain/<hash>``: strategies, fractions and settings that share it train it once."""
    assert job.source is not None
    key = pretrain_key(job)
    cfg = TrainConfig(data=job.source, model=job.model, optim=job.pretrain_optim, resources=job.resources,
                      run=job.run.model_copy(update={"name": key,
                                                     "output_dir": join_path(job.run.output_dir, PRETRAIN_DIR)}))
    run_dir = run_dir_of(cfg)
    done = run_dir / DONE_FILE
    if done.is_file() and (run_dir / "best" / MODEL_FILE).is_file():
        return run_dir / "best"
    out = run_training(cfg)
    write_text_atomic(done, json.dumps({"metrics": out.metrics, "config": cfg.model_dump(mode="json")}, default=str))
    return out.best_checkpoint


def model_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a checkpoint directory's model (weights and normalisation buffers)."""
    return load_model_state(checkpoint)
