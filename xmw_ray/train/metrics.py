"""Evaluation metrics over observed days: NaN observations (unobserved days) never count.

Metrics are computed from seven running sums per entity (n, Σx, Σy, Σx², Σy², Σxy, Σ(x−y)², x = prediction,
y = observation), so the same code scores an in-memory array and a stream of chunks (``MetricAccumulator``).

- ``rmse``; ``nrmse`` = RMSE / mean observation; ``nse`` = 1 − SSE/SST (= scikit-learn's ``r2_score``);
  ``pearson_r2`` = squared Pearson correlation (what flux papers often call R²); ``kge`` (Gupta et al. 2009)
  = 1 − √((r−1)² + (σx/σy − 1)² + (μx/μy − 1)²); ``bias`` = mean(prediction − observation), flux units; ``n``.
- A metric that is undefined for the data (no observation, constant observations, zero mean) is NaN.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

from xmw_ray.data.contract import DAYS_PER_YEAR, MONTH_OF_DAY
from xmw_ray.errors import XmwInputError

METRIC_KEYS = ("nse", "rmse", "nrmse", "pearson_r2", "kge", "bias", "n")
Aggregation = Literal["daily", "monthly"]
_N, _SX, _SY, _SXX, _SYY, _SXY, _SEE = range(7)
_MONTH_ONEHOT = np.eye(12, dtype=np.float64)[MONTH_OF_DAY]  # (365, 12)


# --- metrics from sums ---------------------------------------------------------------------------------------
def _sums(pred: np.ndarray, obs: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups, 7)`` sums over the finite (pred, obs) pairs of each row group."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    per_row = [ok, x, y, x * x, y * y, x * y, (x - y) ** 2]
    out = np.empty((n_groups, 7))
    for k, term in enumerate(per_row):
        row = term.reshape(term.shape[0], -1).sum(axis=1)
        out[:, k] = np.bincount(group, row, minlength=n_groups)
    return out


def metrics_from_sums(s: np.ndarray) -> dict[str, float]:
    """The metric dict of one row of sums (see the module docstring for definitions)."""
    n = float(s[_N])
    if n <= 0:
        return {**dict.fromkeys(METRIC_KEYS[:-1], float("nan")), "n": 0}
    mx, my = s[_SX] / n, s[_SY] / n
    sxx = max(s[_SXX] - n * mx * mx, 0.0)  # n · variance of predictions
    syy = max(s[_SYY] - n * my * my, 0.0)  # n · variance of observations
    sxy = s[_SXY] - n * mx * my
    rmse = float(np.sqrt(s[_SEE] / n))
    nan = float("nan")
    r = sxy / np.sqrt(sxx * syy) if sxx > 0 and syy > 0 else nan
    alpha = np.sqrt(sxx / syy) if syy > 0 else nan
    beta = mx / my if my != 0 else nan
    return {
        "nse": float(1.0 - s[_SEE] / syy) if syy > 0 else nan,
        "rmse": rmse,
        "nrmse": float(rmse / my) if my != 0 else nan,
        "pearson_r2": float(r * r),
        "kge": float(1.0 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2)),
        "bias": float(mx - my),
        "n": int(n),
    }


def metrics(pred: np.ndarray, obs: np.ndarray) -> dict[str, float]:
    """All metrics of one set of (prediction, observation) pairs; pairs with a NaN are skipped."""
    pred, obs = np.asarray(pred).reshape(1, -1), np.asarray(obs).reshape(1, -1)
    if pred.shape != obs.shape:
        raise ValueError(f"metrics: pred and obs sizes differ ({pred.size} vs {obs.size})")
    return metrics_from_sums(_sums(pred, obs, np.zeros(1, dtype=np.int64), 1)[0])


def rmse(pred: np.ndarray, obs: np.ndarray) -> float:
    return metrics(pred, obs)["rmse"]


def nrmse(pred: np.ndarray, obs: np.ndarray) -> float:
    return metrics(pred, obs)["nrmse"]


def nse(pred: np.ndarray, obs: np.ndarray) -> float:
    return metrics(pred, obs)["nse"]


def pearson_r2(pred: np.ndarray, obs: np.ndarray) -> float:
    return metrics(pred, obs)["pearson_r2"]


def kge(pred: np.ndarray, obs: np.ndarray) -> float:
    return metrics(pred, obs)["kge"]


def bias(pred: np.ndarray, obs: np.ndarray) -> float:
    return metrics(pred, obs)["bias"]


# --- aggregation and per-entity evaluation -------------------------------------------------------------------
def monthly_means(pred: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 365)`` → ``(N, 12)``: each month's mean over its OBSERVED days (prediction over the same days);
    a month with no observation is NaN in both, so it is skipped."""
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(obs) & np.isfinite(pred)
    count = ok.astype(np.float64) @ _MONTH_ONEHOT
    with np.errstate(invalid="ignore", divide="ignore"):
        pm = np.where(ok, pred, 0.0) @ _MONTH_ONEHOT / count
        om = np.where(ok, obs, 0.0) @ _MONTH_ONEHOT / count
    return np.where(count > 0, pm, np.nan), np.where(count > 0, om, np.nan)


