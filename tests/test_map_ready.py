"""Map-ready as well as tower-ready (issue #15 item 5): a model trained by the ``fluxnet-real-map`` preset's own
procedure on towers alone (no Grid store) is accepted by ``xmw infer`` on a Grid store and maps it, reading the
grid's slots of its own names; the tower preset's model is refused there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from builders import write_tiny_fluxnet, write_tiny_temmdm

from xmw_ray.cli import main
from xmw_ray.config import load_config
from xmw_ray.data.features import Feature, FeatureSet, check_pairing, grid_features, select_slots
from xmw_ray.data.grid_store import GridStore, prepare_grid
from xmw_ray.data.site_store import SiteStore, prepare_sites
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import load_checkpoint_model

REPO = Path(__file__).resolve().parents[1]
MAP_PRESET = REPO / "configs" / "experiments" / "fluxnet-real-map.yaml"
TOWER_PRESET = REPO / "configs" / "experiments" / "fluxnet-real.yaml"
TOWERS = {"AA-Aaa": (60.0, 20.0), "BB-Bbb": (50.0, 10.0), "CC-Ccc": (-35.0, 145.0)}


def test_map_driver_set_pairs_with_the_grid_by_name_and_the_tower_set_does_not(tmp_path):
    write_tiny_fluxnet(tmp_path / "towers", TOWERS)
    drivers = {name: load_config(str(p), require="transfer").transfer.prepare.drivers
               for name, p in (("map", MAP_PRESET), ("tower", TOWER_PRESET))}
    assert drivers == {"map": "map", "tower": "tower"}
    prepare_sites(tmp_path / "towers", tmp_path / "map", drivers="map")
    prepare_sites(tmp_path / "towers", tmp_path / "tower", drivers="tower")
    grid = grid_features()
    site_map = SiteStore.open(tmp_path / "map").features
    slots = select_slots(site_map, grid)
    assert slots == ((0, 1, 2, 3), (6, 8, 9))  # PREC SOLR TAIR VAPR; wetlandtype CH4 CO2: no NPP, no soil maps
    check_pairing(site_map, "checkpoint c", grid.select(*slots), "grid g")
    assert {f.provenance for f in site_map.dynamic} == {"tower"}
    tower = SiteStore.open(tmp_path / "tower").features
    assert select_slots(tower, grid) is None
    with pytest.raises(XmwInputError, match="grid g: dynamic variables"):
        check_pairing(tower, "checkpoint c", grid, "grid g")


def test_slot_selection_needs_names_in_the_grids_order_and_the_same_meanings():
    grid = grid_features()
    assert select_slots(grid, grid) is None  # every slot: no selection
    swapped = FeatureSet((grid.dynamic[1], grid.dynamic[0]), grid.static[-2:])
    assert select_slots(swapped, grid) is None  # out of order: refused by the pairing check, not reordered
    with pytest.raises(XmwInputError, match="dynamic variables"):
        check_pairing(swapped, "checkpoint c", grid, "grid g")
    derived_npp = FeatureSet((Feature("NPP", "net_primary_productivity", "derived", "g C m-2 month-1"),), ())
    slots = select_slots(derived_npp, grid)
    assert slots == ((4,), ())
    with pytest.raises(XmwInputError, match="'NPP' is net_primary_productivity \\(simulated"):
        check_pairing(derived_npp, "checkpoint c", grid.select(*slots), "grid g")


def test_infer_maps_a_grid_with_the_map_presets_checkpoint(ray_session, tmp_path, capsys):
    from xmw_ray.transfer.experiment import run_experiment

    write_tiny_fluxnet(tmp_path / "towers", TOWERS, start="2014-01-01", end="2016-12-31")
    cfg = load_config(str(MAP_PRESET), [f"run.output_dir={tmp_path}", "run.name=map",
                                        f"transfer.prepare.forcing={tmp_path / 'towers'}", "optim.epochs=1",
                                        "transfer.ensemble=2", "transfer.baseline.max_iter=5"],
                      require="transfer").resolved()
    best = run_experiment(cfg, log=lambda msg: None)["best"]
    write_tiny_temmdm(tmp_path / "src", res=10.0, years=(2000,), seed=3, spoil_cells=0, keep_arrays=False)
    grid = tmp_path / "grid.zarr"
    prepare_grid(tmp_path / "src", grid, cells_per_chunk=64)
    out = tmp_path / "maps.zarr"
    assert main(["infer", "--checkpoint", str(best), "--grid", str(grid), "--out", str(out), "--actors", "1"]) == 0, \
        capsys.readouterr().err
    # the maps are the checkpoint applied to the grid's PREC, SOLR, TAIR, VAPR and wetlandtype, CH4, CO2
    store = GridStore.open(grid)
    model = load_checkpoint_model(best).eval()
    dyn, stat = select_slots(model.features, store.features)
    want = []
    for ci in range(store.n_chunks):
        block = store.read_block(0, ci)
        with torch.inference_mode():
            want.append(model(torch.from_numpy(block["dynamic"][..., list(dyn)]),
                              torch.from_numpy(block["static"][..., list(stat)])).numpy())
    want = np.concatenate(want)
    daily = zarr.open_group(str(out), mode="r")["ch4_flux"][0:365][:, store.cell_ilat, store.cell_ilon].T
    assert np.isfinite(daily).all() and np.ptp(want) > 0
    np.testing.assert_allclose(daily, want, rtol=1e-5, atol=1e-4)
    assert (out / "plots" / "annual_mean_2000.png").is_file()
