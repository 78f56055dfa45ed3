"""The GPU paths on a machine with CUDA: Ray Train on one GPU worker with bfloat16 autocast learns the built-in target
and writes a checkpoint a CPU-only laptop loads; ``--use-gpu`` inference actors give the CPU model's maps.

Skipped where no CUDA device is visible (CI, laptops). Starts its own Ray instance with one GPU and no dashboard, so
run it alone: ``python -m pytest -q -p no:xdist tests/test_gpu_paths.py`` (``bench/gpu.sh`` does, on a GPU machine).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible: GPU paths untested here")


@pytest.fixture(scope="module")
def gpu_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_one_gpu_worker_with_bf16_learns_and_its_checkpoint_loads_on_cpu(gpu_ray, tmp_path):
    from train_world import make_grid_store

    from xmw_ray.config import TrainConfig, validate
    from xmw_ray.models.checkpoint import MODEL_FILE, load_checkpoint_model
    from xmw_ray.train.runner import run_training

    store = make_grid_store(tmp_path / "world")
    cfg = validate({
        "data": {"source": "grid", "store": str(store), "batch_size": 32,
                 "split": {"kind": "temporal", "train_years": [2000, 2002], "test_years": [2003, 2003],
                           "val_fraction": 0.2, "seed": 0}},
        "model": {"name": "lstm", "params": {"hidden_size": 16, "num_layers": 1, "dropout": 0.0}},
        "optim": {"lr": 0.01, "epochs": 6, "patience": 10, "amp": True},
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "use_gpu": True},
        "run": {"output_dir": str(tmp_path / "runs"), "name": "gpu", "seed": 0},
    }, TrainConfig)
    out = run_training(cfg)
    losses = [h["val_loss"] for h in out.history]
    assert min(losses) < 0.5 * losses[0]
    assert out.metrics["val_nse"] > 0.5
    saved = torch.load(out.best_checkpoint / MODEL_FILE, map_location=None, weights_only=True)["state_dict"]
    assert {t.device.type for t in saved.values()} == {"cpu"}  # loads where there is no CUDA
    model = load_checkpoint_model(out.best_checkpoint)
    assert next(model.parameters()).device.type == "cpu"


def test_gpu_inference_actor_gives_the_cpu_models_maps(gpu_ray, tmp_path):
    import zarr
    from builders import write_tiny_extent, write_tiny_temmdm

    from xmw_ray.data.grid_store import GridStore, prepare_grid
    from xmw_ray.infer.run import run_inference
    from xmw_ray.models import build_model
    from xmw_ray.models.checkpoint import write_checkpoint

    norm = {"dynamic": {"mean": [10.0, 175.0, 0.0, 15.5, 30.0], "std": [6.0, 100.0, 17.0, 8.0, 17.0]},
            "static": {"mean": [5.0] * 8 + [1705.0, 362.0], "std": [3.0] * 10},
            "target": {"mean": 40.0, "std": 10.0}}
    write_tiny_temmdm(tmp_path / "src", res=10.0, years=(2000,), seed=3, spoil_cells=0, keep_arrays=False)
    extent, _ = write_tiny_extent(tmp_path / "src", res=10.0, seed=3)
    grid = tmp_path / "grid.zarr"
    prepare_grid(tmp_path / "src", grid, cells_per_chunk=16, wetland_area=extent)
    torch.manual_seed(0)
    model = build_model("lstm", 5, 10, norm=norm, hidden_size=8, num_layers=2, dropout=0.0).eval()
    store = GridStore.open(grid)
    model.features = store.features
    write_checkpoint(tmp_path / "ckpt", model, {"model": {"name": "lstm"}}, {})
    res = run_inference(tmp_path / "ckpt", grid, tmp_path / "maps.zarr", (2000, 2000), batch_size=40, actors=1,
                        use_gpu=True)
    assert res.computed == [2000]
    want = []
    for ci in range(store.n_chunks):
        block = store.read_block(0, ci)
        with torch.inference_mode():
            want.append(model(torch.from_numpy(block["dynamic"]), torch.from_numpy(block["static"])).numpy())
    want = np.concatenate(want)
    got = zarr.open_group(str(tmp_path / "maps.zarr"), mode="r")["ch4_flux"][0:365][:, store.cell_ilat,
                                                                                  store.cell_ilon].T
    assert np.ptp(want) > 1.0
    # float32 on both sides; cuDNN's LSTM sums in another order (and may use TF32): close, not bitwise equal
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * float(np.ptp(want)))
