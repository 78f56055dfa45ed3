"""One typed experiment configuration, validated up front (YAML file + ``--set key=value`` overrides).

One file shape for every command: :class:`ExperimentConfig` is the training core (``data``, ``source``,
``model``, ``optim``, ``pretrain_optim``, ``resources``, ``run``) plus an optional ``transfer`` section (what
``xmw transfer`` compares) and an optional ``search`` section (what ``xmw tune`` searches). ``xmw train`` reads
the core, and each other command requires its own section. A typo is caught before any Ray work starts: an
unknown key or a wrong type is a single line naming the key.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xmw_ray.data.splits import SplitSpec
from xmw_ray.errors import XmwInputError, reading
from xmw_ray.storage import join_path


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSection(Strict):
    source: Literal["grid", "sites"] = "grid"
    store: str = Field(description="Grid store (Zarr) or Site store (Parquet) path or URL")
    split: SplitSpec = Field(default_factory=SplitSpec)
    batch_size: int = Field(64, gt=0)
    shuffle_buffer: int = Field(256, ge=0, description="local shuffle buffer in samples (0: no shuffle)")
    in_memory: bool = Field(False, description="keep each worker's shard in memory after the first epoch (small "
                            "stores such as the Site store; later epochs reshuffle it locally)")
    val_cache_mb: float = Field(256, ge=0, description="each worker keeps its validation shard in memory after "
                                "the first pass when the whole validation part is at most this size (0: stream "
                                "it every epoch); validation otherwise decodes every chunk again for its share")


class KeyedValueError(ValueError):
    """A validator's error about a key below the field it validates (``params.hiddn_size``): :func:`validate`
    appends ``key`` to the field's dotted location, so the one line names the exact key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def check_params(params_cls: type[BaseModel], params: dict[str, Any], prefix: str = "params") -> None:
    """Inside a validator: validate ``params`` against ``params_cls`` (extra keys forbidden, bounds checked), so a
    typo or an impossible value is reported at config load, not inside a Ray worker."""
    try:
        params_cls(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join([prefix, *(str(p) for p in err["loc"])])
        if err["type"] == "extra_forbidden":
            problem = f"unknown key (known: {', '.join(params_cls.model_fields) or 'none'})"
        else:
            problem = err["msg"].removeprefix("Value error, ")
        raise KeyedValueError(key, problem) from None


class ModelSection(Strict):
    name: str = "lstm"
    params: dict[str, Any] = Field(default_factory=dict)
    output_constraint: Literal["auto", "softplus", "none"] = Field(
        "auto", description="softplus: predicted flux never negative (in mg CH4 m-2 d-1); none: unconstrained; "
        "auto: softplus when every training target is >= 0 (from the store's training statistics), else none")

    @model_validator(mode="after")
    def _params_fit_model(self) -> ModelSection:
        """The registered model's own ``Params`` class checks the hyper-parameters."""
        require_models([self.name])
        from xmw_ray.models import model_class

        if "output_constraint" in self.params:  # one place for it: the run resolves ``auto`` from its targets
            raise KeyedValueError("params.output_constraint", "set model.output_constraint instead")
        check_params(model_class(self.name).Params, self.params)
        return self


class OptimSection(Strict):
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(10, gt=0)
    grad_clip: float = Field(1.0, gt=0)
    scheduler: Literal["cosine", "none"] = "cosine"
    patience: int = Field(5, gt=0, description="early stopping on the validation loss, in epochs")
    amp: bool = Field(True, description="bfloat16 autocast when training on GPU (ignored on CPU)")


class ResourcesSection(Strict):
    num_workers: int = Field(0, ge=0, description="0 = Ray Train local mode (in the driver process)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)


class RunSection(Strict):
    name: str = Field("xmw", description="the command's folder under output_dir (the training run, the transfer "
                      "experiment or the search); the same name again resumes it")
    output_dir: str = Field("runs", description="local folder or object-storage URL of the runs")
    seed: int = 0
    max_failures: int = Field(1, ge=0, description="worker failures a run recovers from via its last checkpoint")
    keep_checkpoints: int = Field(2, gt=0)
    checkpoint_every: int = Field(1, gt=0, description="epochs between resume checkpoints (a checkpoint is also "
                                  "written whenever validation improves, and at the last epoch)")


class TrainConfig(Strict):
    """One training run: what ``run_training`` and each Ray Train worker receive (and a checkpoint records)."""

    data: DataSection
    model: ModelSection = Field(default_factory=ModelSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    run: RunSection = Field(default_factory=RunSection)


#: The strategy name that means "no transfer": plain training on ``data`` (``search.strategies``).
NO_TRANSFER = "none"

#: In a store path, the experiment's folder ``<run.output_dir>/<run.name>`` (stores ``transfer.prepare`` builds).
RUN_DIR_TOKEN = "{run_dir}"


def strategy_catalog() -> dict[str, type[BaseModel]]:
    """Each registered transfer strategy's ``Params`` class by name, what ``transfer.strategies``,
    ``transfer.strategy_params`` and ``search.strategies`` are checked against. The one import of a later room
    (``transfer``) by this module, done only when a config is validated: it loads torch, which ``--help`` must not."""
    from xmw_ray.transfer.registry import STRATEGIES

    return {name: strategy.Params for name, strategy in STRATEGIES.items()}


def strategy_names() -> list[str]:
    """Registered transfer strategies: the default of ``transfer.strategies``."""
    return list(strategy_catalog())


class PrepareSection(Strict):
    """Build the stores when they do not exist: simulate at ``forcing``'s towers → ``source``; its observations →
    ``data`` (both ``xmw prepare sites`` with the same ``drivers``, so their feature layouts match).

    ``sim_input``: the simulated flux at each tower becomes a driver of the observation store (``SIM_FCH4``,
    tower driver set only) instead of a pretraining source: a hybrid model that corrects the process model from
    the towers' own drivers. The source store is then not built, and only ``scratch`` applies."""

    forcing: str = Field(description="folder of FLUXNET-CH4 site files (with the META file)")
    drivers: Literal["xmw", "tower", "map"] = Field("xmw", description="xmw prepare sites --drivers")
    sim_input: bool = Field(False, description="simulated flux as an observation-store driver (drivers: tower)")

    @model_validator(mode="after")
    def _sim_needs_tower(self) -> PrepareSection:
        if self.sim_input and self.drivers != "tower":
            raise ValueError("sim_input needs drivers: tower")
        return self


class TransferSection(Strict):
    """What ``xmw transfer`` compares: strategies x models x settings x fractions x seeds, each a training run on
    ``data`` (the observations) scored on its test split, beside a gradient-boosted-tree baseline."""

    settings: dict[str, SplitSpec] = Field(description="observation splits by name, e.g. temporal / spatial")
    strategies: list[str] = Field(default_factory=lambda: list(strategy_names()),
                                  description="transfer strategies to compare (default: all)")
    strategy_params: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                       description="STRATEGY: {its parameters} per strategy")
    models: list[ModelSection] | None = Field(None, description="models to compare (default: [model])")
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0],
                                   description="fractions of the observations' training part each run keeps")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="run seeds (run.seed is not used)")
    baseline: dict[str, Any] | None = Field(default_factory=dict, description="GBT parameters; null: no GBT row")
    prepare: PrepareSection | None = None
    ensemble: int = Field(1, ge=1, description="members per run (seeds differ), averaged into one checkpoint")
    deploy_setting: str | None = Field(None, description="setting (e.g. kind: all) whose run becomes `best`; the "
                                       "strategy, model and fraction are chosen by validation NSE elsewhere")

    @model_validator(mode="after")
    def _consistent(self) -> TransferSection:
        if self.deploy_setting is not None and self.deploy_setting not in self.settings:
            raise ValueError(f"deploy_setting {self.deploy_setting!r} is not one of the settings "
                             f"({', '.join(self.settings)})")
        if self.prepare is not None and self.prepare.sim_input and set(self.strategies) != {"scratch"}:
            raise ValueError("prepare.sim_input makes the simulation a driver, not a source: strategies must be "
                             "[scratch]")
        return self

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        require_strategies(v)
        return v

    @field_validator("strategy_params")
    @classmethod
    def _strategy_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each strategy's parameters against its own class, before the baseline or any run starts."""
        catalog = strategy_catalog()
        for name, params in v.items():
            if name not in catalog:
                raise KeyedValueError(name, f"unknown strategy (known: {', '.join(catalog)})")
            check_params(catalog[name], params, prefix=name)
        return v

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 1 for f in v):
            raise ValueError("fractions must be in (0, 1]")
        return v


