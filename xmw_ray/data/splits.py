"""Train/validation/test splits, evaluated per block without reading data (a Ray Data read task calls them).

Kinds:

- ``temporal``: years in ``train_years`` train, years in ``test_years`` test (simulations: 1979–1998 / 1999–2018).
- ``spatial``: entities are split into ``n_folds`` seeded folds (or the explicit ``folds`` mapping, e.g.
  X-MethaneWet's 5 tower folds, ``folds="xmw"``); fold ``test_fold`` tests, the others train; all years.
- ``site_temporal``: X-MethaneWet's per-tower rule: of an entity's sorted years, those after
  ``years[(n - 1) * 6 // 7]`` test, the others train (for towers of up to 8 years: the last year of each
  multi-year tower tests).
- ``all``: every sample trains and none tests: the deployable model fitted on everything once model choices are
  made elsewhere (validation, when asked for, is still carved out of training).

``fraction`` keeps a seeded share of the training ENTITIES (data-sparse experiments); ``val_fraction`` carves
validation out of training only: by entity for ``spatial``, by a seeded per-sample draw otherwise. Every random
choice hashes the entity id (and year) with the seed, so a sample's part never depends on the block it is in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from xmw_ray.data.presets import resolve_site_ints
from xmw_ray.errors import XmwInputError

NONE, TRAIN, VAL, TEST = 0, 1, 2, 3
PART_NAMES = ("none", "train", "val", "test")
PART_CODES = {name: code for code, name in enumerate(PART_NAMES)}


class SplitSpec(BaseModel):
    """What a split is; its :meth:`key` names the normalisation statistics computed for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["temporal", "spatial", "site_temporal", "all"] = "temporal"
    train_years: tuple[int, int] = (1979, 1998)
    test_years: tuple[int, int] = (1999, 2018)
    n_folds: int = Field(5, ge=2)
    test_fold: int = Field(0, ge=0)
    seed: int = 0
    #: ``entity → fold``, or ``"xmw"`` (X-MethaneWet's tower folds) or a CSV path with ``site_id,fold``.
    folds: dict[str, int] | str | None = None
    fraction: float = Field(1.0, gt=0.0, le=1.0)
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> SplitSpec:
        for name in ("train_years", "test_years"):
            lo, hi = getattr(self, name)
            if hi < lo:
                raise ValueError(f"{name}: end {hi} before start {lo}")
        if self.folds is None and self.test_fold >= self.n_folds:
            raise ValueError(f"test_fold {self.test_fold} must be < n_folds {self.n_folds}")
        return self

    def fold_map(self) -> dict[str, int] | None:
        if self.folds is None or isinstance(self.folds, dict):
            return self.folds
        return resolve_site_ints(self.folds, "fold")

    def key(self) -> str:
        """Stable short name of this split (kind + hash of every field)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return f"{self.kind}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _entity_hash(entities: Sequence[str], salt: str) -> np.ndarray:
    """Deterministic uint64 per entity id (independent of order and of the process)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(f"{salt}:{e}".encode(), digest_size=8).digest(), "little") for e in entities],
        dtype=np.uint64,
    )


