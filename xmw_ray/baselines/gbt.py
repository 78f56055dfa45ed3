"""Gradient-boosted trees on per-day rows: the non-deep baseline every results table carries.

Each (sample, day) is one row whose features are the day's drivers, their 7- and 30-day trailing means (the
project's one NaN-aware ``trailing_mean``: a gap day is left out of the windows that hold it; days before 1 January
are not available, so early-January means use the days there are) and the sample's static vector. No calendar
of its own: the season is the drivers' (the tower set's solar season ``solar.SEASON_VARS``, the xmw set's shortwave
SOLR), the one the sequence models see. A bare day of year would put a southern tower's July in summer, and a
sample carries no latitude to compute one here. Missing values stay NaN: the trees route them. A table that lists this next to
the sequence models shows what the sequence models add beyond a good per-day regression with short memory.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field
from sklearn.ensemble import HistGradientBoostingRegressor

from xmw_ray.data.contract import DAYS_PER_YEAR
from xmw_ray.data.tower_features import TRAILING_WINDOWS, trailing_mean
from xmw_ray.errors import XmwInputError
from xmw_ray.models.base import HParams, validate_hparams


class GBTParams(HParams):
    """scikit-learn ``HistGradientBoostingRegressor`` settings plus a cap on the rows used for fitting."""

    max_iter: int = Field(300, ge=1, description="boosting iterations")
    learning_rate: float = Field(0.1, gt=0.0, description="shrinkage")
    max_leaf_nodes: int = Field(31, ge=2, description="leaves per tree")
    min_samples_leaf: int = Field(20, ge=1, description="rows per leaf")
    l2_regularization: float = Field(0.0, ge=0.0, description="leaf-value L2 penalty")
    max_rows: int | None = Field(500_000, ge=1, description="observed rows sampled for fitting (None = all)")
    random_state: int = Field(0, description="seed for row sampling and the regressor")
    trailing_windows: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        TRAILING_WINDOWS, description="days of the drivers' trailing means added as features (() when the drivers "
                                      "already carry them, e.g. over a record longer than one sample)")


def day_features(dynamic: np.ndarray, static: np.ndarray,
                 windows: tuple[int, ...] = TRAILING_WINDOWS) -> np.ndarray:
    """``(N, 365, D)`` + ``(N, S)`` → ``(N * 365, (1 + len(windows))·D + S)`` float32 per-day rows
    (sample-major): drivers, their trailing means per window, statics."""
    dynamic = np.asarray(dynamic, dtype=np.float64)
    static = np.asarray(static, dtype=np.float64)
    if dynamic.ndim != 3 or dynamic.shape[1] != DAYS_PER_YEAR:
        raise XmwInputError(f"gbt: dynamic must be (N, {DAYS_PER_YEAR}, D), got {dynamic.shape}")
    if static.ndim != 2 or static.shape[0] != dynamic.shape[0]:
        raise XmwInputError(f"gbt: static must be ({dynamic.shape[0]}, S), got {static.shape}")
    n, days, _ = dynamic.shape
    parts = [
        dynamic,
        *(trailing_mean(dynamic, w, axis=1) for w in windows),
        np.broadcast_to(static[:, None, :], (n, days, static.shape[1])),
    ]
    return np.concatenate(parts, axis=2).reshape(n * days, -1).astype(np.float32)


class GBTBaseline:
    """``GBTBaseline(**hparams).fit(dynamic, static, target).predict(dynamic, static) -> (N, 365)``."""

    def __init__(self, **hparams: Any) -> None:
        self.hp: GBTParams = validate_hparams(GBTParams, hparams, "gbt")  # type: ignore[assignment]
        self.regressor: HistGradientBoostingRegressor | None = None
        self.n_features: int | None = None
        self.used = np.arange(0)

    def fit(self, dynamic: np.ndarray, static: np.ndarray, target: np.ndarray) -> GBTBaseline:
        """Fit on every observed day (NaN targets dropped), at most ``max_rows`` of them, seeded."""
        x = day_features(dynamic, static, self.hp.trailing_windows)
        y = np.asarray(target, dtype=np.float64)
        if y.shape != (np.shape(dynamic)[0], DAYS_PER_YEAR):
            raise XmwInputError(
                f"gbt: target must be ({np.shape(dynamic)[0]}, {DAYS_PER_YEAR}), got {y.shape}"
            )
        y = y.reshape(-1)
        rows = np.flatnonzero(np.isfinite(y))
        if rows.size == 0:
            raise XmwInputError("gbt: the training target has no observed day")
        rng = np.random.default_rng(self.hp.random_state)
        if self.hp.max_rows is not None and rows.size > self.hp.max_rows:
            rows = np.sort(rng.choice(rows, self.hp.max_rows, replace=False))
        self.regressor = HistGradientBoostingRegressor(
            max_iter=self.hp.max_iter,
            learning_rate=self.hp.learning_rate,
            max_leaf_nodes=self.hp.max_leaf_nodes,
            min_samples_leaf=self.hp.min_samples_leaf,
            l2_regularization=self.hp.l2_regularization,
            early_stopping=False,
            random_state=self.hp.random_state,
        )
        # A feature with no value in the training rows (a driver no training tower measures) carries nothing,
        # and scikit-learn's binning fails on it: it is left out, at fit and at predict alike.
        self.used = np.flatnonzero(np.isfinite(x[rows]).any(axis=0))
        self.regressor.fit(x[rows][:, self.used], y[rows])
        self.n_features = x.shape[1]
        return self

    def predict(self, dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
        """Daily flux ``(N, 365)`` float32 in the target's units."""
        if self.regressor is None:
            raise XmwInputError("gbt: predict called before fit")
        x = day_features(dynamic, static, self.hp.trailing_windows)
        if x.shape[1] != self.n_features:
            raise XmwInputError(f"gbt: fitted on {self.n_features} features per day, got {x.shape[1]}")
        return self.regressor.predict(x[:, self.used]).reshape(-1, DAYS_PER_YEAR).astype(np.float32)
