"""The typed configuration of a search: the shared sections of a training run plus a ``search`` section.

``run.name`` names the search: launching again with the same name resumes it (``search.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from xmw_ray.config import DataSection, OptimSection, ResourcesSection, RunSection, Strict, require_models

#: The strategy name that means "no transfer": plain ``run_training`` on ``data``.
NO_TRANSFER = "none"


class SearchSection(Strict):
    models: list[str] = Field(default_factory=lambda: ["lstm"], min_length=1, description="architectures to search")
    strategies: list[str] = Field(default_factory=lambda: [NO_TRANSFER], min_length=1,
                                  description="transfer strategies to search ('none': train on data only)")
    cover_strategies: bool = Field(
        False, description="first trials: one per strategy (models taken in turn), so every strategy gets a score")
    space: Literal["small", "full"] = Field("small", description="size ranges of the hyper-parameters (models/ranges.py)")
    lr: tuple[float, float] = Field((1e-3, 3e-2), description="log-uniform learning-rate range")
    weight_decay: tuple[float, float] = Field((0.0, 0.0), description="uniform weight-decay range")
    num_samples: int = Field(8, gt=0, description="trials (Optuna suggestions)")
    grace_period: int = Field(1, gt=0, description="ASHA: epochs every trial gets before it may be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/reduction_factor at each rung")
    time_budget_s: float | None = Field(None, gt=0, description="stop the whole search after this many seconds")
    max_trial_failures: int = Field(1, ge=0, description="Tune retries of a failed trial (workers: run.max_failures)")
    driver_cpus: float = Field(0.25, gt=0, description="logical CPUs of each trial's driver function")
    max_concurrent_trials: int | None = Field(None, gt=0, description="upper cap on the derived concurrency")
    cluster: dict[str, float] | None = Field(
        None, description="capacity of an autoscaling cluster (e.g. {CPU: 64, GPU: 8}); default: what Ray has now")
    evaluate_test: bool = Field(True, description="score every trial's best checkpoint on the test split")
    seed: int = 0

    @field_validator("lr", "weight_decay")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[1] < v[0] or v[0] < 0:
            raise ValueError(f"range [{v[0]}, {v[1]}] must be non-negative and ordered")
        return v

    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        require_models(v)
        return v

    @model_validator(mode="after")
    def _spaces_fit_models(self) -> SearchSection:
        from xmw_ray.tune.space import check_model_spaces

        check_model_spaces(self)
        return self

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, v: list[str]) -> list[str]:
        wanted = [s for s in v if s != NO_TRANSFER]
        if not wanted:
            return v
        from xmw_ray.transfer.registry import STRATEGIES

        unknown = [s for s in wanted if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategy {unknown[0]!r}; known: {', '.join([NO_TRANSFER, *sorted(STRATEGIES)])}")
        return v


class TuneConfig(Strict):
    data: DataSection = Field(description="where trials train, validate and test (the transfer target)")
    source: DataSection | None = Field(None, description="simulation data the transfer strategies learn from")
    optim: OptimSection = Field(default_factory=OptimSection)
    pretrain_optim: OptimSection | None = Field(None, description="optimiser of a strategy's pretraining phase")
    resources: ResourcesSection = Field(default_factory=lambda: ResourcesSection(num_workers=1))
    run: RunSection = Field(default_factory=lambda: RunSection(name="xmw-tune"))
    search: SearchSection = Field(default_factory=SearchSection)

    @field_validator("resources")
    @classmethod
    def _workers(cls, v: ResourcesSection) -> ResourcesSection:
        if v.num_workers < 1:
            raise ValueError("a search needs num_workers >= 1 (Ray Train local mode reports nothing to Tune)")
        return v

    @model_validator(mode="after")
    def _source_for_transfer(self) -> TuneConfig:
        if any(s != NO_TRANSFER for s in self.search.strategies) and self.source is None:
            raise ValueError("source: transfer strategies need a source data section")
        return self