class SearchSection(Strict):
    """What ``xmw tune`` searches (Optuna suggestions, ASHA early stopping); trials train on ``data``."""

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
        check_model_spaces(self)
        return self

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, v: list[str]) -> list[str]:
        require_strategies(v, also=(NO_TRANSFER,))
        return v


def check_model_spaces(search: SearchSection) -> None:
    """Every searched model has a space, and the space's lowest and highest answers are valid ``Params`` of that
    model: a space that can propose an impossible model fails at config load, not in a trial after Ray started."""
    from xmw_ray.models import model_class
    from xmw_ray.models.ranges import SIZES, model_space

    for model in search.models:
        space = model_space(model)
        for corner in (0, -1):
            params = space(_Corner(corner), "", SIZES[search.space])
            check_params(model_class(model).Params, params, prefix=f"{model} (space {search.space!r})")


class _Corner:
    """Optuna's ``suggest_*`` answered with every range's first (``0``) or last (``-1``) value."""

    def __init__(self, end: int) -> None:
        self._end = end

    def suggest_categorical(self, _name: str, choices: list[Any]) -> Any:
        return choices[self._end]

    def suggest_int(self, _name: str, low: int, high: int, **_: Any) -> int:
        return (low, high)[self._end]

    def suggest_float(self, _name: str, low: float, high: float, **_: Any) -> float:
        return (low, high)[self._end]


