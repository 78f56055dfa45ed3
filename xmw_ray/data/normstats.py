"""Normalisation statistics from the training part only, streamed over blocks and merged (Chan et al. 1979).

Each block (a Grid chunk-year, a Site store slice, a Ray Data batch) gives a :class:`NormPartial` of per-variable
count/mean/M2; partials merge in any order and grouping to the same result, so a Ray Data ``map_batches`` +
reduce gives the statistics a single process would. Non-finite values are not counted (NaN target days).
Saved as ``<store>/normstats/<split-key>.json`` (atomic); a zero standard deviation is stored as 1.0 so that
normalising a constant gives 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from xmw_ray.data import schema
from xmw_ray.data.splits import TRAIN, SplitPlan, SplitSpec
from xmw_ray.storage import write_text_atomic

NORMSTATS_DIR = "normstats"


@dataclass
class Moments:
    """Per-variable count, mean, sum of squared deviations (M2) and smallest finite value (``lo``; +inf when none):
    the target's ``lo`` says whether every training target is >= 0 (``models.base.resolve_output_constraint``)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    lo: np.ndarray

    @classmethod
    def empty(cls, d: int) -> Moments:
        return cls(np.zeros(d), np.zeros(d), np.zeros(d), np.full(d, np.inf))

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """Moments of ``(n, d)`` values, each column over its finite entries."""
        x = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(x)
        count = ok.sum(axis=0).astype(np.float64)
        total = np.where(ok, x, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        m2 = np.where(ok, (x - mean) ** 2, 0.0).sum(axis=0)
        lo = np.where(ok, x, np.inf).min(axis=0, initial=np.inf)
        return cls(count, mean, m2, lo)

    def merge(self, other: Moments) -> Moments:
        n = self.count + other.count
        safe = np.maximum(n, 1)
        delta = other.mean - self.mean
        mean = np.where(n > 0, self.mean + delta * other.count / safe, 0.0)
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / safe
        return Moments(n, mean, m2, np.minimum(self.lo, other.lo))

    def std(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.sqrt(np.where(self.count > 0, self.m2 / np.maximum(self.count, 1), 0.0))
        return np.where(s > 0, s, 1.0)


@dataclass
class NormPartial:
    """Mergeable moments of dynamic vars (over days), static vars and the target (over observed days)."""

    dynamic: Moments
    static: Moments
    target: Moments
    n_samples: int = 0

    @classmethod
    def of_block(cls, block: dict[str, np.ndarray], mask: np.ndarray | None = None) -> NormPartial:
        """Moments of the samples of ``block`` selected by ``mask`` (all when None)."""
        dyn, sta, tgt = block[schema.DYNAMIC], block[schema.STATIC], block[schema.TARGET]
        if mask is not None:
            dyn, sta, tgt = dyn[mask], sta[mask], tgt[mask]
        return cls(
            Moments.of(dyn.reshape(-1, dyn.shape[-1])),
            Moments.of(sta.reshape(-1, sta.shape[-1])),
            Moments.of(tgt.reshape(-1, 1)),
            int(len(tgt)),
        )

    def merge(self, other: NormPartial) -> NormPartial:
        return NormPartial(self.dynamic.merge(other.dynamic), self.static.merge(other.static),
                           self.target.merge(other.target), self.n_samples + other.n_samples)


def train_partial(block: dict[str, np.ndarray], plan: SplitPlan) -> NormPartial:
    """The partial of a block's TRAIN samples (what a Ray Data task computes per block)."""
    parts = plan.parts(plan.entity_index(block[schema.ENTITY]), block[schema.YEAR])
    return NormPartial.of_block(block, parts == TRAIN)


@dataclass
class NormStats:
    """Mean/std per dynamic var, per static var, and of the target; travels inside every checkpoint."""

    dynamic_vars: list[str]
    static_vars: list[str]
    dynamic_mean: np.ndarray
    dynamic_std: np.ndarray
    static_mean: np.ndarray
    static_std: np.ndarray
    target_mean: float
    target_std: float
    n_samples: int
    split_key: str = ""
    split: dict = field(default_factory=dict)
    #: The smallest observed training target (mg CH4 m-2 d-1); None in statistics cached before it was recorded.
    target_min: float | None = None

    @classmethod
    def from_partial(cls, p: NormPartial, dynamic_vars: Sequence[str], static_vars: Sequence[str],
                     spec: SplitSpec | None = None) -> NormStats:
        if p.n_samples == 0:
            raise ValueError("no training sample: normalisation statistics are undefined")
        return cls(list(dynamic_vars), list(static_vars), p.dynamic.mean, p.dynamic.std(), p.static.mean,
                   p.static.std(), float(p.target.mean[0]), float(p.target.std()[0]), p.n_samples,
                   spec.key() if spec else "", spec.model_dump(mode="json") if spec else {},
                   float(p.target.lo[0]) if np.isfinite(p.target.lo[0]) else None)

    def to_dict(self) -> dict:
        return {
            "dynamic_vars": self.dynamic_vars,
            "static_vars": self.static_vars,
            "dynamic_mean": self.dynamic_mean.tolist(),
            "dynamic_std": self.dynamic_std.tolist(),
            "static_mean": self.static_mean.tolist(),
            "static_std": self.static_std.tolist(),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "n_samples": self.n_samples,
            "split_key": self.split_key,
            "split": self.split,
            "target_min": self.target_min,
        }

    @classmethod
    def from_dict(cls, d: dict) -> NormStats:
        return cls(list(d["dynamic_vars"]), list(d["static_vars"]), np.asarray(d["dynamic_mean"]),
                   np.asarray(d["dynamic_std"]), np.asarray(d["static_mean"]), np.asarray(d["static_std"]),
                   float(d["target_mean"]), float(d["target_std"]), int(d["n_samples"]), d.get("split_key", ""),
                   d.get("split", {}), d.get("target_min"))

    def save(self, store_path: str) -> str:
        """Write ``<store>/normstats/<split_key>.json`` atomically; returns the path."""
        path = normstats_path(store_path, self.split_key)
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        write_text_atomic(path, text)  # object stores: one PUT, a whole object
        return path

    @classmethod
    def load(cls, store_path: str, split_key: str) -> NormStats:
        import fsspec

        with fsspec.open(normstats_path(store_path, split_key), "r") as fh:
            return cls.from_dict(json.load(fh))


def normstats_path(store_path: str, split_key: str) -> str:
    return f"{str(store_path).rstrip('/')}/{NORMSTATS_DIR}/{split_key}.json"


def reduce_partials(partials: Iterable[NormPartial]) -> NormPartial | None:
    total = None
    for p in partials:
        total = p if total is None else total.merge(p)
    return total


def grid_normstats(store, spec: SplitSpec, plan: SplitPlan | None = None) -> NormStats:
    """Training statistics of a :class:`GridStore` in one process, reading only the years training needs;
    ``plan``: the run's plan of ``spec`` (one per run), else it is built here."""
    plan = plan if plan is not None else SplitPlan(spec, store.entities, None, store.years)
    wanted = set(plan.years_needed("train"))
    partials = (
        train_partial(store.read_block(yi, ci), plan)
        for yi, year in enumerate(store.years) if year in wanted
        for ci in range(store.n_chunks)
    )
    total = reduce_partials(partials)
    if total is None:
        raise ValueError(f"split {spec.key()}: no training year in the store")
    return NormStats.from_partial(total, store.dynamic_vars, store.static_vars, spec)


def site_normstats(store, spec: SplitSpec, plan: SplitPlan | None = None) -> NormStats:
    """Training statistics of a :class:`SiteStore` (small: one pass over its rows); ``plan``: the run's plan of
    ``spec`` (one per run), else it is built here."""
    if plan is None:
        years_of = {s: store.years_of(s) for s in store.sites}
        all_years = sorted({y for ys in years_of.values() for y in ys})
        plan = SplitPlan(spec, store.sites, years_of, all_years)
    return NormStats.from_partial(train_partial(store.samples(), plan), store.dynamic_vars, store.static_vars, spec)
