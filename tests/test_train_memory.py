"""Small stores kept in memory (``data.in_memory``) and runs without a validation part: the first epoch streams
the shard, later epochs are seeded permutations of the very same samples; with ``val_fraction: 0`` a run trains
every epoch (no early stopping) and checkpoints every ``checkpoint_every`` epochs and at the end."""

from __future__ import annotations

import numpy as np
import torch
from fresh_python import run_fresh_python

from xmw_ray.train.loop import ShardCache


class FakeShard:
    """What ``iter_batches(batch_format="numpy")`` gives a worker: dict batches of arrays, counted so a re-read
    would show."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads = 0

    def iter_batches(self, batch_size: int, batch_format: str, **kwargs):
        assert batch_format == "numpy"
        self.reads += 1
        ids = np.arange(self.n, dtype=np.int64)
        for i in range(0, self.n, batch_size):
            yield {"id": ids[i:i + batch_size], "x": ids[i:i + batch_size] * 2}


def ids_of(cache: ShardCache, epoch: int, shuffle: bool = True) -> list[int]:
    batches = list(cache.batches(4, torch.device("cpu"), 0, epoch, shuffle))
    assert all(len(b["id"]) <= 4 for b in batches)
    assert all(torch.equal(b["x"], b["id"] * 2) for b in batches)  # columns stay aligned
    return [int(v) for b in batches for v in b["id"]]


def test_first_epoch_streams_then_every_epoch_is_a_permutation_of_the_same_samples():
    shard = FakeShard(10)
    cache = ShardCache(shard, seed=3)
    assert ids_of(cache, 0) == list(range(10))  # streamed as the shard gives it
    e1, e2 = ids_of(cache, 1), ids_of(cache, 2)
    assert shard.reads == 1  # never read again
    assert sorted(e1) == sorted(e2) == list(range(10))
    assert e1 != e2 and e1 != list(range(10))
    assert e1 == ids_of(_warm(3), 1)  # same seed, same order
    assert ids_of(cache, 5, shuffle=False) == list(range(10))  # evaluation keeps the order


def _warm(seed: int) -> ShardCache:
    cache = ShardCache(FakeShard(10), seed=seed)
    ids_of(cache, 0)
    return cache


def test_an_empty_shard_stays_empty():
    cache = ShardCache(FakeShard(0), seed=0)
    assert ids_of(cache, 0) == [] and ids_of(cache, 1) == []


def test_run_without_validation_trains_every_epoch_and_checkpoints_sparsely(ray_session, tmp_path):
    from train_world import make_grid_store

    from xmw_ray.config import TrainConfig
    from xmw_ray.train.runner import run_training

    store = make_grid_store(tmp_path / "world")
    cfg = TrainConfig.model_validate({
        "data": {"source": "grid", "store": str(store), "batch_size": 32, "in_memory": True,
                 "split": {"kind": "temporal", "train_years": [2000, 2001], "test_years": [2002, 2002],
                           "val_fraction": 0.0}},
        "model": {"name": "lstm", "params": {"hidden_size": 4, "num_layers": 1, "dropout": 0.0}},
        "optim": {"lr": 0.01, "epochs": 5, "patience": 1, "scheduler": "none"},
        "run": {"name": "noval", "output_dir": str(tmp_path / "runs"), "checkpoint_every": 2}})
    out = run_training(cfg)
    assert [h["epoch"] for h in out.history] == [0, 1, 2, 3, 4]  # patience 1 would stop at once with a val part
    assert all(h["val_n"] == 0 for h in out.history)
    kept = sorted(p.name for p in (out.run_dir / "checkpoints").glob("epoch_*"))
    assert kept[-1] == "epoch_0004" and "epoch_0000" not in kept and "epoch_0002" not in kept
    assert (out.best_checkpoint / "model.pt").is_file()


def test_a_small_validation_part_is_decoded_once_and_scores_the_same_samples(ray_session, tmp_path, monkeypatch):
    from train_world import make_grid_store

    from xmw_ray.config import TrainConfig
    from xmw_ray.data.ray_datasets import part_bytes, sample_bytes, sample_dataset, store_info
    from xmw_ray.train import loop
    from xmw_ray.train.runner import run_training

    store = make_grid_store(tmp_path / "world")
    raw = {"data": {"source": "grid", "store": str(store), "batch_size": 32, "shuffle_buffer": 0,
                    "split": {"kind": "temporal", "train_years": [2000, 2001], "test_years": [2002, 2002],
                              "val_fraction": 0.25}},
           "model": {"name": "lstm", "params": {"hidden_size": 4, "num_layers": 1, "dropout": 0.0}},
           "optim": {"lr": 0.01, "epochs": 2, "patience": 10, "scheduler": "none"},
           "run": {"output_dir": str(tmp_path / "runs")}}
    cfg = TrainConfig.model_validate(raw)
    info = store_info(str(store), "grid")
    n_val = sample_dataset(info, cfg.data.split, "val").count()
    assert part_bytes(info, cfg.data.split, "val") == n_val * sample_bytes(len(info.dynamic_vars),
                                                                             len(info.static_vars))
    caches = []

    class CountedCache(ShardCache):
        def __init__(self, shard, seed: int) -> None:
            caches.append(shard)
            super().__init__(shard, seed)

    monkeypatch.setattr(loop, "ShardCache", CountedCache)
    cached = run_training(TrainConfig.model_validate({**raw, "run": {**raw["run"], "name": "cached"}}))
    assert len(caches) == 1  # the validation shard (local mode runs the loop in this process)
    streamed = run_training(TrainConfig.model_validate(
        {**raw, "data": {**raw["data"], "val_cache_mb": 0}, "run": {**raw["run"], "name": "streamed"}}))
    assert len(caches) == 1  # a cap of 0 streams validation every epoch
    val_n = {h["val_n"] for h in cached.history + streamed.history}
    assert len(val_n) == 1 and val_n.pop() > 0  # every epoch, cached or not, scores the same observed days


def test_part_sizes_count_a_partial_last_chunk_by_its_own_cells(ray_session, tmp_path):
    """A Grid store whose cell count is not a multiple of ``cells_per_chunk`` ends in a short chunk: the part
    sizes (and so the adversarial stage's steps per epoch) count its cells, not a whole chunk's."""
    from train_world import make_grid_store

    from xmw_ray.data.grid_store import GridStore, prepare_grid
    from xmw_ray.data.ray_datasets import part_bytes, part_rows, sample_bytes, sample_dataset, store_info
    from xmw_ray.data.splits import SplitSpec

    src = make_grid_store(tmp_path / "world").parent / "src"
    n_cells = GridStore.open(str(tmp_path / "world" / "grid.zarr")).n_cells
    per_chunk = n_cells // 2 + 1  # two chunks, the second short
    prepare_grid(src, tmp_path / "odd.zarr", cells_per_chunk=per_chunk)
    info = store_info(str(tmp_path / "odd.zarr"), "grid")
    spec = SplitSpec(kind="temporal", train_years=[2000, 2001], test_years=[2002, 2002], val_fraction=0.25)
    one = sample_bytes(len(info.dynamic_vars), len(info.static_vars))
    for part in ("train", "test"):
        read = sum(len(b["target"]) for b in sample_dataset(info, spec, part).iter_batches(batch_size=None))
        assert part_bytes(info, spec, part) == read * one, part
        assert part_rows(info, spec, part) == read, part


def test_read_only_batches_become_tensors_without_a_torch_warning():
    """Ray Data hands out read-only numpy views; turning one into a tensor used to print torch's "non-writable
    array" UserWarning on every training run's terminal. A fresh interpreter, because torch warns once per process."""
    out = run_fresh_python(
        "import warnings, numpy as np, torch\n"
        "warnings.simplefilter('error')\n"
        "from xmw_ray.train.loop import batch_dicts\n"
        "class Shard:\n"
        "    def iter_batches(self, **kw):\n"
        "        x = np.arange(6, dtype=np.float32); x.flags.writeable = False\n"
        "        yield {'x': x}\n"
        "b, = batch_dicts(Shard(), 6, torch.device('cpu'))\n"
        "print(b['x'].tolist())\n")
    assert out.split() == ["[0.0,", "1.0,", "2.0,", "3.0,", "4.0,", "5.0]"]
