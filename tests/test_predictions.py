"""``xmw evaluate --predictions FILE``: the per-day predictions at towers a scientist plots against the observations,
with an ensemble's member range beside them, written whole or not at all, never over a file that is not ours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import write_tiny_fluxnet

from xmw_ray.cli import main
from xmw_ray.data import schema
from xmw_ray.data.site_store import SiteStore, prepare_sites
from xmw_ray.models import build_model
from xmw_ray.models.checkpoint import write_checkpoint
from xmw_ray.models.ensemble import ensemble_from_models

TOWERS = {"AA-Aaa": (60.0, 20.0), "BB-Bbb": (-35.0, 145.0)}
MODEL = {"name": "lstm", "params": {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}}


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predictions")
    write_tiny_fluxnet(root / "flux", TOWERS)
    prepare_sites(root / "flux", root / "sites", drivers="map")
    store = SiteStore.open(root / "sites")
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(MODEL["name"], len(store.features.dynamic), len(store.features.static), **MODEL["params"])
        model.features = store.features
        members.append(model)
    ensemble = ensemble_from_models(members)
    ensemble.features = store.features
    config = {"data": {"split": {"kind": "all", "val_fraction": 0.0}}, "model": MODEL}
    write_checkpoint(root / "one", members[0], config, {})
    write_checkpoint(root / "ens", ensemble, config, {})
    return {"root": root, "sites": root / "sites", "one": root / "one", "ens": root / "ens", "members": members}


def _evaluate(towers, checkpoint: str, out: Path) -> int:
    return main(["evaluate", "--checkpoint", str(towers[checkpoint]), "--store", str(towers["sites"]), "--split",
                 "all", "--predictions", str(out)])


def test_an_ensembles_predictions_are_written_per_tower_day_with_the_members_range(ray_session, towers, tmp_path):
    out = tmp_path / "pred.csv"
    assert _evaluate(towers, "ens", out) == 0
    got = pd.read_csv(out)
    assert list(got.columns) == ["site", "date", "observed_mg_ch4_m2_d", "predicted_mg_ch4_m2_d",
                                 "member_min", "member_max"]
    store = SiteStore.open(towers["sites"])
    s = store.samples()
    n_rows = len(s[schema.YEAR])
    assert len(got) == n_rows * 365  # every day of every scored site-year, observed or not
    assert "2016-02-29" not in set(got["date"]) and {"2016-03-01", "2015-12-31"} <= set(got["date"])
    with torch.inference_mode():
        dyn, sta = torch.tensor(s[schema.DYNAMIC]), torch.tensor(s[schema.STATIC])
        each = np.stack([m(dyn, sta).numpy() for m in towers["members"]])
    row = {(site, int(year)): i for i, (site, year) in enumerate(zip(s[schema.ENTITY], s[schema.YEAR], strict=True))}
    first = got[(got["site"] == "BB-Bbb") & got["date"].str.startswith("2015-")]
    i = row[("BB-Bbb", 2015)]
    np.testing.assert_allclose(first["predicted_mg_ch4_m2_d"], each[:, i].mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(first["member_min"], each[:, i].min(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(first["member_max"], each[:, i].max(axis=0), rtol=1e-4, atol=1e-4)
    observed = first["observed_mg_ch4_m2_d"].to_numpy()
    np.testing.assert_allclose(observed, s[schema.TARGET][i], rtol=1e-5)  # a gap day stays empty (NaN)
    assert np.isnan(observed).any() and np.isfinite(observed).any()


def test_one_model_has_no_member_columns_and_a_foreign_file_is_never_overwritten(ray_session, towers, tmp_path,
                                                                                  capsys):
    out = tmp_path / "pred.csv"
    assert _evaluate(towers, "one", out) == 0
    assert list(pd.read_csv(out).columns) == ["site", "date", "observed_mg_ch4_m2_d", "predicted_mg_ch4_m2_d"]
    assert _evaluate(towers, "one", out) == 0  # our own file: replaced
    mine = tmp_path / "notes.csv"
    mine.write_text("my,own\n1,2\n")
    capsys.readouterr()
    assert _evaluate(towers, "one", mine) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes.csv" in err and "not a predictions file" in err
    assert mine.read_text() == "my,own\n1,2\n"


def test_a_missing_folder_is_one_line_before_ray(towers, tmp_path, capsys):
    assert _evaluate(towers, "one", tmp_path / "no" / "pred.csv") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "folder" in err and "not found" in err
