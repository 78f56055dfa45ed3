"""Skill on towers nobody tuned on: nested leave-one-tower-out over the real FLUXNET-CH4 towers (issue #15, 1 and 4).

Why: ``bench/real_towers.py`` scores a preset whose configuration was chosen on the very towers it is scored on.
Here every choice is made inside the training towers, so the outer score estimates skill on a new tower.

Outer loop: leave-one-tower-out over the towers in ``--towers``; the outer tower's target is used once, to score.
These procedures are scored in the same run, on the same outer towers and days:

- **trees** (fixed, no choice): the project's ``GBTBaseline`` (max_iter=300, learning_rate=0.05) on the rows of
  ``real_towers.tree_rows`` (the towers' drivers, their trailing means, the solar season, |latitude|); in choice
  mode also **trees without trailing means** (``PLAIN_TREES``: the drivers, the solar season and |latitude| only,
  issue #15's own recipe for its strong trees), beside them;
- **network** (fixed, no choice): ``fluxnet-real-simdriver.yaml``'s model, optimiser, epochs and driver set (the
  process model's flux as the SIM_FCH4 driver; the ``fluxnet-real`` preset until choice mode picked ``finetune``;
  its Site store, prepared by its own ``prepare`` section under ``<out>``), an ensemble of ``--members`` seeds;
- **nested choice**: one of ``CANDIDATES`` (declared below, before any score was seen), chosen per outer fold by
  an inner grouped K-fold over the outer training towers only (towers as groups, ``--inner-folds``), on the
  criterion ``CRITERION``: the mean of the inner out-of-fold pooled NSE and median-tower NSE. Ties go to the
  earlier candidate. The chosen candidate is then refitted on all outer training towers and predicts the outer
  tower. Each fold's choice is printed.

Network training path: ``run_training`` through the ``scratch`` strategy with the preset's ``resources:
{num_workers: 0}``, i.e. Ray Train local mode, in this process: the project's own ``train_loop_per_worker`` (same
model, masked loss over the target variance, AdamW, clipping, normalisation from the fit's training towers only,
no early stopping). A hand-written loop would skip Ray Train's per-fit start-up, but it would be a second copy of
the training loop; the start-up is small beside 60 epochs, so the project's loop is used. Each fit's split is an
explicit tower → fold mapping in which the outer tower has no fold at all (it is neither trained on nor
normalised over). Finished fits live in ``<out>/runs/<fit>`` and are reused when the bench is rerun with the same
``--out`` (a long run that was interrupted resumes); the fit name holds the outer tower, inner fold, K, epochs,
members and seed, so other settings never share a fit. Use a fresh ``--out`` after changing code or the preset.

Affordability: inner fits train ``--inner-members`` network seeds (default 1), the outer refits ``--members``
(default 3, the preset's ensemble). A one-seed inner network is a little weaker than the three-seed refit, so the
inner criterion slightly under-rates the network candidates (a bias towards trees and blends, i.e. caution).

Uncertainty (issue #15 item 4): every outer prediction gets an 80 % interval by split-conformal calibration on
the inner out-of-fold residuals of the same procedure (its candidate's OOF predictions on the outer training
towers): score |obs - pred| / (|pred| + ``CONFORMAL_OFFSET``), q its ceil((n+1)·0.8)/n empirical quantile,
interval pred ± q·(|pred| + c): wide where the flux is large, never zero width where it is small. The inner
network is ``--inner-members`` seeds, the outer ``--members``, so the network's calibrated widths are if anything
wide. Printed: pooled coverage on the outer towers' observed days, and the median and range over towers.

Intervals on the scores: a bootstrap over outer towers (``BOOTSTRAP_RESAMPLES`` resamples of the towers with
replacement, seed ``BOOTSTRAP_SEED``), each metric recomputed from the pooled per-day predictions of the
resampled towers; 5th..95th percentiles (a 90 % interval).

Transfer mode (issue #15 item 3; ``--strategies``): each listed transfer strategy is a fixed procedure (no inner
choice), scored by the same outer LOTO at each ``--fractions`` share of the training towers (a seeded subset,
the split's ``fraction``: the data-sparse case), with the trees fitted on the same kept towers. The simulations
at the towers (``xmw simulate sites``) become a pretraining source prepared with the same tower drivers, instead
of the preset's SIM_FCH4 driver, so the target store is the towers without SIM_FCH4 (``transfer_overrides``);
pretraining uses no observed target and is shared by all folds. Strategies keep their default parameters.
Writes ``<out>/real_towers_transfer.md`` and ``.json``; no conformal intervals there.

Choice mode (issue #15 item 6; ``--choose``): the nested choice is among whole network procedures instead of
trees/network/blends: ``network`` (the preset: the simulated flux as the SIM_FCH4 driver) and any transfer
strategy (the simulations as a pretraining source, on transfer mode's stores), each candidate one network; the
trees and every candidate alone are scored beside the nested choice. Blends and trees are not candidates here,
because a preset deploys one network checkpoint. After the outer folds the same inner choice is made on all
towers (``choice_on_all``): that is the procedure's pick, the one the preset deploys; it scores no tower. Outer
refits are named ``<outer>-loto`` as in transfer mode, so the two modes share finished fits under one ``--out``.
``--outer`` runs only the named outer folds (a second process can take the other half on the same ``--out``;
a final run without it then reuses every fit). Writes ``<out>/real_towers_choice.md`` and ``.json``.
With ``--settings`` a second stage, inside the same outer fold, re-chooses the chosen procedure's LSTM size,
fine-tuning epochs, learning rate and use of the site descriptors among ``SETTINGS`` (the preset's values, or one
of them changed) on the same inner folds and criterion: the procedure ``NESTED_SETTINGS``, scored beside stage
one's ``NESTED``; the choice on all towers then picks the settings the preset deploys too. Earlier rounds had
settled those settings on these same towers; this stage puts them inside the inner loop.
With ``--driver-sets`` too, a third stage re-chooses the driver set of stage two's pick, the towers' own or the
map-ready one (``DRIVER_SETS``), on the same inner folds and criterion: the procedure ``NESTED_DRIVERS``; its map
stores are prepared under ``<out>/prepared`` beside the others.

Map variant (issue #15 item 5; ``--variant map``): the same nested protocol, candidates, conformal intervals and
bootstrap, with the map-ready preset ``configs/experiments/fluxnet-real-map.yaml`` in place of ``fluxnet-real-simdriver``:
its network on its own Site store (``--drivers map``: the Grid store's slots a tower supplies without a grid, daily
PREC, SOLR, TAIR, VAPR, wetland type, CH4/CO2), and the same trees restricted to that store's inputs (its rows, plus
the trees' usual 7- and 30-day trailing means of those drivers, which a grid's daily drivers give too; no solar
season, no |latitude|, no tower-only column). The default ``--out`` is then ``runs/bench-real-towers-nested-map``.
``--variant tower`` (the default) is the procedure above, unchanged. Transfer mode is for the tower variant only.

Writes ``<out>/real_towers_nested.md`` and ``.json`` (atomically). ``--max-outer`` and ``--epochs`` are for smoke
runs only: their results are marked SMOKE, not the estimate.

    python bench/real_towers_nested.py [--towers ../shared/data/fluxnet-ch4] [--out runs/bench-real-towers-nested]
        [--inner-folds 5] [--members 3] [--inner-members 1]
    python bench/real_towers_nested.py --strategies scratch finetune residual adversarial reweight
        --fractions 1.0 0.3 [--members 3] [--out runs/bench-real-towers-transfer]
    python bench/real_towers_nested.py --variant map [--out runs/bench-real-towers-nested-map]
    python bench/real_towers_nested.py --choose network scratch finetune residual adversarial reweight
        --inner-folds 3 --members 1 [--settings [--driver-sets]] [--outer TOWER ...] [--out runs/bench-real-towers-transfer]
    smoke: python bench/real_towers_nested.py --max-outer 2 --epochs 3 --inner-folds 3 --members 1
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from real_towers import tree_rows

from xmw_ray.baselines.gbt import GBTBaseline
from xmw_ray.config import ExperimentConfig, load_config
from xmw_ray.data import schema
from xmw_ray.data.fluxnet import find_site_sources
from xmw_ray.data.ray_datasets import StoreInfo, sample_dataset, store_info
from xmw_ray.data.splits import TRAIN, SplitPlan, SplitSpec
from xmw_ray.data.tower_features import TRAILING_WINDOWS
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import BEST_DIR, MODEL_FILE, load_checkpoint_model, write_ensemble_checkpoint
from xmw_ray.storage import write_text_atomic
from xmw_ray.train.evaluate import predict_batch
from xmw_ray.train.metrics import MetricAccumulator, metrics_from_sums
from xmw_ray.train.runner import ensure_ray
from xmw_ray.transfer.ensemble import member_config
from xmw_ray.transfer.experiment import prepare_stores, run_config, transfer_section
from xmw_ray.transfer.registry import get_strategy

ROOT = Path(__file__).resolve().parents[1]
#: The tower variant's base procedure: the process model's flux as a driver (the ``network`` candidate). Transfer
#: and choice modes derive the strategies from it (``transfer_overrides``); ``fluxnet-real.yaml`` is the procedure
#: the choice picked (``tests/test_real_towers_nested.py`` checks that it is this file with the overrides).
PRESET = ROOT / "configs" / "experiments" / "fluxnet-real-simdriver.yaml"
#: ``--variant`` → its preset: the tower model, and the map-ready one (drivers a Grid store has).
VARIANTS = {"tower": PRESET, "map": ROOT / "configs" / "experiments" / "fluxnet-real-map.yaml"}
#: The strong trees of issue #15 (a careful user's settings; fixed, never tuned here).
TREE_PARAMS = {"max_iter": 300, "learning_rate": 0.05}
#: Candidates of the nested choice, in tie-break order: weights over the base models' predictions
#: (a blend is w·network + (1 - w)·trees). Declared before any nested score existed.
CANDIDATES: dict[str, dict[str, float]] = {
    "trees": {"trees": 1.0},
    "network": {"network": 1.0},
    "blend w=0.25": {"network": 0.25, "trees": 0.75},
    "blend w=0.5": {"network": 0.5, "trees": 0.5},
    "blend w=0.75": {"network": 0.75, "trees": 0.25},
}
#: Stage two of choice mode (``--settings``): the settings earlier rounds fixed by looking at these same towers'
#: scores (the LSTM's size, the fine-tuning epochs, the learning rate, the site descriptors), re-chosen inside each
#: outer fold for the procedure stage one picked: the preset's values, or one of them changed: a factor of about two
#: (the learning rate about three) either way, or the static inputs (descriptors, CH4, CO2) held at their mean.
#: Declared before any stage-two score existed. A strategy's first phase keeps its optimiser (``pretrain_optim``:
#: finetune's and residual's pretraining on the simulations reads no observed target; adversarial's DANN phase
#: reads the training towers' targets too), so the epochs and learning rate settings change the phase on the
#: observations only; a new LSTM size or input use changes both phases (and pretrains its own model, cached by
#: hash). ``{half}`` and ``{double}`` are the run's epochs halved and doubled (30 and 120 for the preset's 60; a
#: smoke run's ``--epochs`` scales them too). With ``no descriptors`` the reweight strategy's domain classifier
#: still sees the static inputs when it weights the simulation samples; the model does not.
SETTINGS: dict[str, tuple[str, ...]] = {
    "preset": (),
    "hidden 8": ("model.params.hidden_size=8",),
    "hidden 32": ("model.params.hidden_size=32",),
    "epochs 30": ("optim.epochs={half}", "optim.patience={half}"),
    "epochs 120": ("optim.epochs={double}", "optim.patience={double}"),
    "lr 0.003": ("optim.lr=0.003",),
    "lr 0.03": ("optim.lr=0.03",),
    "no descriptors": ("model.params.static_inputs=false",),
}
#: Stage three of choice mode (``--driver-sets``): the driver set of the procedure and settings stages one and two
#: chose, re-chosen on the same inner folds and criterion: the towers' own (``tower``: TA_F, P_F, LE_F, GPP_NT, TS_1,
#: their trailing means, flags, the solar season and the site descriptors; what the preset uses), or the map-ready set
#: a Grid store has (``map``: ``xmw prepare sites --drivers map``, daily PREC, SOLR, TAIR, VAPR, wetland type, CH4,
#: CO2; the simulations at the towers prepared with the same set for the pretraining). The ``network`` procedure has
#: no map-ready form (its SIM_FCH4 driver is not a Grid-store slot), so it keeps the tower set with no choice.
#: Declared before any stage-three score existed.
DRIVER_SETS = ("tower", "map")
#: Choice mode's second tree procedure: issue #15's recipe for its strong trees (the same trees on the drivers, the
#: solar season and |latitude|, without the trailing means ``trees`` adds), scored beside the others, never chosen.
PLAIN_TREES = "trees without trailing means"
#: The procedures scored on the outer towers: the two fixed ones, and the nested choice.
NETWORK = "network"
FIXED_PROCEDURES = ("trees", NETWORK)
NESTED = "nested choice"
#: Choice mode with ``--settings``: stage one's procedure, then its ``SETTINGS`` chosen by the same inner folds.
NESTED_SETTINGS = "nested choice + settings"
#: With ``--driver-sets`` too: stage two's pick, then its driver set (``DRIVER_SETS``) chosen on the same inner folds.
NESTED_DRIVERS = "nested choice + settings + drivers"
CRITERION = "mean of inner out-of-fold pooled NSE and median-tower NSE"
CONFORMAL_LEVEL = 0.8
#: c of the conformal score |resid| / (|pred| + c), mg CH4 m-2 d-1: about a tenth of a wetland's summer flux, so
#: the interval scales with the flux where it is large and keeps a floor where it is near zero. Fixed up front.
CONFORMAL_OFFSET = 10.0
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.9
INNER_FOLD_SEED = 0
REPORTED = ("nse", "median_nse", "rmse", "kge")

#: ``site → (n_years, 365)`` predictions (or observations).
Predictions = dict[str, np.ndarray]
#: A base model: ``(train_sites, test_sites, members, fit_name) → predictions for test_sites``. It may only read
#: the targets of ``train_sites``.
FitPredict = Callable[[list[str], list[str], int, str], Predictions]
#: Stage two: the procedure stage one chose → its settings' base models (``"preset"`` is the procedure itself).
Variants = Callable[[str], dict[str, FitPredict]]
#: Stage three: (procedure, setting) → its driver sets' base models (``"tower"`` is stage two's own fitter).
DriverVariants = Callable[[str, str], dict[str, FitPredict]]


# --- the nested procedure (model-agnostic: base models are plain callables) ----------------------------------
def grouped_folds(sites: list[str], k: int, seed: int = INNER_FOLD_SEED) -> list[list[str]]:
    """``k`` groups of towers, a seeded permutation dealt round-robin (sizes differ by at most one)."""
    if not 2 <= k <= len(sites):
        raise XmwInputError(f"--inner-folds: {k} folds need 2..{len(sites)} training towers")
    order = np.random.default_rng(seed).permutation(sorted(sites))
    return [sorted(str(s) for s in order[i::k]) for i in range(k)]


def combine(weights: dict[str, float], base: dict[str, Predictions], sites: list[str]) -> Predictions:
    """The candidate's predictions: the weighted sum of its base models' predictions, per site."""
    return {s: sum(w * base[name][s] for name, w in weights.items()) for s in sites}


def accumulate(pred: Predictions, obs: Predictions) -> MetricAccumulator:
    acc = MetricAccumulator("daily")
    for s in pred:
        acc.update(pred[s], obs[s], np.full(len(pred[s]), s))
    return acc


def criterion(pred: Predictions, obs: Predictions) -> float:
    """``CRITERION``; NaN counts as the worst score."""
    res = accumulate(pred, obs).result()
    value = 0.5 * (res["pooled"]["nse"] + res["median"]["nse"])
    return value if math.isfinite(value) else -math.inf


def conformal_scores(pred: Predictions, obs: Predictions, offset: float = CONFORMAL_OFFSET) -> np.ndarray:
    """|obs - pred| / (|pred| + offset) over every observed day."""
    p = np.concatenate([pred[s].reshape(-1) for s in pred])
    y = np.concatenate([obs[s].reshape(-1) for s in pred])
    ok = np.isfinite(p) & np.isfinite(y)
    return np.abs(y[ok] - p[ok]) / (np.abs(p[ok]) + offset)


def conformal_quantile(scores: np.ndarray, level: float = CONFORMAL_LEVEL) -> float:
    """Split-conformal quantile: the ceil((n+1)·level)-th smallest score (infinite when n is too small)."""
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    return float(np.sort(scores)[rank - 1]) if 1 <= rank <= n else math.inf


def interval(pred: np.ndarray, q: float, offset: float = CONFORMAL_OFFSET) -> tuple[np.ndarray, np.ndarray]:
    half = q * (np.abs(pred) + offset)
    return pred - half, pred + half


@dataclass
class FoldResult:
    """One outer fold: the outer tower, the inner scores and choice, each procedure's outer prediction and q."""

    outer: str
    inner_folds: list[list[str]]
    scores: dict[str, float]
    chosen: str
    pred: dict[str, np.ndarray] = field(default_factory=dict)  # procedure → (n_years, 365) on the outer tower
    q: dict[str, float] = field(default_factory=dict)  # procedure → conformal quantile from the inner OOF
    candidate: dict[str, str] = field(default_factory=dict)  # procedure → the candidate it applied
    settings_scores: dict[str, float] = field(default_factory=dict)  # stage two (``--settings``), else empty
    settings_chosen: str | None = None
    drivers_scores: dict[str, float] = field(default_factory=dict)  # stage three (``--driver-sets``), else empty
    drivers_chosen: str | None = None
    seconds: float = 0.0