def entity_index(entities: Iterable, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct entities and each row's index into them."""
    ent = np.asarray(entities)
    if ent.shape != (n_rows,):
        raise XmwInputError(f"entities must have one value per sample ({n_rows}), got shape {ent.shape}")
    names, inv = np.unique(ent, return_inverse=True)
    return names, inv.reshape(-1)


class MetricAccumulator:
    """Pooled and per-entity metrics over chunks of samples, holding only seven sums per entity."""

    def __init__(self, aggregation: Aggregation = "daily") -> None:
        if aggregation not in ("daily", "monthly"):
            raise XmwInputError(f"aggregation must be 'daily' or 'monthly', got {aggregation!r}")
        self.aggregation = aggregation
        self._sums: dict[str, np.ndarray] = {}

    def update(self, pred: np.ndarray, obs: np.ndarray, entities: Iterable) -> None:
        """Add a chunk: ``pred``/``obs`` ``(N, 365)`` in flux units, ``entities (N,)``."""
        pred, obs = np.asarray(pred), np.asarray(obs)
        if pred.ndim != 2 or pred.shape[1] != DAYS_PER_YEAR or pred.shape != obs.shape:
            raise XmwInputError(
                f"pred and obs must both be (N, {DAYS_PER_YEAR}), got {pred.shape} and {obs.shape}"
            )
        names, inv = entity_index(entities, pred.shape[0])
        if not len(names):
            return
        if self.aggregation == "monthly":
            pred, obs = monthly_means(pred, obs)
        for name, row in zip(names, _sums(pred, obs, inv, len(names)), strict=True):
            key = str(name)
            if key in self._sums:
                self._sums[key] += row
            else:
                self._sums[key] = row

    def entity_sums(self) -> dict[str, np.ndarray]:
        """A copy of each entity's seven sums (``metrics_from_sums`` scores any total of them): resampling entities
        (a bootstrap over towers) adds these instead of re-reading the predictions."""
        return {name: s.copy() for name, s in sorted(self._sums.items())}

    def result(self) -> dict[str, dict]:
        """``{"pooled": metrics, "median": median over entities, "per_entity": {entity: metrics}}``."""
        per_entity = {name: metrics_from_sums(s) for name, s in sorted(self._sums.items())}
        pooled = metrics_from_sums(sum(self._sums.values(), np.zeros(7)))
        median: dict[str, float] = {}
        for key in METRIC_KEYS:
            vals = np.array([m[key] for m in per_entity.values()], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            median[key] = float(np.median(vals)) if vals.size else float("nan")
        return {"pooled": pooled, "median": median, "per_entity": per_entity}


def evaluate_predictions(
    pred: np.ndarray,
    obs: np.ndarray,
    entities: Iterable,
    years: Iterable,
    aggregation: Aggregation = "daily",
) -> dict[str, dict]:
    """Score ``(N, 365)`` predictions: pooled over all days, median over entities, and per entity.

    Each (entity, year) must appear once — a duplicated sample would be counted twice.
    """
    pred, obs = np.asarray(pred), np.asarray(obs)
    ent, yrs = np.asarray(entities), np.asarray(years)
    if yrs.shape != (pred.shape[0],):
        raise XmwInputError(f"years must have one value per sample ({pred.shape[0]}), got shape {yrs.shape}")
    if ent.shape == yrs.shape and ent.size:
        pairs = np.unique(np.stack([ent.astype(str), yrs.astype(str)], axis=1), axis=0)
        if len(pairs) != len(ent):
            raise XmwInputError("evaluate_predictions: some (entity, year) samples appear more than once")
    acc = MetricAccumulator(aggregation)
    acc.update(pred, obs, ent)
    return acc.result()
