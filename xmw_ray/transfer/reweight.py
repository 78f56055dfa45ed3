"""``reweight``: simulation samples weighted per sample by how much they resemble the observations.

Each sample is summarised by its drivers' annual mean and spread (over the days the driver has: tower drivers
have gaps) plus its static vector; a summary a sample cannot have (a driver with no day at all, e.g. a column the
tower lacks) is filled with that summary's mean over the samples the weights are fitted on, as the models fill a
missing driver with the training mean. Weights:

- ``classifier``: a logistic domain classifier on those summaries (balanced classes) gives the density ratio
  ``w = p(obs | x) / p(sim | x)`` (clipped at ``clip``);
- ``meanstd``: X-MethaneWet's mean/spread similarity, applied per sample: ``w = exp(-½ · mean_k z_k²)`` with
  ``z = (summary - mean_obs) / std_obs``.

Weights are scaled to mean 1 over the simulation samples. Training is joint: every step pairs a simulation
batch (weights × ``decay^epoch``, so the fit moves toward the observations) with an observation batch
(weight 1); the loss is ``masked_mse`` with those per-sample weights. The best epoch is chosen on the
observations' validation split.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from xmw_ray.config import ExperimentConfig
from xmw_ray.data import schema
from xmw_ray.data.ray_datasets import norm_stats, sample_dataset, store_info
from xmw_ray.errors import XmwInputError
from xmw_ray.train.loop import WEIGHT_COLUMN, Objective
from xmw_ray.train.losses import masked_mse
from xmw_ray.train.runner import TRAIN_COLUMNS, TrainOutcome, run_training
from xmw_ray.transfer.base import StrategyParams, require_source, target_config, validate_params


class ReweightParams(StrategyParams):
    method: Literal["classifier", "meanstd"] = "classifier"
    decay: float = Field(0.8, gt=0.0, le=1.0, description="simulation weights × decay^epoch")
    clip: float = Field(10.0, gt=0.0, description="largest density ratio (classifier)")
    max_fit_samples: int = Field(4000, ge=10, description="simulation samples used to fit the weights")


def reweight_space(t: Any, p: str) -> dict[str, Any]:
    """Search range of ``ReweightParams``: how fast the simulation weights decay."""
    return {"decay": t.suggest_float(p + "decay", 0.5, 1.0)}


def sample_summary(dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
    """``(B, 365, D)``, ``(B, S)`` → ``(B, 2D + S)``: annual mean and std of each driver over its valid days, then
    the statics; NaN where a driver has no valid day (or a static is missing)."""
    dynamic = np.asarray(dynamic, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a driver with no valid day → NaN, filled at fit/weight
        moments = [np.nanmean(dynamic, axis=1), np.nanstd(dynamic, axis=1)]
    return np.concatenate([*moments, np.asarray(static, np.float64)], axis=1)


class SampleWeighter:
    """Fitted weight rule; called on a numpy batch it adds the ``weight`` column (a Ray Data ``map_batches`` fn)."""

    def __init__(self, method: str, clip: float = 10.0) -> None:
        self.method, self.clip = method, clip
        self.scale = 1.0

    def fit(self, source: np.ndarray, target: np.ndarray) -> SampleWeighter:
        if len(target) == 0 or len(source) == 0:
            raise XmwInputError("reweight: need simulation and observation training samples to fit weights")
        pooled = np.concatenate([source, target])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a summary no sample has: filled with 0
            self.fill = np.nan_to_num(np.nanmean(pooled, axis=0))
        source, target = self.filled(source), self.filled(target)
        if self.method == "classifier":
            self.scaler = StandardScaler().fit(np.concatenate([source, target]))
            x = self.scaler.transform(np.concatenate([source, target]))
            y = np.r_[np.zeros(len(source)), np.ones(len(target))]
            self.clf = LogisticRegression(class_weight="balanced", max_iter=1000).fit(x, y)
        else:
            self.mu = target.mean(axis=0)
            sd = target.std(axis=0)
            self.sd = np.where(sd > 1e-9, sd, source.std(axis=0) + 1e-9)
        self.scale = 1.0
        self.scale = 1.0 / max(float(self.raw(source).mean()), 1e-12)
        return self

    def filled(self, summary: np.ndarray) -> np.ndarray:
        """``summary`` with each missing value replaced by that column's mean over the fitted samples."""
        return np.where(np.isnan(summary), self.fill, summary)

    def raw(self, summary: np.ndarray) -> np.ndarray:
        summary = self.filled(summary)
        if self.method == "classifier":
            p = self.clf.predict_proba(self.scaler.transform(summary))[:, 1]
            return np.clip(p / np.maximum(1.0 - p, 1e-12), 0.0, self.clip)
        z = (summary - self.mu) / self.sd
        return np.exp(-0.5 * np.mean(z * z, axis=1))

    def weights(self, dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
        return (self.raw(sample_summary(dynamic, static)) * self.scale).astype(np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch[WEIGHT_COLUMN] = self.weights(batch[schema.DYNAMIC], batch[schema.STATIC])
        return batch


def _summaries(ds, limit: int | None = None) -> np.ndarray:
    rows: list[np.ndarray] = []
    n = 0
    for b in ds.iter_batches(batch_size=256, batch_format="numpy"):
        rows.append(sample_summary(b[schema.DYNAMIC], b[schema.STATIC]))
        n += len(rows[-1])
        if limit is not None and n >= limit:
            break
    return np.concatenate(rows)[:limit] if rows else np.zeros((0, 0))


class ReweightObjective(Objective):
    """Weighted masked MSE over a simulation batch (weights decayed per epoch) and an observation batch."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def loss(self, model, bare, extras, batch, source, progress, epoch):
        if source is None:
            raise ValueError("reweight: the objective needs a paired source batch")
        dyn = torch.cat([source[schema.DYNAMIC], batch[schema.DYNAMIC]])
        stat = torch.cat([source[schema.STATIC], batch[schema.STATIC]])
        y = torch.cat([source[schema.TARGET], batch[schema.TARGET]])
        w_src = source[WEIGHT_COLUMN] * self.decay**epoch
        w = torch.cat([w_src, torch.ones(batch[schema.TARGET].shape[0], device=w_src.device)])
        pred = model(dyn, stat)
        loss = masked_mse(pred.float(), y, w) / float(bare.target_std) ** 2
        return loss, {"source_weight_mean": float(w_src.mean())}


class Reweight:
    name = "reweight"
    Params = ReweightParams
    search_space = staticmethod(reweight_space)

    def run(self, cfg: ExperimentConfig, params: dict[str, Any], callbacks: list | None = None) -> TrainOutcome:
        checked = validate_params(self.Params, params, self.name)
        src = require_source(cfg, self.name)
        info = store_info(src.store, src.source)
        source_train = sample_dataset(info, src.split, "train")
        tgt_info = store_info(cfg.data.store, cfg.data.source)
        target_train = sample_dataset(tgt_info, cfg.data.split, "train")
        n_src = source_train.count()
        frac = min(1.0, checked.max_fit_samples / max(n_src, 1))
        fit_src = source_train.random_sample(frac, seed=cfg.run.seed) if frac < 1.0 else source_train
        weighter = SampleWeighter(checked.method, checked.clip).fit(_summaries(fit_src, checked.max_fit_samples),
                                                                   _summaries(target_train))
        weighted = source_train.select_columns(TRAIN_COLUMNS).map_batches(weighter, batch_format="numpy")
        return run_training(target_config(cfg), source=weighted, objective=ReweightObjective(checked.decay),
                            norm=norm_stats(info, src.split).to_dict(), callbacks=callbacks)