def _uniform(h: np.ndarray) -> np.ndarray:
    """uint64 hashes → floats in [0, 1) (splitmix64 finaliser)."""
    z = h.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class SplitPlan:
    """A :class:`SplitSpec` bound to an entity list: ``parts(entity_idx, years)`` → part codes (uint8)."""

    def __init__(
        self,
        spec: SplitSpec,
        entities: Sequence[str],
        years_of: Mapping[str, Sequence[int]] | None = None,
        all_years: Sequence[int] | None = None,
    ):
        self.spec = spec
        self.entities = [str(e) for e in entities]
        self.all_years = None if all_years is None else np.asarray(sorted(all_years), dtype=np.int64)
        n = len(self.entities)
        seed = str(spec.seed)
        u_entity = _uniform(_entity_hash(self.entities, f"entity:{seed}"))
        self._sample_hash = _entity_hash(self.entities, f"sample:{seed}")
        # Role of each entity: which entities may train, which are test (spatial), which are validation (spatial).
        self._fold = np.full(n, -1, dtype=np.int64)
        if spec.kind == "spatial":
            folds = spec.fold_map()
            if folds is not None:
                self._fold = np.array([folds.get(e, -1) for e in self.entities], dtype=np.int64)
                if spec.test_fold not in set(folds.values()):
                    raise XmwInputError(f"split: test_fold {spec.test_fold} is not a fold of the folds mapping")
            else:  # seeded balanced folds: rank of each entity's hash
                order = np.argsort(_uniform(_entity_hash(self.entities, f"fold:{seed}")), kind="stable")
                self._fold[order] = np.arange(n) % spec.n_folds
        train_entity = np.ones(n, dtype=bool)
        self._val_entity = np.zeros(n, dtype=bool)
        if spec.kind == "spatial":
            train_entity = (self._fold >= 0) & (self._fold != spec.test_fold)
            self._val_entity = train_entity & (u_entity < spec.val_fraction)
            train_entity &= ~self._val_entity
        # fraction: seeded share of training entities kept (independent draw from the validation one)
        u_frac = _uniform(_entity_hash(self.entities, f"fraction:{seed}"))
        self._train_entity = train_entity & (u_frac < spec.fraction)
        self._cutoff = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        if spec.kind == "site_temporal":
            if years_of is None:
                raise XmwInputError("split: site_temporal needs the years of every entity (years_of)")
            for i, e in enumerate(self.entities):
                ys = sorted(int(y) for y in years_of.get(e, ()))
                if ys:
                    self._cutoff[i] = ys[(len(ys) - 1) * 6 // 7]

    def entity_index(self, names: Sequence[str]) -> np.ndarray:
        """Index of each entity id in this plan; -1 for an id the plan does not know."""
        if not hasattr(self, "_index"):
            self._index = {e: i for i, e in enumerate(self.entities)}
        return np.array([self._index.get(str(n), -1) for n in names], dtype=np.int64)

    def parts(self, entity_idx: np.ndarray, years: np.ndarray) -> np.ndarray:
        """Part code (``NONE``/``TRAIN``/``VAL``/``TEST``) of each sample ``(entity_idx[i], years[i])``."""
        ei = np.asarray(entity_idx, dtype=np.int64)
        y = np.broadcast_to(np.asarray(years, dtype=np.int64), ei.shape)
        known = ei >= 0
        out = np.zeros(ei.shape, dtype=np.uint8)
        if not known.all():  # unknown entities (index -1) get no part
            out[known] = self.parts(ei[known], y[known])
            return out
        spec = self.spec
        if spec.kind == "spatial":
            out[self._fold[ei] == spec.test_fold] = TEST
            out[self._val_entity[ei]] = VAL
            out[self._train_entity[ei]] = TRAIN
            return out
        if spec.kind == "temporal":
            is_test = (y >= spec.test_years[0]) & (y <= spec.test_years[1])
            is_train = (y >= spec.train_years[0]) & (y <= spec.train_years[1]) & ~is_test
        elif spec.kind == "all":
            is_test = np.zeros(ei.shape, dtype=bool)
            is_train = ~is_test
        else:
            is_test = y > self._cutoff[ei]
            is_train = ~is_test
        out[is_test] = TEST
        trainable = is_train & self._train_entity[ei]
        u = _uniform(self._sample_hash[ei] ^ (y.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))
        out[trainable & (u >= spec.val_fraction)] = TRAIN
        out[trainable & (u < spec.val_fraction)] = VAL
        return out

    def years_needed(self, part: str) -> list[int]:
        """Years that can hold samples of ``part`` (of ``all_years``), so other years' chunks are never read."""
        if part not in PART_CODES or part == "none":
            raise ValueError(f"part must be train, val or test, got {part!r}")
        if self.all_years is None:
            raise ValueError("years_needed needs all_years")
        years = self.all_years
        spec = self.spec
        if spec.kind == "spatial":
            return years.tolist()
        if spec.kind == "all":
            return [] if part == "test" else years.tolist()
        if spec.kind == "temporal":
            lo, hi = spec.test_years if part == "test" else spec.train_years
            keep = (years >= lo) & (years <= hi)
            if part != "test":
                keep &= ~((years >= spec.test_years[0]) & (years <= spec.test_years[1]))
            return years[keep].tolist()
        finite = self._cutoff[self._cutoff < np.iinfo(np.int64).max]
        if part == "test":
            return years[years > finite.min()].tolist() if len(finite) else []
        return years[years <= finite.max()].tolist() if len(finite) else []
