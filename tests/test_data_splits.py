"""Splits: X-MethaneWet's rules on worked examples, seeded folds, validation carved from training only."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from xmw_ray.data.presets import xmw_site_folds
from xmw_ray.data.splits import NONE, PART_NAMES, TEST, TRAIN, VAL, SplitPlan, SplitSpec

REAL_SITES = ("BW-Gum", "CA-SCB", "DE-Hte", "DE-SfN", "DE-Zrk", "FI-Hyy", "FI-Lom", "FI-Si2", "FR-LGt", "RU-Ch2",
              "RU-Che", "US-Atq", "US-BZF", "US-EDN", "US-ICs")


@pytest.mark.parametrize(
    ("n", "n_test"),
    [(1, 0), (2, 1), (3, 1), (8, 1), (15, 2)],  # years after years[(n-1)*6//7]: idx 0, 0, 1, 6, 12
)
def test_site_temporal_matches_xmethanewet(n, n_test):
    years = list(range(2001, 2001 + n))
    plan = SplitPlan(SplitSpec(kind="site_temporal"), ["S"], {"S": years[::-1]}, years)
    parts = plan.parts(np.zeros(n, dtype=int), np.array(years))
    assert (parts == TEST).sum() == n_test
    assert list(parts) == [TRAIN] * (n - n_test) + [TEST] * n_test
    assert plan.years_needed("test") == years[n - n_test:]


def test_site_temporal_uses_each_sites_own_years():
    plan = SplitPlan(SplitSpec(kind="site_temporal"), ["A", "B"], {"A": [2010, 2011], "B": [2014, 2015, 2016]},
                     range(2010, 2017))
    parts = plan.parts(np.array([0, 0, 1, 1, 1]), np.array([2010, 2011, 2014, 2015, 2016]))
    assert [PART_NAMES[p] for p in parts] == ["train", "test", "train", "train", "test"]


def test_temporal_defaults_are_xmethanewets_simulation_split():
    plan = SplitPlan(SplitSpec(), ["c0_0"], None, range(1979, 2019))
    assert plan.parts(np.zeros(3, int), np.array([1979, 1998, 1999])).tolist() == [TRAIN, TRAIN, TEST]
    assert plan.years_needed("train") == list(range(1979, 1999))
    assert plan.years_needed("test") == list(range(1999, 2019))
    assert plan.parts(np.zeros(1, int), np.array([1970])).tolist() == [NONE]


def test_spatial_folds_are_seeded_balanced_and_block_independent():
    ents = [f"c{i}_{j}" for i in range(20) for j in range(10)]
    spec = SplitSpec(kind="spatial", n_folds=5, test_fold=2, seed=7)
    plan = SplitPlan(spec, ents, None, [2000, 2001])
    idx = np.arange(len(ents))
    parts = plan.parts(idx, np.full(len(ents), 2000))
    assert (parts == TEST).sum() == 40 and (parts == TRAIN).sum() == 160
    # the same entities in another order give the same parts (no dependence on list order or block)
    shuffled = list(np.random.default_rng(0).permutation(ents))
    plan2 = SplitPlan(spec, shuffled, None, [2000, 2001])
    again = plan2.parts(plan2.entity_index(ents), np.full(len(ents), 2001))
    np.testing.assert_array_equal(parts, again)
    other_seed = SplitPlan(spec.model_copy(update={"seed": 8}), ents).parts(idx, np.full(len(ents), 2000))
    assert not np.array_equal(parts, other_seed)


def test_xmethanewet_tower_folds_preset():
    folds = xmw_site_folds()
    assert len(folds) == 30 and sorted(set(folds.values())) == [0, 1, 2, 3, 4]
    plan = SplitPlan(SplitSpec(kind="spatial", folds="xmw", test_fold=3), REAL_SITES)
    parts = dict(zip(REAL_SITES, [PART_NAMES[p] for p in plan.parts(np.arange(15), np.full(15, 2015))], strict=True))
    assert {s for s, p in parts.items() if p == "test"} == {"FR-LGt", "US-ICs", "US-Atq"}
    assert parts["FI-Hyy"] == parts["US-EDN"] == "none"  # not in any X-MethaneWet fold
    assert parts["DE-Hte"] == "train"


def test_validation_is_carved_from_training_never_from_test():
    ents = [f"e{i}" for i in range(400)]
    idx = np.repeat(np.arange(400), 4)
    years = np.tile([1990, 1995, 2000, 2005], 400)
    base = SplitPlan(SplitSpec(), ents).parts(idx, years)
    with_val = SplitPlan(SplitSpec(val_fraction=0.25, seed=3), ents).parts(idx, years)
    np.testing.assert_array_equal(with_val == TEST, base == TEST)
    assert set(np.unique(with_val[base == TRAIN])) == {TRAIN, VAL}
    share = (with_val == VAL).sum() / (base == TRAIN).sum()
    assert 0.18 < share < 0.32
    spatial = SplitPlan(SplitSpec(kind="spatial", val_fraction=0.25), ents)
    sp = spatial.parts(idx, years).reshape(400, 4)
    assert (sp == sp[:, :1]).all()  # by entity: every year of an entity has the same part
    assert not ((sp == VAL) & (SplitPlan(SplitSpec(kind="spatial"), ents).parts(idx, years).reshape(400, 4) == TEST)).any()


def test_fraction_subsamples_training_entities():
    ents = [f"e{i}" for i in range(1000)]
    idx = np.repeat(np.arange(1000), 2)
    years = np.tile([1980, 1981], 1000)
    parts = SplitPlan(SplitSpec(fraction=0.3, seed=1), ents).parts(idx, years).reshape(1000, 2)
    kept = (parts == TRAIN).all(axis=1)
    assert (parts[:, 0] == parts[:, 1]).all() and 0.25 < kept.mean() < 0.35


def test_bad_specs_are_rejected():
    with pytest.raises(ValidationError):
        SplitSpec(kind="random")
    with pytest.raises(ValidationError):
        SplitSpec(train_years=(2000, 1990))
    with pytest.raises(ValidationError):
        SplitSpec(kind="spatial", n_folds=3, test_fold=3)
    assert SplitSpec().key() == SplitSpec().key() != SplitSpec(seed=1).key()


def test_all_trains_on_every_sample_and_tests_none():
    """The deployable fit: every tower-year trains (validation, when asked, still comes out of training)."""
    years = np.array([2010, 2011, 2012, 2013] * 3)
    ent = np.repeat(np.arange(3), 4)
    plan = SplitPlan(SplitSpec(kind="all"), ["A", "B", "C"], all_years=range(2010, 2014))
    assert (plan.parts(ent, years) == TRAIN).all()
    assert plan.years_needed("test") == []
    assert plan.years_needed("train") == [2010, 2011, 2012, 2013]
    with_val = SplitPlan(SplitSpec(kind="all", val_fraction=0.5), ["A", "B", "C"]).parts(ent, years)
    assert set(with_val.tolist()) == {TRAIN, VAL}
