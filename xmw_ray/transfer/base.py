"""The one interface every transfer strategy implements, and the phases they share.

A strategy runs one run of an experiment: an :class:`ExperimentConfig` whose ``data`` is the observations with
this run's split, ``source`` the simulations, ``model``/``optim``/``pretrain_optim`` what to train and ``run`` this
run's name and seed, plus the strategy's own parameters (checked against its ``Params``).

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
from pydantic import BaseModel, ConfigDict, ValidationError

from xmw_ray.config import DataSection, ExperimentConfig, ModelSection, OptimSection, TrainConfig
from xmw_ray.data.features import FeatureSet, check_pairing
from xmw_ray.data.ray_datasets import StoreInfo, store_info
from xmw_ray.data.stores import store_fingerprint
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import MODEL_FILE, load_model_state
from xmw_ray.storage import join_path, write_text_atomic
from xmw_ray.train.runner import TrainOutcome, run_dir_of, run_training

PRETRAIN_DIR = "pretrain"
DONE_FILE = "done.json"


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

    def run(self, cfg: ExperimentConfig, params: dict[str, Any], callbacks: list | None = None) -> TrainOutcome:
        """Train every phase of one run (``cfg.data``: the observations with this run's split, ``cfg.source``: the
        simulations, ``cfg.run``: this run's name and seed; ``params``: the strategy's own, checked against
        ``Params``); return the final (observation) phase's outcome."""
        ...


class StrategyParams(BaseModel):
    """Base of a strategy's hyper-parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=StrategyParams)


def validate_params(cls: type[P], params: dict[str, Any], strategy: str) -> P:
    """A strategy's ``params`` → typed parameters; the first problem is a one-line ``XmwInputError``."""
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


def require_source(cfg: ExperimentConfig, strategy: str) -> DataSection:
    if cfg.source is None:
        raise XmwInputError(f"strategy {strategy!r}: needs a source (simulation) store; set 'source'")
    check_layouts(store_info(cfg.source.store, cfg.source.source), store_info(cfg.data.store, cfg.data.source))
    return cfg.source


def target_config(cfg: ExperimentConfig, suffix: str = "", model: ModelSection | None = None,
                  optim: OptimSection | None = None) -> TrainConfig:
    """The observation phase's training run (validation = the observations' validation split), its run name
    extended by ``suffix`` for a phase of its own."""
    return cfg.training(run=cfg.run.model_copy(update={"name": cfg.run.name + suffix}), model=model or cfg.model,
                        optim=optim or cfg.optim)


def pretrain_key(cfg: ExperimentConfig) -> str:
    """Hash of everything a source pretraining depends on: source data, model, pretraining optimiser, seed."""
    assert cfg.source is not None
    blob = json.dumps({"source": cfg.source.model_dump(mode="json"), "stamp": store_fingerprint(cfg.source.store),
                       "model": cfg.model.model_dump(mode="json"),
                       "optim": cfg.pretraining().model_dump(mode="json"), "seed": cfg.run.seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_source(exp: ExperimentConfig) -> Path:
    """Train ``exp.model`` on the source (selected on the SOURCE validation split), cached under
    ``<run.output_dir>/pretrain/<hash>``: strategies, fractions and settings that share it train it once."""
    assert exp.source is not None
    key = pretrain_key(exp)
    cfg = exp.training(data=exp.source, optim=exp.pretraining(),
                       run=exp.run.model_copy(update={"name": key,
                                                      "output_dir": join_path(exp.run.output_dir, PRETRAIN_DIR)}))
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