class ExperimentConfig(TrainConfig):
    """The one config file of every command: the training core (``xmw train`` trains ``model`` on ``data``),
    ``source`` and ``pretrain_optim`` for the transfer strategies, and the sections ``xmw transfer``
    (``transfer``) and ``xmw tune`` (``search``) require. ``run.output_dir/run.name`` is each command's folder."""

    data: DataSection = Field(description="what a model trains, validates and is tested on (for transfer: the "
                              "observations, the target)")
    source: DataSection | None = Field(None, description="simulations the transfer strategies pretrain on "
                                       "(every strategy but scratch)")
    pretrain_optim: OptimSection | None = Field(None, description="optimiser of a strategy's pretraining phase "
                                                "(default: optim)")
    transfer: TransferSection | None = Field(None, description="required by xmw transfer")
    search: SearchSection | None = Field(None, description="required by xmw tune")

    def strategies_on_source(self) -> set[str]:
        """The strategies of ``transfer`` and ``search`` that pretrain on ``source`` (every one but scratch)."""
        needs = set(self.transfer.strategies) - {"scratch"} if self.transfer is not None else set()
        needs |= set(self.search.strategies) - {NO_TRANSFER, "scratch"} if self.search is not None else set()
        return needs

    @model_validator(mode="after")
    def _source_for_strategies(self) -> ExperimentConfig:
        needs = self.strategies_on_source()
        if self.source is None and needs:
            raise KeyedValueError("source", f"missing (strategies {', '.join(sorted(needs))} pretrain on it)")
        if self.search is not None and self.resources.num_workers < 1:
            raise KeyedValueError("resources", "a search needs num_workers >= 1 (Ray Train local mode "
                                  "reports nothing to Tune)")
        return self

    def training(self, **update: Any) -> TrainConfig:
        """The training core as one run's :class:`TrainConfig` (``update`` replaces sections, e.g. ``run``)."""
        return TrainConfig(**{**{k: getattr(self, k) for k in TrainConfig.model_fields}, **update})

    def pretraining(self) -> OptimSection:
        """The optimiser of a pretraining phase: ``pretrain_optim``, else ``optim``."""
        return self.pretrain_optim or self.optim

    def run_dir(self) -> str:
        """The command's folder ``<run.output_dir>/<run.name>`` (relative when ``output_dir`` is)."""
        return join_path(self.run.output_dir, self.run.name)

    def resolved(self) -> ExperimentConfig:
        """Store paths with ``{run_dir}`` filled in."""
        def fill(section: DataSection | None) -> DataSection | None:
            if section is None:
                return None
            return section.model_copy(update={"store": section.store.replace(RUN_DIR_TOKEN, self.run_dir())})

        return self.model_copy(update={"data": fill(self.data), "source": fill(self.source)})


def require_strategies(names: list[str], also: tuple[str, ...] = ()) -> None:
    """Inside a validator: the first name that is neither a registered transfer strategy nor one of ``also``, in
    one line with the names allowed. The registry is imported only when a name is not in ``also``."""
    wanted = [s for s in names if s not in also]
    if not wanted:
        return
    known = strategy_names()
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}; known: {', '.join([*also, *sorted(known)])}")