def inner_choice(training: list[str], obs: Predictions, bases: dict[str, FitPredict], k: int, inner_members: int,
                 prefix: str, candidates: dict[str, dict[str, float]],
                 log: Callable[[str], None] = lambda m: None,
                 ) -> tuple[list[list[str]], dict[str, Predictions], dict[str, float], str]:
    """The choice itself, on ``training`` only: grouped K-fold out-of-fold predictions of every base model, each
    candidate's ``CRITERION`` on them, the best candidate (ties to the earlier one). Returns the folds, the OOF
    predictions, the scores and the choice. Only the targets of ``training`` are read."""
    folds = grouped_folds(training, k)
    oof: dict[str, Predictions] = {name: {} for name in bases}
    for i, held in enumerate(folds):
        fit_towers = [s for s in training if s not in held]
        for name, fit in bases.items():
            oof[name].update(fit(fit_towers, held, inner_members, f"{prefix}-k{k}-i{i}"))
        log(f"    inner fold {i + 1}/{k} ({', '.join(held)}) done")
    train_obs = {s: obs[s] for s in training}
    scores = {c: criterion(combine(w, oof, training), train_obs) for c, w in candidates.items()}
    chosen = max(candidates, key=lambda c: (scores[c], -list(candidates).index(c)))
    return folds, oof, scores, chosen


