"""One typed experiment configuration, validated up front (YAML file + ``--set key=value`` overrides).

Every later room (train, transfer, tune) reads the same object, so a typo is caught before any Ray work starts:
an unknown key or a wrong type is a single line naming the key.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from xmw_ray.data.splits import SplitSpec
from xmw_ray.errors import XmwInputError


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
    name: str = "xmw"
    output_dir: str = "runs"
    seed: int = 0
    max_failures: int = Field(1, ge=0, description="worker failures a run recovers from via its last checkpoint")
    keep_checkpoints: int = Field(2, gt=0)
    checkpoint_every: int = Field(1, gt=0, description="epochs between resume checkpoints (a checkpoint is also "
                                  "written whenever validation improves, and at the last epoch)")


class TrainConfig(Strict):
    data: DataSection
    model: ModelSection = Field(default_factory=ModelSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    run: RunSection = Field(default_factory=RunSection)


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
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw else "")
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
                cls: type[C] = TrainConfig) -> C:  # type: ignore[assignment]
    """Read a YAML config, apply ``--set`` overrides, validate into ``cls``."""
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise XmwInputError(f"{p}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise XmwInputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise XmwInputError(f"{p}: top level must be a mapping")
    return validate(merge(raw, parse_overrides(overrides)), cls, source)


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