def require_models(names: list[str]) -> None:
    """Inside a validator: the registry's one-line error for an unknown model, as the ValueError pydantic
    reports under the config key."""
    from xmw_ray.models import model_class

    for name in names:
        try:
            model_class(name)
        except XmwInputError as exc:
            raise ValueError(str(exc)) from None


C = TypeVar("C", bound=BaseModel)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise XmwInputError(f"--set {dotted}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["optim.lr=0.001", "model.name=gru"]`` → nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise XmwInputError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise XmwInputError(f"--set {pair}: not a YAML value ({str(exc).splitlines()[0]}); a string that "
                                f"starts with @, *, %, ` or a bracket goes in YAML quotes") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of ``over`` into a copy of ``base``."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def validate(raw: dict[str, Any], cls: type[C], source: str = "config") -> C:
    """Validate a raw dict into ``cls``; the first error becomes one line naming the dotted key."""
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        loc = [str(p) for p in err["loc"]]
        if isinstance(cause, KeyedValueError):
            loc.append(cause.key)
        key = ".".join(loc) or "<root>"
        if isinstance(cause, KeyedValueError):
            kind = cause.problem
        else:
            kind = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise XmwInputError(f"{source}: {key}: {kind}") from None


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None,
                cls: type[C] = ExperimentConfig, require: str | None = None) -> C:  # type: ignore[assignment]
    """Read a YAML config, apply ``--set`` overrides, validate into ``cls``; ``require`` names the section the
    command needs (``transfer``, ``search``), refused in one line when the file has none."""
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        p = Path(path)
        source = str(p)
        if p.is_dir():
            raise XmwInputError(f"{p}: a folder, where a config file is expected")
        if not p.is_file():
            raise XmwInputError(f"{p}: config file not found")
        try:
            with reading(p):
                raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise XmwInputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise XmwInputError(f"{p}: top level must be a mapping")
    cfg = validate(merge(raw, parse_overrides(overrides)), cls, source)
    if require is not None and getattr(cfg, require, None) is None:
        section = cls.model_fields[require].annotation
        found = _section_of(section)
        keys = ", ".join(found[0].model_fields) if found else ""
        raise XmwInputError(f"{source}: {require}: missing section (this command needs it; keys: {keys})")
    return cfg


def _section_of(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The config section class inside a field's type (``DataSection | None``, ``list[ModelSection]``,
    ``dict[str, SplitSpec]``) and how it nests (``""``, ``"list"``, ``"dict"``); None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin = get_origin(annotation)
    for arg in get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            nest = "list" if origin is list else "dict" if origin is dict else found[1]
            return found[0], nest
    return None


def _key_lines(cls: type[BaseModel], prefix: str, seen: dict[type[BaseModel], str]) -> list[tuple[str, str]]:
    """(label, text) of each key of ``cls``, then of its nested sections; a section class met before refers to
    where its keys were listed."""
    rows: list[tuple[str, str]] = []
    nested: list[tuple[str, str]] = []
    for name, field in cls.model_fields.items():
        key = prefix + name
        label = f"{key} (required)" if field.is_required() else key
        found = _section_of(field.annotation)
        if found is None:
            parts = [field.description or ""]
            if get_origin(field.annotation) is Literal:
                parts.append("one of " + "|".join(map(str, get_args(field.annotation))))
            if not field.is_required() and field.default_factory is None:
                parts.append(f"default {field.default}")
            text = "; ".join(p for p in parts if p)
        else:
            section, nest = found
            if section in seen:
                keys = f"the keys of {seen[section]}"
            else:
                keys = ", ".join(section.model_fields)
                seen[section] = key
            text = {"": keys, "list": f"list of {{{keys}}}", "dict": f"NAME: {{{keys}}} per name"}[nest]
            if field.description:
                text += f"; {field.description}"
            if nest == "" and keys != f"the keys of {seen[section]}":
                nested += _key_lines(section, f"{key}.", seen)
        rows.append((label, text))
    return rows + nested


def describe_keys(cls: type[BaseModel], width: int = 100) -> list[str]:
    """One line (wrapped) per key of a config class, sections first and the keys of each nested section after,
    for ``--help``: read from the class itself so the help cannot drift from what ``load_config`` accepts."""
    rows = _key_lines(cls, "", {})
    pad = max(len(label) for label, _ in rows) + 4
    lines: list[str] = []
    for label, text in rows:
        lines += textwrap.wrap(text, width, initial_indent=f"  {label:<{pad - 2}}", subsequent_indent=" " * pad) \
            or [f"  {label}"]
    return lines