def nested_fold(outer: str, sites: list[str], obs: Predictions, bases: dict[str, FitPredict], k: int,
                members: int, inner_members: int, log: Callable[[str], None] = lambda m: None,
                candidates: dict[str, dict[str, float]] | None = None,
                fixed: tuple[str, ...] = FIXED_PROCEDURES, variants: Variants | None = None,
                drivers: DriverVariants | None = None) -> FoldResult:
    """Choose one of ``candidates`` (default ``CANDIDATES``) on the towers other than ``outer`` (inner grouped
    K-fold), refit the base models on them, predict ``outer``; the ``fixed`` base models are scored alone beside
    it. With ``variants`` a second stage chooses the chosen candidate's settings on the same inner folds and the
    same criterion (``NESTED_SETTINGS``), and with ``drivers`` a third stage that setting's driver set
    (``NESTED_DRIVERS``). ``obs[outer]`` is never read: every fit, score and quantile uses the training towers."""
    t0 = time.perf_counter()
    candidates = CANDIDATES if candidates is None else candidates
    training = [s for s in sites if s != outer]
    folds, oof, scores, chosen = inner_choice(training, obs, bases, k, inner_members, outer, candidates, log)
    train_obs = {s: obs[s] for s in training}
    # "-loto": the same fit as transfer mode's outer fit of the same strategy, so a run of either reuses the other's
    refit = {name: fit(training, [outer], members, f"{outer}-loto")[outer] for name, fit in bases.items()}
    result = FoldResult(outer, folds, scores, chosen)
    for proc, cand in [*((p, p) for p in fixed), (NESTED, chosen)]:
        weights = candidates.get(cand, {cand: 1.0})
        result.candidate[proc] = cand
        result.pred[proc] = combine(weights, {n: {outer: p} for n, p in refit.items()}, [outer])[outer]
        result.q[proc] = conformal_quantile(conformal_scores(combine(weights, oof, training), train_obs))
    if variants is not None:
        settings = variants(chosen)
        setting, voof, result.settings_scores = settings_choice(training, obs, settings, k, inner_members, outer, log)
        result.settings_chosen = setting
        result.candidate[NESTED_SETTINGS] = f"{chosen} ({setting})"
        result.pred[NESTED_SETTINGS] = settings[setting](training, [outer], members, f"{outer}-loto")[outer]
        result.q[NESTED_SETTINGS] = conformal_quantile(conformal_scores(voof[setting], train_obs))
        if drivers is not None:
            driver_sets = drivers(chosen, setting)
            dset, doof, result.drivers_scores = driver_set_choice(training, obs, driver_sets, k, inner_members, outer,
                                                                  log)
            result.drivers_chosen = dset
            result.candidate[NESTED_DRIVERS] = f"{chosen} ({setting}, {dset} drivers)"
            result.pred[NESTED_DRIVERS] = (result.pred[NESTED_SETTINGS] if driver_sets[dset] is settings[setting]
                                           else driver_sets[dset](training, [outer], members, f"{outer}-loto")[outer])
            result.q[NESTED_DRIVERS] = conformal_quantile(conformal_scores(doof.get(dset, voof[setting]), train_obs))
    result.seconds = time.perf_counter() - t0
    return result


