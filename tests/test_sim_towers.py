"""Pseudo towers: the true world they observe differs from the simulator by the documented parameters, plus
the documented noise and gaps, and ``simulate sites`` is the simulator at their forcing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from xmw_ray.cli import main
from xmw_ray.data.contract import NMOL_PER_S_TO_MG_PER_DAY
from xmw_ray.sim.process import SIMULATOR, TRUE_WORLD
from xmw_ray.sim.site_forcing import parse_site_rows
from xmw_ray.sim.site_model import run_site, site_forcing
from xmw_ray.sim.statics import build_world
from xmw_ray.sim.towers import NOISE_ABS_MG, NOISE_REL, lut_gap_fill

RES, SEED, SITES = 10.0, 11, 8


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    out = tmp_path_factory.mktemp("towers")
    assert main(["simulate", "--out", str(out), "--res", str(RES), "--years", "2007-2012", "--sites", str(SITES),
                 "--seed", str(SEED)]) == 0
    truth = json.loads((out / "truth.json").read_text())
    world = build_world(SEED, RES)
    records = []
    for site, info in truth["towers"]["sites"].items():
        path = next((out / "FLUXNET-CH4").glob(f"FLX_{site}_FLUXNET-CH4_DD_*.csv"))
        rows = parse_site_rows(site, pd.read_csv(path), path, extra=("FCH4", "FCH4_F", "FCH4_F_ANNOPTLM"))
        cell = int(np.flatnonzero(world.cells == info["cell"][0] * world.nlon + info["cell"][1])[0])
        records.append((site, info, rows, cell))
    return out, truth, world, records


def _run(world, rows, cell, params, effect):
    years = rows.dates.astype("datetime64[Y]").astype(np.int64) + 1970
    forcing = site_forcing(years, *(rows.columns[c] for c in ("TA_F", "P_F", "SW_IN_F", "VPD_F")))
    return run_site(forcing, world.props(np.array([cell]), site_effect=np.array([effect])), params).ch4


def test_truth_file_records_the_parameters_and_effects(towers):
    _, truth, _, records = towers
    assert truth["true_parameters"] == TRUE_WORLD.to_dict()
    assert truth["simulator_parameters"] == SIMULATOR.to_dict()
    effects = np.array([info["site_effect"] for _, info, _, _ in records])
    assert len(effects) == SITES and np.all(effects > 0) and len(np.unique(effects)) == SITES


def test_observations_are_the_true_world_plus_documented_noise(towers):
    _, _, world, records = towers
    z_truth, z_sim = [], []
    for _, info, rows, cell in records:
        obs = rows.columns["FCH4"] * NMOL_PER_S_TO_MG_PER_DAY
        seen = np.isfinite(obs)
        true = _run(world, rows, cell, TRUE_WORLD, info["site_effect"])
        sim = _run(world, rows, cell, SIMULATOR, 1.0)
        sd = NOISE_REL * np.abs(true) + NOISE_ABS_MG
        z_truth.append(((obs - true) / sd)[seen])
        z_sim.append(((obs - sim) / sd)[seen])
    z_truth, z_sim = np.concatenate(z_truth), np.concatenate(z_sim)
    assert len(z_truth) > 1000
    assert abs(z_truth.mean()) < 0.1 and 0.9 < z_truth.std() < 1.1  # exactly the documented noise
    assert np.mean(z_sim**2) > 4 * np.mean(z_truth**2)  # the simulator misses: the sim-to-real gap


def test_gaps_look_like_fluxnet(towers):
    _, _, _, records = towers
    missing = np.concatenate([~np.isfinite(rows.columns["FCH4"]) for _, _, rows, _ in records])
    assert 0.1 < missing.mean() < 0.7
    for _, _, rows, _ in records:
        ann = rows.columns["FCH4_F_ANNOPTLM"]
        assert np.isfinite(ann).all()  # filled everywhere
        seen = np.isfinite(rows.columns["FCH4"])
        np.testing.assert_array_equal(ann[seen], rows.columns["FCH4"][seen])
        assert np.isfinite(rows.columns["FCH4_F"]).sum() >= seen.sum()
    runs = []  # multi-day gaps exist
    for _, _, rows, _ in records:
        m = ~np.isfinite(rows.columns["FCH4"])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], m.astype(np.int8), [0]])))
        runs += list(edges[1::2] - edges[::2])
    assert max(runs) >= 5


def test_lut_gap_fill_uses_same_temperature_days():
    ta = np.concatenate([np.full(20, -10.0), np.full(20, 20.0)])
    flux = np.concatenate([np.full(20, 1.0), np.full(20, 50.0)])
    flux[[5, 30]] = np.nan
    filled = lut_gap_fill(flux, ta)
    assert filled[5] == 1.0 and filled[30] == 50.0


def test_simulate_sites_on_towers_is_the_simulator_at_their_forcing(towers, tmp_path):
    out, _, world, records = towers
    assert main(["simulate", "sites", "--forcing", str(out), "--out", str(tmp_path)]) == 0
    for site, _, rows, _ in records:
        path = next((tmp_path / "FLUXNET-CH4").glob(f"FLX_{site}_*.csv"))
        sim = parse_site_rows(site, pd.read_csv(path), path, extra=("FCH4",))
        np.testing.assert_array_equal(sim.dates, rows.dates)
        np.testing.assert_array_equal(sim.columns["TA_F"], rows.columns["TA_F"])  # forcing copied
        assert np.isfinite(sim.columns["FCH4"]).all() and (sim.columns["FCH4"] >= 0).all()
