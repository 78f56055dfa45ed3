"""The transfer experiment's configuration (``xmw transfer --config FILE``), apart from the experiment itself so
that reading it (``xmw transfer --help`` lists its keys) does not import torch: the strategy registry is imported
only when a config is validated.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from xmw_ray.config import (
    DataSection,
    KeyedValueError,
    ModelSection,
    OptimSection,
    ResourcesSection,
    Strict,
    check_params,
)
from xmw_ray.data.splits import SplitSpec


def strategy_names() -> list[str]:
    """Registered transfer strategies (imports them, hence torch): the default of ``strategies``."""
    from xmw_ray.transfer.registry import STRATEGIES

    return list(STRATEGIES)


OUTPUT_DIR_TOKEN = "{output_dir}"


class PrepareSection(Strict):
    """Build the stores when they do not exist: simulate at ``forcing``'s towers → source; its observations →
    target (both ``xmw prepare sites`` with the same ``drivers``, so their feature layouts match).

    ``sim_input``: the simulated flux at each tower becomes a driver of the target store (``SIM_FCH4``, tower
    driver set only) instead of a pretraining source: a hybrid model that corrects the process model from the
    towers' own drivers. The source store is then not built, and only ``scratch`` applies."""

    forcing: str = Field(description="folder of FLUXNET-CH4 site files (with the META file)")
    drivers: Literal["xmw", "tower"] = Field("xmw", description="xmw prepare sites --drivers")
    sim_input: bool = Field(False, description="simulated flux as a target-store driver (drivers: tower)")

    @model_validator(mode="after")
    def _sim_needs_tower(self) -> PrepareSection:
        if self.sim_input and self.drivers != "tower":
            raise ValueError("sim_input needs drivers: tower")
        return self


class ExperimentConfig(Strict):
    output_dir: str = "runs/transfer"
    source: DataSection | None = Field(None, description="simulations to pretrain on (every strategy but scratch)")
    target: DataSection
    strategies: list[str] = Field(default_factory=lambda: list(strategy_names()))
    strategy_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: list[ModelSection] = Field(default_factory=lambda: [ModelSection()])
    settings: dict[str, SplitSpec] = Field(description="observation splits by name, e.g. temporal / spatial")
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    optim: OptimSection = Field(default_factory=OptimSection)
    pretrain_optim: OptimSection = Field(default_factory=OptimSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    baseline: dict[str, Any] | None = Field(default_factory=dict, description="GBT parameters; null: no GBT row")
    prepare: PrepareSection | None = None
    checkpoint_every: int = Field(1, gt=0, description="epochs between resume checkpoints of each run")
    ensemble: int = Field(1, ge=1, description="members per run (seeds differ), averaged into one checkpoint")
    deploy_setting: str | None = Field(None, description="setting (e.g. kind: all) whose run becomes `best`; the "
                                       "strategy, model and fraction are chosen by validation NSE elsewhere")

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.deploy_setting is not None and self.deploy_setting not in self.settings:
            raise ValueError(f"deploy_setting {self.deploy_setting!r} is not one of the settings "
                             f"({', '.join(self.settings)})")
        if self.source is None and set(self.strategies) != {"scratch"}:
            raise ValueError("source: missing (every strategy but scratch pretrains on it)")
        if self.prepare is not None and self.prepare.sim_input and set(self.strategies) != {"scratch"}:
            raise ValueError("prepare.sim_input makes the simulation a driver, not a source: strategies must be "
                             "[scratch]")
        return self

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        known = strategy_names()
        bad = [s for s in v if s not in known]
        if bad:
            raise ValueError(f"unknown strategies {bad}; known: {', '.join(known)}")
        return v

    @field_validator("strategy_params")
    @classmethod
    def _strategy_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each strategy's parameters against its own class, before the baseline or any run starts."""
        from xmw_ray.transfer.registry import STRATEGIES

        for name, params in v.items():
            if name not in STRATEGIES:
                raise KeyedValueError(name, f"unknown strategy (known: {', '.join(STRATEGIES)})")
            check_params(STRATEGIES[name].Params, params, prefix=name)
        return v

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 1 for f in v):
            raise ValueError("fractions must be in (0, 1]")
        return v

    def resolved(self) -> ExperimentConfig:
        """Store paths with ``{output_dir}`` filled in."""
        out = self.output_dir
        return self.model_copy(update={
            "source": None if self.source is None else
            self.source.model_copy(update={"store": self.source.store.replace(OUTPUT_DIR_TOKEN, out)}),
            "target": self.target.model_copy(update={"store": self.target.store.replace(OUTPUT_DIR_TOKEN, out)}),
        })