def settings_choice(training: list[str], obs: Predictions, settings: dict[str, FitPredict], k: int,
                    inner_members: int, prefix: str, log: Callable[[str], None] = lambda m: None,
                    ) -> tuple[str, dict[str, Predictions], dict[str, float]]:
    """Stage two: one procedure's settings chosen like stage one's procedures (same folds, fit names and
    criterion, so the ``preset`` setting reuses stage one's fits). Returns the choice, OOF predictions, scores."""
    _, oof, scores, chosen = inner_choice(training, obs, settings, k, inner_members, prefix,
                                          {name: {name: 1.0} for name in settings}, log)
    return chosen, oof, scores


def driver_set_choice(training: list[str], obs: Predictions, sets: dict[str, FitPredict], k: int,
                      inner_members: int, prefix: str, log: Callable[[str], None] = lambda m: None,
                      ) -> tuple[str, dict[str, Predictions], dict[str, float]]:
    """Stage three: the driver set chosen like stage two's settings; a procedure with one set (``network``) has no
    choice: that set, no OOF predictions (stage two's stand) and no scores."""
    if len(sets) == 1:
        return next(iter(sets)), {}, {}
    return settings_choice(training, obs, sets, k, inner_members, prefix, log)


# --- scores on the outer towers ------------------------------------------------------------------------------
def tower_nse(sums: np.ndarray) -> float:
    return metrics_from_sums(sums)["nse"]


def summarise(pred: Predictions, obs: Predictions) -> dict:
    """Pooled NSE, median-tower NSE, RMSE, KGE and days over the outer towers, with per-tower NSE."""
    res = accumulate(pred, obs).result()
    p = res["pooled"]
    return {"nse": p["nse"], "median_nse": res["median"]["nse"], "rmse": p["rmse"], "kge": p["kge"], "n": p["n"],
            "per_tower_nse": {s: m["nse"] for s, m in res["per_entity"].items()}}


def bootstrap(pred: Predictions, obs: Predictions, resamples: int = BOOTSTRAP_RESAMPLES,
              seed: int = BOOTSTRAP_SEED, level: float = BOOTSTRAP_LEVEL) -> dict[str, list[float]]:
    """``metric → [low, high]``: percentile interval over resamples of the towers with replacement, each metric
    recomputed from the pooled days of the resampled towers (a tower drawn twice counts twice)."""
    sums = accumulate(pred, obs).entity_sums()
    table = np.stack(list(sums.values()))  # (towers, 7)
    nse_of = np.array([tower_nse(s) for s in table])
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in REPORTED}
    for _ in range(resamples):
        pick = rng.integers(0, len(table), len(table))
        pooled = metrics_from_sums(table[pick].sum(axis=0))
        finite = nse_of[pick][np.isfinite(nse_of[pick])]
        draws["nse"].append(pooled["nse"])
        draws["median_nse"].append(float(np.median(finite)) if finite.size else math.nan)
        draws["rmse"].append(pooled["rmse"])
        draws["kge"].append(pooled["kge"])
    tail = 100 * (1 - level) / 2
    return {k: [float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail))] for k, v in draws.items()}


def coverage(pred: Predictions, q: dict[str, float], obs: Predictions) -> dict:
    """Share of observed outer days inside the conformal interval: pooled, and per tower (median, min, max)."""
    inside, per_tower = 0, {}
    total = 0
    for s, p in pred.items():
        lo, hi = interval(p, q[s])
        y = obs[s]
        ok = np.isfinite(y) & np.isfinite(p)
        hit = int(((y >= lo) & (y <= hi) & ok).sum())
        inside, total = inside + hit, total + int(ok.sum())
        if ok.any():
            per_tower[s] = hit / int(ok.sum())
    values = np.array(list(per_tower.values()))
    return {"pooled": inside / total if total else math.nan, "nominal": CONFORMAL_LEVEL,
            "tower_median": float(np.median(values)) if values.size else math.nan,
            "tower_min": float(values.min()) if values.size else math.nan,
            "tower_max": float(values.max()) if values.size else math.nan, "per_tower": per_tower}


def score_procedures(folds: list[FoldResult], obs: Predictions,
                     fixed: tuple[str, ...] = FIXED_PROCEDURES) -> dict[str, dict]:
    """Per procedure (the ``fixed`` ones and the nested choice): outer summary, bootstrap intervals, coverage."""
    out = {}
    for proc in [p for p in (*fixed, NESTED, NESTED_SETTINGS, NESTED_DRIVERS) if p in folds[0].pred]:
        pred = {f.outer: f.pred[proc] for f in folds}
        outer_obs = {f.outer: obs[f.outer] for f in folds}
        out[proc] = {**summarise(pred, outer_obs), "interval": bootstrap(pred, outer_obs),
                     "coverage": coverage(pred, {f.outer: f.q[proc] for f in folds}, outer_obs)}
    return out


# --- base models on the real towers --------------------------------------------------------------------------
class TreeFitter:
    """The strong trees: fitted on the training towers' rows, predicting the test towers' (members ignored)."""

    def __init__(self, rows: dict[str, dict[str, np.ndarray]], seed: int = 0,
                 trailing_windows: tuple[int, ...] = ()) -> None:
        """``trailing_windows``: () when ``rows`` already carry trailing means (``tree_rows``), the trees' usual
        windows on a store's own rows (the map variant)."""
        self.rows, self.seed, self.trailing_windows = rows, seed, trailing_windows
        self.fit_seconds: list[float] = []

    def __call__(self, train: list[str], test: list[str], members: int = 1, name: str = "") -> Predictions:
        t0 = time.perf_counter()
        x = {k: np.concatenate([self.rows[s][k] for s in train]) for k in ("dynamic", "static", "y")}
        trees = GBTBaseline(**TREE_PARAMS, random_state=self.seed, trailing_windows=self.trailing_windows).fit(
            x["dynamic"], x["static"], x["y"])
        self.fit_seconds.append(time.perf_counter() - t0)
        return {s: trees.predict(self.rows[s]["dynamic"], self.rows[s]["static"]).astype(np.float64) for s in test}


def store_rows(info: StoreInfo) -> dict[str, dict[str, np.ndarray]]:
    """Every sample of the Site store in memory, per site in year order (tens of tower-years: small)."""
    batches = list(sample_dataset(info, None, "all").iter_batches(batch_size=None, batch_format="numpy"))
    cat = {k: np.concatenate([b[k] for b in batches]) for k in
           (schema.DYNAMIC, schema.STATIC, schema.TARGET, schema.ENTITY, schema.YEAR)}
    out = {}
    for site in sorted(set(cat[schema.ENTITY].tolist())):
        pick = np.flatnonzero(cat[schema.ENTITY] == site)
        pick = pick[np.argsort(cat[schema.YEAR][pick])]
        out[str(site)] = {"dynamic": cat[schema.DYNAMIC][pick], "static": cat[schema.STATIC][pick],
                          "y": cat[schema.TARGET][pick].astype(np.float64), "year": cat[schema.YEAR][pick]}
    return out


def fold_split(train: list[str], test: list[str], fraction: float = 1.0) -> SplitSpec:
    """Training towers fold 0, test towers fold 1; any other tower (the outer one, inside an inner fold) has no
    fold, so it is neither trained on nor normalised over. ``fraction``: the split's seeded share of the training
    towers (the data-sparse case)."""
    return SplitSpec(kind="spatial", folds={**dict.fromkeys(train, 0), **dict.fromkeys(test, 1)}, n_folds=2,
                     test_fold=1, fraction=fraction)


def kept_towers(spec: SplitSpec) -> list[str]:
    """The towers that train under ``spec`` (after its ``fraction``): what the trees beside it get too."""
    towers = sorted(spec.fold_map() or {})
    plan = SplitPlan(spec, towers)
    parts = plan.parts(plan.entity_index(towers), np.zeros(len(towers), dtype=np.int64))
    return [t for t, part in zip(towers, parts, strict=True) if part == TRAIN]


