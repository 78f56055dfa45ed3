"""Normalisation statistics: streamed partials merge to the plain whole-array answer, training part only."""

from __future__ import annotations

import numpy as np
import pytest
from builders import write_tiny_temmdm

from xmw_ray.data import schema
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.normstats import NormPartial, NormStats, grid_normstats, reduce_partials
from xmw_ray.data.splits import SplitSpec


def _block(rng, n, nan_share=0.3):
    target = rng.gamma(2.0, 10.0, (n, 365)).astype(np.float32)
    target[rng.random((n, 365)) < nan_share] = np.nan
    return {schema.DYNAMIC: rng.normal(5, 3, (n, 365, 5)).astype(np.float32),
            schema.STATIC: rng.normal(0, 2, (n, 10)).astype(np.float32), schema.TARGET: target}


def test_merged_partials_equal_whole_array_statistics():
    rng = np.random.default_rng(0)
    blocks = [_block(rng, n) for n in (3, 17, 1, 40)]
    merged = reduce_partials(NormPartial.of_block(b) for b in reversed(blocks))
    dyn = np.concatenate([b[schema.DYNAMIC] for b in blocks]).reshape(-1, 5).astype(np.float64)
    tgt = np.concatenate([b[schema.TARGET] for b in blocks]).ravel().astype(np.float64)
    stats = NormStats.from_partial(merged, list("abcde"), [f"s{i}" for i in range(10)])
    np.testing.assert_allclose(stats.dynamic_mean, dyn.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.dynamic_std, dyn.std(axis=0), rtol=1e-10)
    assert stats.target_mean == pytest.approx(np.nanmean(tgt), rel=1e-10)
    assert stats.target_std == pytest.approx(np.nanstd(tgt), rel=1e-10)
    assert stats.n_samples == 61


def test_grid_statistics_use_training_years_only_and_round_trip(tmp_path):
    write_tiny_temmdm(tmp_path / "src", res=10.0, years=(2000, 2001), seed=4)
    prepare_grid(tmp_path / "src", tmp_path / "g.zarr", cells_per_chunk=32)
    g = GridStore.open(tmp_path / "g.zarr")
    spec = SplitSpec(train_years=(2000, 2000), test_years=(2001, 2001))
    stats = grid_normstats(g, spec)
    train = np.concatenate([g.read_block(0, c)[schema.DYNAMIC] for c in range(g.n_chunks)]).reshape(-1, 5)
    np.testing.assert_allclose(stats.dynamic_mean, train.astype(np.float64).mean(axis=0), rtol=1e-6)
    assert stats.n_samples == g.n_cells
    path = stats.save(str(tmp_path / "g.zarr"))
    assert path.endswith(f"normstats/{spec.key()}.json")
    back = NormStats.load(str(tmp_path / "g.zarr"), spec.key())
    np.testing.assert_array_equal(back.dynamic_std, stats.dynamic_std)
    assert back.static_vars == list(g.static_vars) and back.split["train_years"] == [2000, 2000]
    assert GridStore.open(tmp_path / "g.zarr").n_cells == g.n_cells  # the store still opens with normstats/
