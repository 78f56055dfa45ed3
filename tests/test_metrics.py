"""Masked loss and metrics: hand-worked values, scikit-learn/numpy references, streaming = one-shot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_squared_error, r2_score

from xmw_ray.errors import XmwInputError
from xmw_ray.train.losses import masked_mse
from xmw_ray.train.metrics import (
    METRIC_KEYS,
    MetricAccumulator,
    bias,
    evaluate_predictions,
    kge,
    metrics,
    metrics_from_sums,
    monthly_means,
    nrmse,
    nse,
    pearson_r2,
    rmse,
)

NAN = float("nan")


def test_hand_worked_example_with_nan_skipped() -> None:
    # obs mean 2.5, SST 5; errors (1, 0, 1, 0) → SSE 2; pred mean 3; cov·n = 4, var_x·n = 4
    obs = np.array([1.0, 2.0, NAN, 3.0, 4.0])
    pred = np.array([2.0, 2.0, 99.0, 4.0, 4.0])
    r = 4 / math.sqrt(4 * 5)
    assert rmse(pred, obs) == pytest.approx(math.sqrt(0.5))
    assert nrmse(pred, obs) == pytest.approx(math.sqrt(0.5) / 2.5)
    assert nse(pred, obs) == pytest.approx(0.6)
    assert pearson_r2(pred, obs) == pytest.approx(0.8)
    assert bias(pred, obs) == pytest.approx(0.5)
    alpha, beta = math.sqrt(4 / 5), 3 / 2.5
    assert kge(pred, obs) == pytest.approx(1 - math.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2))
    assert metrics(pred, obs)["n"] == 4
    assert set(metrics(pred, obs)) == set(METRIC_KEYS)


def test_against_scikit_learn_and_numpy() -> None:
    rng = np.random.default_rng(0)
    obs = rng.gamma(2.0, 30.0, 2000)
    pred = obs * 0.8 + rng.normal(0, 10, 2000) + 5
    gaps = rng.random(2000) < 0.3
    obs_gappy = np.where(gaps, NAN, obs)
    keep = ~gaps
    assert nse(pred, obs_gappy) == pytest.approx(r2_score(obs[keep], pred[keep]), rel=1e-9)
    assert rmse(pred, obs_gappy) == pytest.approx(
        math.sqrt(mean_squared_error(obs[keep], pred[keep])), rel=1e-9
    )
    assert pearson_r2(pred, obs_gappy) == pytest.approx(
        np.corrcoef(pred[keep], obs[keep])[0, 1] ** 2, rel=1e-9
    )
    assert bias(pred, obs_gappy) == pytest.approx(np.mean(pred[keep] - obs[keep]), rel=1e-9)
    assert nrmse(pred, obs_gappy) == pytest.approx(rmse(pred, obs_gappy) / obs[keep].mean(), rel=1e-12)
    # a biased but perfectly correlated prediction: NSE and KGE drop, R² stays 1
    assert pearson_r2(obs + 50, obs) == pytest.approx(1.0)
    assert nse(obs + 50, obs) < 0 and kge(obs + 50, obs) < 1
    assert nse(obs, obs) == kge(obs, obs) == 1.0


def test_undefined_metrics_are_nan() -> None:
    empty = metrics(np.array([1.0, 2.0]), np.array([NAN, NAN]))
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in METRIC_KEYS if k != "n")
    const = metrics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
    assert math.isnan(const["nse"]) and math.isnan(const["pearson_r2"]) and math.isnan(const["kge"])
    assert const["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert math.isnan(metrics(np.array([1.0, -1.0]), np.array([1.0, -1.0]))["nrmse"])  # zero mean observation


def test_monthly_means_use_observed_days_only() -> None:
    obs = np.full((1, 365), NAN)
    obs[0, [0, 1]] = [1.0, 3.0]  # January
    obs[0, 31] = 5.0  # 1 February
    pred = np.full((1, 365), 2.0)
    pred[0, 2] = 1000.0  # an unobserved January day never enters
    pm, om = monthly_means(pred, obs)
    np.testing.assert_allclose(om[0, :2], [2.0, 5.0])
    np.testing.assert_allclose(pm[0, :2], [2.0, 2.0])
    assert np.isnan(om[0, 2:]).all() and np.isnan(pm[0, 2:]).all()
    res = evaluate_predictions(pred, obs, ["a"], [2001], aggregation="monthly")
    assert res["pooled"]["n"] == 2
    assert res["pooled"]["rmse"] == pytest.approx(math.sqrt(9 / 2))


def _world(n: int = 6, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.gamma(2.0, 20.0, (n, 365))
    obs[rng.random((n, 365)) < 0.5] = NAN
    pred = np.nan_to_num(obs, nan=30.0) * rng.uniform(0.7, 1.2, (n, 1)) + rng.normal(0, 5, (n, 365))
    entities = np.array(["US-Los", "US-Los", "FI-Hyy", "FI-Hyy", "c10_20", "c10_20"])[:n]
    years = np.array([2010, 2011, 2010, 2011, 1999, 2000])[:n]
    return pred, obs, entities, years


def test_pooled_per_entity_and_median() -> None:
    pred, obs, ent, yrs = _world()
    res = evaluate_predictions(pred, obs, ent, yrs)
    assert res["pooled"]["nse"] == pytest.approx(nse(pred.ravel(), obs.ravel()), rel=1e-9)
    assert res["pooled"]["n"] == int(np.isfinite(obs).sum())
    assert list(res["per_entity"]) == ["FI-Hyy", "US-Los", "c10_20"]
    for name in ("FI-Hyy", "US-Los", "c10_20"):
        rows = ent == name
        expected = metrics(pred[rows].ravel(), obs[rows].ravel())
        for key in METRIC_KEYS:
            assert res["per_entity"][name][key] == pytest.approx(expected[key], rel=1e-9)
    for key in ("rmse", "kge"):
        assert res["median"][key] == pytest.approx(np.median([m[key] for m in res["per_entity"].values()]))


def test_streaming_accumulator_equals_one_shot() -> None:
    pred, obs, ent, yrs = _world()
    for aggregation in ("daily", "monthly"):
        whole = evaluate_predictions(pred, obs, ent, yrs, aggregation=aggregation)
        acc = MetricAccumulator(aggregation)
        for chunk in (slice(0, 1), slice(1, 4), slice(4, 6)):  # US-Los and FI-Hyy split across chunks
            acc.update(pred[chunk], obs[chunk], ent[chunk])
        streamed = acc.result()
        for scope in ("pooled", "median"):
            for key in METRIC_KEYS:
                assert streamed[scope][key] == pytest.approx(whole[scope][key], rel=1e-9), (aggregation, key)


def test_bad_evaluation_input_is_a_clear_error() -> None:
    pred, obs, ent, yrs = _world()
    yrs[1] = 2010  # US-Los 2010 twice
    with pytest.raises(XmwInputError, match="more than once"):
        evaluate_predictions(pred, obs, ent, yrs)
    with pytest.raises(XmwInputError, match="aggregation"):
        MetricAccumulator("weekly")
    with pytest.raises(XmwInputError, match=r"\(N, 365\)"):
        MetricAccumulator().update(pred[:, :300], obs[:, :300], ent)


def test_masked_mse_means_over_observed_days() -> None:
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[2.0, NAN, 5.0], [1.0, 1.0, NAN]])
    loss = masked_mse(pred, target)
    assert loss.item() == pytest.approx((1 + 4 + 1 + 1) / 4)
    loss.backward()
    assert pred.grad[0, 1] == 0 and pred.grad[1, 2] == 0
    empty = masked_mse(pred, torch.full((2, 3), NAN))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(pred.grad).all()


def test_masked_mse_weight_really_weights_each_sample() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 365, generator=g)
    target = torch.randn(3, 365, generator=g)
    target[0, :100] = NAN
    doubled = masked_mse(pred, target, weight=torch.tensor([2.0, 1.0, 1.0]))
    duplicated = masked_mse(torch.cat([pred, pred[:1]]), torch.cat([target, target[:1]]))
    torch.testing.assert_close(doubled, duplicated)
    dropped = masked_mse(pred, target, weight=torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(dropped, masked_mse(pred[1:], target[1:]))
    with pytest.raises(ValueError, match="weight"):
        masked_mse(pred, target, weight=torch.ones(2))




def test_entity_sums_score_like_the_accumulator_and_are_copies() -> None:
    rng = np.random.default_rng(0)
    pred, obs = rng.normal(size=(4, 365)), rng.normal(size=(4, 365))
    obs[0, :50] = NAN
    acc = MetricAccumulator("daily")
    acc.update(pred, obs, np.array(["a", "b", "a", "c"]))
    sums = acc.entity_sums()
    assert list(sums) == ["a", "b", "c"]
    res = acc.result()
    assert metrics_from_sums(sum(sums.values())) == pytest.approx(res["pooled"], nan_ok=True)
    assert metrics_from_sums(sums["b"]) == pytest.approx(res["per_entity"]["b"], nan_ok=True)
    sums["a"][:] = 0.0  # a copy: the accumulator is untouched
    assert acc.result()["per_entity"]["a"]["n"] == 315 + 365