class NetworkFitter:
    """The preset's network trained with the project's training code (module docstring) by a transfer
    ``strategy`` (``scratch``: observations only), on the explicit folds of ``fold_split``."""

    def __init__(self, cfg: ExperimentConfig, rows: dict[str, dict[str, np.ndarray]], runs_dir: Path,
                 strategy: str = "scratch", fraction: float = 1.0, seed: int = 0, label: str | None = None) -> None:
        """``label`` names its fits (default the strategy): the preset's network is ``network``, so its fits never
        share a name with transfer mode's ``scratch`` on the store without SIM_FCH4."""
        self.cfg, self.rows, self.runs_dir, self.seed = cfg, rows, runs_dir, seed
        self.strategy, self.fraction, self.label = strategy, fraction, label or strategy
        self.member_seconds: list[float] = []  # wall time of each member fit trained here (reused ones excluded)
        self.member_cpu_seconds: list[float] = []  # this process's CPU time of each (load-independent)

    def _member(self, job: ExperimentConfig) -> Path:
        run_dir = self.runs_dir / job.run.name
        best = run_dir / BEST_DIR
        if (best / MODEL_FILE).is_file():  # finished in an earlier run of the bench with the same --out
            return best
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished fit of an interrupted run: start it again
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = get_strategy(self.strategy).run(job, transfer_section(self.cfg).strategy_params.get(self.strategy, {}))
        self.member_seconds.append(time.perf_counter() - t0)
        self.member_cpu_seconds.append(time.process_time() - c0)
        return Path(outcome.best_checkpoint)

    def __call__(self, train: list[str], test: list[str], members: int, name: str) -> Predictions:
        cfg = self.cfg
        spec = fold_split(train, test, self.fraction)
        if not kept_towers(spec):
            raise XmwInputError(f"fraction {self.fraction:g} keeps none of the {len(train)} training towers of {name}")
        fit_name = f"{name}-{self.label}-f{self.fraction:g}-e{cfg.optim.epochs}-n{members}-s{self.seed}"
        model = (transfer_section(cfg).models or [cfg.model])[0]
        job = run_config(cfg, model, spec, fit_name, str(self.runs_dir), self.seed)
        dirs = [self._member(member_config(job, k) if members > 1 else job) for k in range(members)]
        if members > 1:
            out = self.runs_dir / fit_name / BEST_DIR
            if not (out / MODEL_FILE).is_file():
                write_ensemble_checkpoint(dirs, out, {"members": members})
            dirs = [out]
        model = load_checkpoint_model(dirs[0])
        return {s: predict_batch(model, self.rows[s]["dynamic"], self.rows[s]["static"]).astype(np.float64)
                for s in test}


def choice_networks(choose: list[str] | None, cfg: ExperimentConfig, rows: dict[str, dict[str, np.ndarray]],
                    cfg_transfer: ExperimentConfig | None, transfer_rows: dict[str, dict[str, np.ndarray]] | None,
                    runs_dir: Path) -> dict[str, NetworkFitter]:
    """The network base models: the preset's network alone (nested mode), or each procedure of ``--choose``: the
    preset (``network``) on its store, each transfer strategy on transfer mode's stores."""
    nets = {}
    for name in choose or [NETWORK]:
        if name == NETWORK:
            nets[name] = NetworkFitter(cfg, rows, runs_dir, label=NETWORK)
        else:
            assert cfg_transfer is not None and transfer_rows is not None
            nets[name] = NetworkFitter(cfg_transfer, transfer_rows, runs_dir, name)
    return nets


def setting_overrides(setting: str, epochs: int) -> list[str]:
    """``SETTINGS[setting]`` for a run of ``epochs`` fine-tuning epochs (``{half}``/``{double}`` filled in)."""
    return [o.format(half=max(1, epochs // 2), double=2 * epochs) for o in SETTINGS[setting]]


def settings_variants(nets: dict[str, NetworkFitter], cfgs: dict[tuple[str, str], ExperimentConfig],
                      runs_dir: Path) -> tuple[Variants, dict[str, dict[str, NetworkFitter]]]:
    """Stage two's base models: for a procedure of ``nets``, its network under each of ``SETTINGS`` (``preset``:
    the procedure's own fitter, so its fits are stage one's), built once per procedure. Returns the factory and
    what it built (for the timing line)."""
    built: dict[str, dict[str, NetworkFitter]] = {}

    def variants(chosen: str) -> dict[str, FitPredict]:
        if chosen not in built:
            net = nets[chosen]
            built[chosen] = {s: net if not extra else
                             NetworkFitter(cfgs[chosen, s], net.rows, runs_dir, net.strategy,
                                           label=f"{net.label}+{s.replace(' ', '')}")
                             for s, extra in SETTINGS.items()}
        return dict(built[chosen])

    return variants, built


def map_overrides(out: Path) -> list[str]:
    """Stage three's ``map`` driver set for a transfer-mode config: the observations and the simulations at the
    towers prepared with ``--drivers map``, each in a folder of its own (the tower set's stores are untouched)."""
    return ["transfer.prepare.drivers=map", f"data.store={out / 'prepared' / 'target-sites-map-transfer'}",
            f"source.store={out / 'prepared' / 'source-sites-map'}"]


def driver_variants(variants: Variants, cfgs: dict[tuple[str, str], ExperimentConfig],
                    rows: dict[str, dict[str, np.ndarray]] | None, runs_dir: Path,
                    ) -> tuple[DriverVariants, dict[tuple[str, str], dict[str, FitPredict]]]:
    """Stage three's base models: for a procedure and setting, stage two's fitter (``tower``: its fits are stage
    two's) and, where ``cfgs`` has a map-ready form of it, the same on the map driver set's store ``rows`` under a
    label of its own. Built once per pair; returns the factory and what it built (for the timing line)."""
    built: dict[tuple[str, str], dict[str, FitPredict]] = {}

    def sets(chosen: str, setting: str) -> dict[str, FitPredict]:
        if (chosen, setting) not in built:
            tower = variants(chosen)[setting]
            built[chosen, setting] = {"tower": tower}
            if (chosen, setting) in cfgs:
                assert rows is not None and isinstance(tower, NetworkFitter)
                built[chosen, setting]["map"] = NetworkFitter(cfgs[chosen, setting], rows, runs_dir, tower.strategy,
                                                              label=f"{tower.label}+map")
        return dict(built[chosen, setting])

    return sets, built


def tree_fitter(variant: str, towers: str, net_rows: dict[str, dict[str, np.ndarray]]) -> TreeFitter:
    """The trees of ``variant``: on the tower drivers read from the site files (``tree_rows``), or, for ``map``,
    on the network's own store rows (the drivers a grid has) with the trees' usual trailing means."""
    if variant == "map":
        return TreeFitter(net_rows, trailing_windows=TRAILING_WINDOWS)
    return TreeFitter(tree_rows(towers))


def align(trees: dict[str, dict[str, np.ndarray]], net: dict[str, dict[str, np.ndarray]]) -> None:
    """Both base models must see the same tower-years and the same target (else blends pair different days)."""
    if sorted(trees) != sorted(net):
        raise XmwInputError(f"towers differ between the site files ({sorted(trees)}) and the store ({sorted(net)})")
    for s in trees:
        if not np.array_equal(trees[s]["year"], net[s]["year"]):
            raise XmwInputError(f"{s}: years differ between the site files {trees[s]['year'].tolist()} and the "
                                f"store {net[s]['year'].tolist()}")
        if not np.allclose(trees[s]["y"], net[s]["y"], rtol=1e-4, atol=1e-3, equal_nan=True):
            raise XmwInputError(f"{s}: the target differs between the site files and the store")


# --- report --------------------------------------------------------------------------------------------------
def _cell(m: dict, key: str, fmt: str) -> str:
    lo, hi = m["interval"][key]
    return f"{m[key]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def table(results: dict) -> str:
    head = ("| procedure | pooled NSE [90 %] | median tower NSE [90 %] | RMSE [90 %] | KGE [90 %] | "
            "80 % interval coverage: pooled (tower median, min..max) | days |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for proc, m in results["procedures"].items():
        c = m["coverage"]
        lines.append(f"| {proc} | {_cell(m, 'nse', '.3f')} | {_cell(m, 'median_nse', '.3f')} | "
                     f"{_cell(m, 'rmse', '.1f')} | {_cell(m, 'kge', '.3f')} | {c['pooled']:.3f} "
                     f"({c['tower_median']:.3f}, {c['tower_min']:.3f}..{c['tower_max']:.3f}) | {m['n']} |")
    lines.append("")
    lines.append(f"Nested choice per outer tower (criterion: {CRITERION}):")
    lines.append("")
    candidates = list(results["candidates"])
    lines.append("| outer tower | chosen | " + " | ".join(candidates) + " |")
    lines.append("|---|---|" + "---|" * len(candidates))
    for f in results["folds"]:
        lines.append(f"| {f['outer']} | {f['chosen']} | " + " | ".join(f"{f['scores'][c]:.3f}" for c in candidates)
                     + " |")
    if any(f.get("settings_chosen") for f in results["folds"]):
        names = list(SETTINGS)
        lines += ["", "Stage two, the settings of the procedure chosen above (same inner folds and criterion):", "",
                  "| outer tower | procedure | settings chosen | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for f in results["folds"]:
            lines.append(f"| {f['outer']} | {f['chosen']} | {f['settings_chosen']} | "
                         + " | ".join(f"{f['settings_scores'][n]:.3f}" for n in names) + " |")
    if any(f.get("drivers_chosen") for f in results["folds"]):
        lines += ["", "Stage three, the driver set of the procedure and settings chosen above (same inner folds and "
                  "criterion; `network` has no map-ready form, so no choice):", "",
                  "| outer tower | procedure (settings) | driver set chosen | " + " | ".join(DRIVER_SETS) + " |",
                  "|---|---|---|" + "---|" * len(DRIVER_SETS)]
        for f in results["folds"]:
            lines.append(f"| {f['outer']} | {f['chosen']} ({f['settings_chosen']}) | {f['drivers_chosen']} | "
                         + " | ".join(f"{f['drivers_scores'][n]:.3f}" if n in f["drivers_scores"] else "-"
                                      for n in DRIVER_SETS) + " |")
    final = results.get("choice_on_all")
    if final:
        lines.append("")
        lines.append(f"The same choice on all {len(final['towers'])} towers (what the preset deploys): "
                     f"**{final['chosen']}** (" + ", ".join(f"{c} {v:.3f}" for c, v in final["scores"].items()) + ")")
        if final.get("settings_chosen"):
            lines[-1] += (f"; its settings: **{final['settings_chosen']}** (" + ", ".join(
                f"{c} {v:.3f}" for c, v in final["settings_scores"].items()) + ")")
        if final.get("drivers_chosen"):
            lines[-1] += (f"; its driver set: **{final['drivers_chosen']}** (" + ", ".join(
                f"{c} {v:.3f}" for c, v in final["drivers_scores"].items()) + ")")
    if results.get("variant") == "map":  # the tower variant's table is unchanged
        lines.insert(0, f"Variant map: {Path(results['config']).name}; trees on the same store's inputs and their "
                        "7- and 30-day trailing means.\n")
    if results["smoke"]:
        lines.insert(0, f"**SMOKE run ({results['smoke']}): not the estimate.**\n")
    return "\n".join(lines)


# --- transfer strategies under the same outer protocol (issue #15 item 3) --------------------------------------
def transfer_overrides(out: Path, epochs: int) -> list[str]:
    """The preset turned into a transfer experiment: the simulations at the towers (``xmw simulate sites``,
    prepared with the same tower drivers) become a pretraining SOURCE instead of the SIM_FCH4 driver, so every
    strategy applies; the target store is then the towers without SIM_FCH4 (its own folder). Pretraining uses the
    observation phase's optimiser; each strategy its own default parameters (nothing tuned on these towers)."""
    optim = {"lr": 0.01, "weight_decay": 0.001, "epochs": epochs, "patience": epochs, "scheduler": "none"}
    return ["transfer.prepare.sim_input=false", f"data.store={out / 'prepared' / 'target-sites-transfer'}",
            "source.source=sites", f"source.store={out / 'prepared' / 'source-sites'}", "source.batch_size=8",
            "source.in_memory=true", "source.split.kind=all", "transfer.strategy_params={}",
            *(f"pretrain_optim.{k}={v}" for k, v in optim.items())]


def run_transfer(sites: list[str], outer_sites: list[str], rows: dict[str, dict[str, np.ndarray]], obs: Predictions, trees: TreeFitter,
                 cfg: ExperimentConfig, strategies: list[str], fractions: list[float], members: int, out: Path,
                 log: Callable[[str], None],
                 on_fraction_done: Callable[[dict, list[NetworkFitter]], None] | None = None,
                 ) -> tuple[dict, list[NetworkFitter]]:
    """Each strategy a fixed procedure (no inner choice), scored by outer LOTO at each fraction of the training
    towers, with the trees on the same kept towers. The pretraining on the simulations (all towers' simulated
    flux, no observed target) is shared by every fold. ``on_fraction_done`` gets the results so far after each
    fraction (a long run's finished fractions are written before the next one starts)."""
    results: dict = {}
    fitters = []
    for fraction in fractions:
        nets = {st: NetworkFitter(cfg, rows, out / "runs", st, fraction) for st in strategies}
        fitters += nets.values()
        pred: dict[str, Predictions] = {p: {} for p in ("trees", *strategies)}
        kept_by_outer = {}
        for i, outer in enumerate(outer_sites):
            train = [s for s in sites if s != outer]
            kept = kept_towers(fold_split(train, [outer], fraction))
            if not kept:
                raise XmwInputError(f"--fractions: {fraction:g} keeps none of the training towers of {outer}")
            kept_by_outer[outer] = kept
            log(f"fraction {fraction:g}, outer fold {i + 1}/{len(outer_sites)}: {outer} ({len(kept)} training towers)")
            pred["trees"][outer] = trees(kept, [outer])[outer]
            for st, net in nets.items():
                pred[st][outer] = net(train, [outer], members, f"{outer}-loto")[outer]
        outer_obs = {s: obs[s] for s in outer_sites}
        results[f"{fraction:g}"] = {
            "kept_towers": kept_by_outer,
            "procedures": {p: {**summarise(v, outer_obs), "interval": bootstrap(v, outer_obs)} for p, v in pred.items()}}
        if on_fraction_done is not None:
            on_fraction_done(results, fitters)
    return results, fitters


def transfer_table(results: dict) -> str:
    lines = ["| training towers | procedure | pooled NSE [90 %] | median tower NSE [90 %] | RMSE [90 %] | "
             "KGE [90 %] | days |", "|---|---|---|---|---|---|---|"]
    for fraction, r in results["fractions"].items():
        n_kept = np.mean([len(k) for k in r["kept_towers"].values()])
        for proc, m in r["procedures"].items():
            lines.append(f"| fraction {fraction} (mean {n_kept:.1f} towers) | {proc} | {_cell(m, 'nse', '.3f')} | "
                         f"{_cell(m, 'median_nse', '.3f')} | {_cell(m, 'rmse', '.1f')} | {_cell(m, 'kge', '.3f')} | "
                         f"{m['n']} |")
    if results["smoke"]:
        lines.insert(0, f"**SMOKE run ({results['smoke']}): not the estimate.**\n")
    asked = results.get("fractions_asked")
    if asked and len(results["fractions"]) < len(asked):
        lines.insert(0, f"**Partial: fractions {', '.join(results['fractions'])} of "
                        f"{', '.join(f'{f:g}' for f in asked)} done; the run goes on.**\n")
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--towers", default=str(ROOT.parent / "shared" / "data" / "fluxnet-ch4"))
    ap.add_argument("--variant", choices=tuple(VARIANTS), default="tower",
                    help="tower: fluxnet-real-simdriver (and the strategies derived from it) and trees on the tower "
                         "drivers; map: the map-ready "
                         "fluxnet-real-map preset and trees on its drivers (those a Grid store has)")
    ap.add_argument("--out", default=None,
                    help="default runs/bench-real-towers-nested, with -map for --variant map")
    ap.add_argument("--inner-folds", type=int, default=5, help="K of the inner grouped K-fold (towers as groups)")
    ap.add_argument("--members", type=int, default=3, help="network seeds of each outer refit (the preset's 3)")
    ap.add_argument("--inner-members", type=int, default=1, help="network seeds of each inner fit")
    ap.add_argument("--max-outer", type=int, default=None, help="smoke: only the first N outer folds")
    ap.add_argument("--epochs", type=int, default=None, help="smoke: override the preset's epochs")
    ap.add_argument("--strategies", nargs="+", default=None, metavar="STRATEGY",
                    help="transfer mode (item 3): score these strategies by outer LOTO instead of the nested choice")
    ap.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.3],
                    help="transfer mode: seeded shares of the training towers (the data-sparse case)")
    ap.add_argument("--choose", nargs="+", default=None, metavar="PROCEDURE",
                    help="choice mode (item 6): the nested choice is among these network procedures (network = the "
                         "preset, SIM_FCH4 as a driver; a strategy = the sims as a pretraining source), trees beside")
    ap.add_argument("--settings", action="store_true",
                    help="choice mode: a second stage re-chooses the chosen procedure's LSTM size, epochs, "
                         "learning rate and descriptors (SETTINGS) on the same inner folds")
    ap.add_argument("--driver-sets", action="store_true",
                    help="choice mode with --settings: a third stage re-chooses the chosen procedure's driver set, "
                         "the towers' own or the map-ready one (DRIVER_SETS), on the same inner folds")
    ap.add_argument("--outer", nargs="+", default=None, metavar="TOWER",
                    help="only these outer folds (a shard for a second process on the same --out; not the estimate)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = "runs/bench-real-towers-nested" + ("-map" if args.variant == "map" else "")
    return args


def validate(args: argparse.Namespace) -> list[str]:
    """Every flag checked before any work; returns the towers found."""
    from xmw_ray.transfer.registry import STRATEGIES

    for flag in ("inner_folds", "members", "inner_members", "max_outer", "epochs"):
        value = getattr(args, flag)
        if value is not None and value < (2 if flag == "inner_folds" else 1):
            raise XmwInputError(f"--{flag.replace('_', '-')}: must be at least "
                                f"{2 if flag == 'inner_folds' else 1}, got {value}")
    if args.strategies and args.variant != "tower":
        raise XmwInputError("--strategies: transfer mode scores the tower variant only")
    for st in args.strategies or []:
        if st not in STRATEGIES:
            raise XmwInputError(f"--strategies: unknown strategy {st!r} (known: {', '.join(STRATEGIES)})")
    if args.choose:
        if args.strategies:
            raise XmwInputError("--choose: choice mode and transfer mode (--strategies) are separate runs")
        if args.variant != "tower":
            raise XmwInputError("--choose: choice mode scores the tower variant only")
        known = (NETWORK, *STRATEGIES)
        for name in args.choose:
            if name not in known:
                raise XmwInputError(f"--choose: unknown procedure {name!r} (known: {', '.join(known)})")
        if len(set(args.choose)) < 2 or len(set(args.choose)) != len(args.choose):
            raise XmwInputError(f"--choose: needs at least two different procedures, got {' '.join(args.choose)}")
    if args.settings and not args.choose:
        raise XmwInputError("--settings: re-chooses the settings of choice mode's pick; it needs --choose")
    if args.driver_sets and not args.settings:
        raise XmwInputError("--driver-sets: re-chooses the driver set of stage two's pick; it needs --choose and "
                            "--settings")
    for f in args.fractions:
        if not 0.0 < f <= 1.0:
            raise XmwInputError(f"--fractions: {f:g} is not in (0, 1]")
    sites = sorted(find_site_sources(args.towers).daily_paths)
    if len(sites) < 3:
        raise XmwInputError(f"--towers: {args.towers} holds {len(sites)} towers; nested LOTO needs at least 3")
    for tower in args.outer or []:
        if tower not in sites:
            raise XmwInputError(f"--outer: {tower} is not a tower in {args.towers}")
    if args.inner_folds > len(sites) - 1:
        raise XmwInputError(f"--inner-folds: {args.inner_folds} folds, but each outer fold has only "
                            f"{len(sites) - 1} training towers")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise XmwInputError(f"--out: {out} is a file, not a folder")
    return sites


def timing(nets: list[NetworkFitter], trees: TreeFitter) -> dict:
    wall = [x for n in nets for x in n.member_seconds]
    cpu = [x for n in nets for x in n.member_cpu_seconds]
    return {"network_member_fits": len(wall), "network_member_seconds": wall, "network_member_cpu_seconds": cpu,
            "tree_fit_seconds": trees.fit_seconds,
            "line": f"{len(wall)} network member fits, {np.mean(wall) if wall else math.nan:.1f} s each "
                    f"({np.mean(cpu) if cpu else math.nan:.1f} s of it CPU in this process: the training loop; the rest is Ray "
                    f"Train/Data start-up and waiting for the cores); {len(trees.fit_seconds)} tree "
                    f"fits, {np.mean(trees.fit_seconds) if trees.fit_seconds else math.nan:.1f} s each"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        validate(args)
        preset = VARIANTS[args.variant]
        out = Path(args.out).resolve()
        overrides = [f"run.output_dir={out.parent}", f"run.name={out.name}",
                     f"transfer.prepare.forcing={Path(args.towers).resolve()}"]
        if args.epochs is not None:
            overrides.append(f"optim.epochs={args.epochs}")
        epochs = args.epochs or load_config(str(preset)).optim.epochs
        cfg_transfer = None
        if args.strategies:
            overrides.append(f"transfer.strategies=[{','.join(args.strategies)}]")
            overrides += transfer_overrides(out, epochs)
        elif args.choose and set(args.choose) - {NETWORK}:
            # the strategies of choice mode train on transfer mode's stores (the sims as a source, no SIM_FCH4)
            strategies = [c for c in args.choose if c != NETWORK]
            transfer_base = [*overrides, f"transfer.strategies=[{','.join(strategies)}]", *transfer_overrides(out, epochs)]
            cfg_transfer = load_config(str(preset), transfer_base, require="transfer").resolved()
        cfg = load_config(str(preset), overrides, require="transfer").resolved()
        setting_cfgs: dict[tuple[str, str], ExperimentConfig] = {}
        map_cfgs: dict[tuple[str, str], ExperimentConfig] = {}
        for name in args.choose if args.settings else []:  # every stage-two and -three config checked before any work
            base = overrides if name == NETWORK else transfer_base
            for setting, extra in SETTINGS.items():
                if extra:
                    setting_cfgs[name, setting] = load_config(
                        str(preset), [*base, *setting_overrides(setting, epochs)], require="transfer").resolved()
                if args.driver_sets and name != NETWORK:
                    map_cfgs[name, setting] = load_config(
                        str(preset), [*base, *setting_overrides(setting, epochs), *map_overrides(out)],
                        require="transfer").resolved()
    except XmwInputError as exc:
        print(f"xmw: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    smoke = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in (("max_outer", args.max_outer),
                                                                    ("epochs", args.epochs)) if v is not None)
    if args.outer:
        smoke = ", ".join(x for x in (smoke, f"--outer {' '.join(args.outer)}") if x)
    t0 = time.perf_counter()
    ensure_ray()
    prepare_stores(cfg, log)
    net_rows = store_rows(store_info(cfg.data.store, cfg.data.source))
    tree_fit = tree_fitter(args.variant, args.towers, net_rows)
    align(tree_fit.rows, net_rows)
    transfer_rows = None
    if cfg_transfer is not None:
        prepare_stores(cfg_transfer, log)
        transfer_rows = store_rows(store_info(cfg_transfer.data.store, cfg_transfer.data.source))
        align(tree_fit.rows, transfer_rows)
    map_rows = None
    if map_cfgs:
        prepare_stores(next(iter(map_cfgs.values())), log)  # every map-ready config shares these two stores
        map_data = next(iter(map_cfgs.values())).data
        map_rows = store_rows(store_info(map_data.store, map_data.source))
        align(tree_fit.rows, map_rows)
    sites = sorted(net_rows)
    obs = {s: net_rows[s]["y"] for s in sites}
    common = {"smoke": smoke, "variant": args.variant, "towers": str(Path(args.towers).resolve()), "config": str(preset),
              "tree_trailing_windows": list(tree_fit.trailing_windows),
              "tree_params": TREE_PARAMS, "members": args.members, "epochs": cfg.optim.epochs,
              "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": BOOTSTRAP_LEVEL}}
    outer_sites = [s for s in sites if s in args.outer] if args.outer else sites[: args.max_outer or len(sites)]
    if args.strategies:
        def transfer_results(fractions: dict, nets: list[NetworkFitter]) -> dict:
            return {**common, "strategies": args.strategies, "fractions": fractions,
                    "fractions_asked": args.fractions, "pretrain_optim": cfg.pretraining().model_dump(mode="json"),
                    "timing": timing(nets, tree_fit), "seconds": time.perf_counter() - t0}

        def write_partial(fractions: dict, nets: list[NetworkFitter]) -> None:
            if len(fractions) < len(args.fractions):
                partial = transfer_results(fractions, nets)
                write_text_atomic(out / "real_towers_transfer.json", json.dumps(partial, indent=1, default=float))
                write_text_atomic(out / "real_towers_transfer.md", transfer_table(partial) + "\n")

        fractions, nets = run_transfer(sites, outer_sites, net_rows, obs, tree_fit, cfg, args.strategies, args.fractions,
                                       args.members, out, log, write_partial)
        results = transfer_results(fractions, nets)
        name, md = "real_towers_transfer", transfer_table(results)
    else:
        nets = choice_networks(args.choose, cfg, net_rows, cfg_transfer, transfer_rows, out / "runs")
        extra_trees: dict[str, FitPredict] = {}
        if args.choose:
            extra_trees[PLAIN_TREES] = TreeFitter(tree_rows(args.towers, windows=()))
            align(extra_trees[PLAIN_TREES].rows, net_rows)
        variants, setting_nets = settings_variants(nets, setting_cfgs, out / "runs") if args.settings else (None, {})
        drivers, driver_nets = (driver_variants(variants, map_cfgs, map_rows, out / "runs") if args.driver_sets
                                else (None, {}))
        bases: dict[str, FitPredict] = {"trees": tree_fit, **extra_trees, **nets}
        candidates = {n: {n: 1.0} for n in nets} if args.choose else CANDIDATES
        fixed = ("trees", *extra_trees, *nets)
        folds = []
        for i, outer in enumerate(outer_sites):
            log(f"outer fold {i + 1}/{len(outer_sites)}: {outer}")
            f = nested_fold(outer, sites, obs, bases, args.inner_folds, args.members, args.inner_members, log,
                            candidates, fixed, variants, drivers)
            log(f"  {outer}: chose {f.chosen} ({', '.join(f'{c} {v:.3f}' for c, v in f.scores.items())})"
                + (f", settings {f.settings_chosen}" if f.settings_chosen else "")
                + (f", drivers {f.drivers_chosen}" if f.drivers_chosen else "") + f"; {f.seconds:.0f} s")
            folds.append(f)
        results = {**common, "candidates": candidates, "criterion": CRITERION, "inner_folds": args.inner_folds,
                   "inner_members": args.inner_members,
                   "conformal": {"level": CONFORMAL_LEVEL, "offset": CONFORMAL_OFFSET},
                   "procedures": score_procedures(folds, obs, fixed),
                   "folds": [{"outer": f.outer, "chosen": f.chosen, "scores": f.scores, "inner_folds": f.inner_folds,
                              "settings_chosen": f.settings_chosen, "settings_scores": f.settings_scores,
                              "drivers_chosen": f.drivers_chosen, "drivers_scores": f.drivers_scores,
                              "q": f.q, "seconds": f.seconds} for f in folds]}
        if args.choose and not args.outer:
            # the procedure applied to every tower: what the preset deploys (no tower is scored here)
            log(f"the choice on all {len(sites)} towers")
            _, _, scores, chosen = inner_choice(sites, obs, nets, args.inner_folds, args.inner_members, "all",
                                                candidates, log)
            results["choice_on_all"] = {"towers": sites, "scores": scores, "chosen": chosen}
            if variants is not None:
                setting, _, setting_scores = settings_choice(sites, obs, variants(chosen), args.inner_folds,
                                                             args.inner_members, "all", log)
                results["choice_on_all"].update(settings_chosen=setting, settings_scores=setting_scores)
                if drivers is not None:
                    dset, _, dscores = driver_set_choice(sites, obs, drivers(chosen, setting), args.inner_folds,
                                                         args.inner_members, "all", log)
                    results["choice_on_all"].update(drivers_chosen=dset, drivers_scores=dscores)
        results["settings"] = ({name: setting_overrides(name, cfg.optim.epochs) for name in SETTINGS}
                               if args.settings else None)
        fitters = [*nets.values(), *(n for v in setting_nets.values() for n in v.values())]
        fitters += [n for v in driver_nets.values() for n in v.values()]
        results["driver_sets"] = list(DRIVER_SETS) if args.driver_sets else None
        results["timing"] = timing(list({id(n): n for n in fitters}.values()), tree_fit)
        name = "real_towers_choice" if args.choose else "real_towers_nested"
        md = table(results)
    results["seconds"] = time.perf_counter() - t0
    write_text_atomic(out / f"{name}.json", json.dumps(results, indent=1, default=float))
    write_text_atomic(out / f"{name}.md", md + "\n")
    print(md)
    print(f"({results['seconds']:.0f} s; {results['timing']['line']}; {out / (name + '.json')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
