"""Every sub-command's bad inputs in one table: exit status 2, ONE line ``xmw: error: ...`` naming the file, flag or
key, no traceback, nothing left behind (the workspace holds exactly the files it held before), and no Ray started.

Rows build their inputs from a small workspace made once per module: FLUXNET-CH4 files written by the built-in
simulator's writer (``sim.flx_files``), a tiny Grid store, a checkpoint made by the training code's own writer, and
YAML configs. The truncated-file rows cut a copy of a file three ways (mid-value, no final newline, mid-row); the
same rows run on a copy of a real tower file where ``../shared`` is present.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from builders import write_tiny_temmdm

from xmw_ray.cli import main

SITE = "XX-Aaa"


@dataclass(frozen=True)
class Workspace:
    root: Path
    flux: Path  # simulator-written FLUXNET-CH4 release folder (one tower + META)
    grid: Path  # tiny Grid store
    checkpoint: Path  # a checkpoint directory matching the Grid store's inputs
    fluxnet: Path | None = None  # the real tower files (``fluxnet_dir`` fixture), for the rows that need them


def _write_sim_towers(folder: Path) -> Path:
    """One tower's two years through the simulator's FLUXNET-CH4 writer (what ``xmw simulate`` writes)."""
    from xmw_ray.sim.flx_files import SITE_COLUMNS, write_meta, write_site_file

    dates = np.arange(np.datetime64("2015-01-01"), np.datetime64("2017-01-01"))
    rng = np.random.default_rng(0)
    columns = {c: rng.uniform(1.0, 20.0, len(dates)) for c in SITE_COLUMNS[1:]}
    write_site_file(folder, SITE, dates, columns)
    write_meta(folder, [{"SITE_ID": SITE, "LAT": 50.0, "LON": 10.0, "SITE_CLASSIFICATION": "Bog", "IGBP": "WET",
                         "KOPPEN": "Dfb", "TREE": 0}], stamp="1")
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    import torch

    from xmw_ray.data.grid_store import GridStore
    from xmw_ray.models import build_model
    from xmw_ray.models.checkpoint import write_checkpoint

    root = tmp_path_factory.mktemp("bad-inputs")
    flux = _write_sim_towers(root / "flux")
    write_tiny_temmdm(root / "tem", res=10.0, years=(2000, 2001), seed=5)
    assert main(["prepare", "grid", "--src", str(root / "tem"), "--out", str(root / "grid.zarr")]) == 0
    store = GridStore.open(str(root / "grid.zarr"))
    torch.manual_seed(0)
    model = build_model("lstm", len(store.dynamic_vars), len(store.static_vars), hidden_size=4, num_layers=1)
    model.features = store.features  # what training on this grid records
    checkpoint = write_checkpoint(root / "ckpt", model, {"model": {"name": "lstm", "params": {}}}, {})
    # A run "old" trained (one checkpoint) with a 4-unit LSTM on the Grid store: resuming it must keep that model.
    config = {"data": {"source": "grid", "store": str(root / "grid.zarr")},
              "model": {"name": "lstm", "params": {"hidden_size": 4, "num_layers": 1}},
              "run": {"name": "old", "output_dir": str(root / "runs")}}
    write_checkpoint(root / "runs" / "old" / "checkpoints" / "epoch_0001", model, config, {"epoch": 1},
                     train_state={"history": [{"epoch": 1}]})
    # A Ray Train run (workers >= 1: Ray names its checkpoint folders) trained on another store.
    moved = {**config, "data": {"source": "grid", "store": str(root / "older-grid.zarr")}}
    write_checkpoint(root / "runs" / "old-ray" / "checkpoint_2026-01-01_00-00-00.000000", model, moved, {"epoch": 1},
                     train_state={"history": [{"epoch": 1}]})
    return Workspace(root=root, flux=flux, grid=root / "grid.zarr", checkpoint=checkpoint)


# --- input makers: each writes what its row needs under ``tmp`` (not the shared workspace) and returns argv ---
Maker = Callable[[Workspace, Path], list[str]]


def _yaml(path: Path, tree: dict) -> str:
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def _train_cfg(w: Workspace, tmp: Path, model: dict, name: str = "fresh") -> str:
    return _yaml(tmp / "cfg.yaml", {"data": {"source": "grid", "store": str(w.grid)}, "model": model,
                                    "run": {"name": name, "output_dir": str(w.root / "runs")}})


def _transfer_cfg(w: Workspace, tmp: Path, **over) -> str:
    tree = {"run": {"output_dir": str(tmp), "name": "transfer"}, "source": {"store": str(w.grid)},
            "data": {"store": str(w.grid)},
            "transfer": {"strategies": ["scratch", "adversarial"], "settings": {"temporal": {"kind": "temporal"}},
                         **over}}
    return _yaml(tmp / "transfer.yaml", tree)


def _tune_cfg(w: Workspace, tmp: Path, search: dict) -> str:
    return _yaml(tmp / "tune.yaml", {"data": {"store": str(w.grid)}, "run": {"output_dir": str(tmp / "tune")},
                                     "search": search})


def _cut(how: str, original: Path) -> Callable[[Path], None]:
    """Rewrite the copy ``path`` of a tower file as if its download had stopped early."""

    def cut(path: Path) -> None:
        data = original.read_bytes()
        if how == "mid-value":  # inside the last number of the last row
            data = data[:-4]
        elif how == "no-final-newline":
            data = data.rstrip(b"\n")
        elif how == "mid-date":  # every field there, but the last row's date is cut to YYYYMM (a hand repair)
            start = data.rstrip(b"\n").rfind(b"\n") + 1
            data = data[:start] + data[start:start + 6] + data[start + 8:]
        else:  # mid-row: a complete line, but the last row holds only its first fields
            start = data.rstrip(b"\n").rfind(b"\n") + 1
            data = data[: data.index(b",", data.index(b",", start) + 1)] + b"\n"
        path.write_bytes(data)

    return cut


def _truncated_sim(how: str, command: str) -> Maker:
    def make(w: Workspace, tmp: Path) -> list[str]:
        folder = tmp / "cut"
        shutil.copytree(w.flux, folder)
        tower = next(folder.glob(f"FLX_{SITE}_*.csv"))
        _cut(how, tower)(tower)
        if command == "simulate":
            return ["simulate", "sites", "--forcing", str(folder), "--out", str(tmp / "out")]
        return ["prepare", "sites", "--src", str(folder), "--out", str(tmp / "out")]

    return make


def _truncated_real(how: str) -> Maker:
    def make(w: Workspace, tmp: Path) -> list[str]:
        assert w.fluxnet is not None
        folder = tmp / "cut"
        folder.mkdir()
        for meta in w.fluxnet.glob("FLX_AA-Flx_CH4-META_*.csv"):
            shutil.copy(meta, folder)
        original = sorted(w.fluxnet.glob("FLX_*_FLUXNET-CH4_DD_*.csv"))[0]
        _cut(how, original)(folder / original.name)
        return ["prepare", "sites", "--src", str(folder), "--out", str(tmp / "out")]

    return make


def _best_with_notes(command: str) -> Maker:
    """A run folder whose ``best`` holds a user's file: publishing the new best checkpoint there would delete it."""
    def make(w: Workspace, tmp: Path) -> list[str]:
        tree = {"data": {"source": "grid", "store": str(w.grid)}, "run": {"name": "mine", "output_dir": str(tmp)}}
        if command == "transfer":
            tree.update(source={"store": str(w.grid)},
                        transfer={"strategies": ["scratch"], "settings": {"temporal": {"kind": "temporal"}}})
        if command == "tune":
            tree.update(search={"num_samples": 1}, resources={"num_workers": 1})
        (tmp / "mine" / "best").mkdir(parents=True)
        (tmp / "mine" / "best" / "notes.txt").write_text("my notes")
        return [command, "--config", _yaml(tmp / "cfg.yaml", tree)]

    return make


def _unfinished_world(command: str) -> Maker:
    """A built-in world that ``xmw simulate`` began and never finished (its marker, no ``truth.json``): its years
    may be fewer than asked or from two seeds."""
    def make(w: Workspace, tmp: Path) -> list[str]:
        world = tmp / "world"
        shutil.copytree(w.root / "tem", world)
        shutil.copytree(w.flux, world / "FLUXNET-CH4")
        (world / ".xmw-world").touch()
        src = world if command == "grid" else world / "FLUXNET-CH4"
        return ["prepare", command, "--src", str(src), "--out", str(tmp / "out")]

    return make


def _planted_search_state(w: Workspace, tmp: Path) -> list[str]:
    """A new search's folder in which someone already put a state file that a later resume would unpickle (Ray
    picks the newest name): signing the search would vouch for it."""
    (tmp / "mine").mkdir()
    (tmp / "mine" / "experiment_state-9999-12-31_23-59-59.json").write_text("{}")
    tree = {"data": {"source": "grid", "store": str(w.grid)}, "run": {"name": "mine", "output_dir": str(tmp)},
            "search": {"num_samples": 1}, "resources": {"num_workers": 1}}
    return ["tune", "--config", _yaml(tmp / "cfg.yaml", tree)]


def _not_utf8_config(w: Workspace, tmp: Path) -> list[str]:
    """A config saved in Latin-1 (an editor's default on some systems)."""
    (tmp / "cfg.yaml").write_bytes(f"data:\n  store: {w.grid}\nrun:\n  name: caf\xe9\n".encode("latin-1"))
    return ["train", "--config", str(tmp / "cfg.yaml")]


def _site_ints_csv(text: bytes) -> Maker:
    """``prepare sites --wetland-types`` with a CSV of the bytes given."""
    def make(w: Workspace, tmp: Path) -> list[str]:
        (tmp / "types.csv").write_bytes(text)
        return ["prepare", "sites", "--src", str(w.flux), "--out", str(tmp / "s"), "--wetland-types",
                str(tmp / "types.csv")]

    return make


def _grid_lacking(entry: str) -> Maker:
    """A copy of the Grid store that lost one array (a copy cut short)."""
    def make(w: Workspace, tmp: Path) -> list[str]:
        shutil.copytree(w.grid, tmp / "grid.zarr")
        shutil.rmtree(tmp / "grid.zarr" / entry)
        return ["inspect", str(tmp / "grid.zarr")]

    return make


def _damaged_checkpoint_config(text: str) -> Maker:
    def make(w: Workspace, tmp: Path) -> list[str]:
        shutil.copytree(w.checkpoint, tmp / "ckpt")
        (tmp / "ckpt" / "config.json").write_text(text)
        return ["evaluate", "--checkpoint", str(tmp / "ckpt"), "--store", str(w.grid)]

    return make


def _damaged_run_config(w: Workspace, tmp: Path) -> list[str]:
    """A run whose last checkpoint's config.json was cut short: resuming it must say so, not raise."""
    shutil.copytree(w.root / "runs" / "old", tmp / "runs" / "cut")
    (tmp / "runs" / "cut" / "checkpoints" / "epoch_0001" / "config.json").write_text('{"model": {"na')
    tree = {"data": {"source": "grid", "store": str(w.grid)}, "run": {"name": "cut", "output_dir": str(tmp / "runs")}}
    return ["train", "--config", _yaml(tmp / "cfg.yaml", tree)]


@dataclass(frozen=True)
class Row:
    id: str
    make: Maker
    needle: str  # a substring of the one error line
    real_towers: bool = False  # needs ../shared's FLUXNET-CH4 files (skips without them)


ROWS = [
    # simulate
    Row("simulate-bad-years", lambda w, t: ["simulate", "--out", str(t / "world"), "--years", "2005-2000"], "--years"),
    Row("simulate-sites-missing-forcing",
        lambda w, t: ["simulate", "sites", "--forcing", str(t / "nope"), "--out", str(t / "o")], "nope"),
    *[Row(f"simulate-sites-truncated-{how}", _truncated_sim(how, "simulate"), "file cut short")
      for how in ("mid-value", "no-final-newline", "mid-row")],
    # prepare grid / sites
    *[Row(f"prepare-{command}-unfinished-world", _unfinished_world(command),
          "world: an unfinished xmw simulate (no truth.json") for command in ("grid", "sites")],
    Row("prepare-grid-missing-src", lambda w, t: ["prepare", "grid", "--src", str(t / "nope"), "--out", str(t / "g")],
        "nope"),
    Row("prepare-grid-empty-src", lambda w, t: (t / "empty").mkdir() or
        ["prepare", "grid", "--src", str(t / "empty"), "--out", str(t / "g")], "empty"),
    Row("prepare-sites-missing-src", lambda w, t: ["prepare", "sites", "--src", str(t / "nope"), "--out",
                                                   str(t / "s")], "nope"),
    *[Row(f"prepare-sites-truncated-{how}", _truncated_sim(how, "prepare"), f"FLX_{SITE}_FLUXNET-CH4_DD_2015-2016")
      for how in ("mid-value", "no-final-newline", "mid-row")],
    Row("prepare-sites-date-cut", _truncated_sim("mid-date", "prepare"), "column TIMESTAMP has an unreadable date"),
    *[Row(f"prepare-sites-truncated-real-{how}", _truncated_real(how), "file cut short", real_towers=True)
      for how in ("mid-value", "no-final-newline", "mid-row")],
    Row("prepare-sites-wetland-types-not-utf8",  # the byte counted in the file, not in the csv reader's chunk
        _site_ints_csv(b"site_id,wetlandtype\n" + b"XX-Aaa,3\n" * 2500 + b"XX-Caf\xe9,3\n"),
        f"types.csv: not UTF-8 text (byte {20 + 9 * 2500 + 6} cannot be decoded)"),
    Row("prepare-sites-wetland-types-short-row", _site_ints_csv(b"wetlandtype,site_id\n3\n"),
        "types.csv: line 2: site_id is missing"),
    # configs and --set
    Row("train-config-not-utf8", _not_utf8_config, "cfg.yaml: not UTF-8 text"),
    Row("train-config-is-a-folder", lambda w, t: (t / "cfg.yaml").mkdir() or ["train", "--config", str(t / "cfg.yaml")],
        "cfg.yaml: a folder, where a config file is expected"),
    Row("train-set-not-yaml", lambda w, t: ["train", "--config", _train_cfg(w, t, {}), "--set", "data.store=@home/x"],
        "--set data.store=@home/x: not a YAML value"),
    # demo: its options before its folder
    Row("demo-bad-res", lambda w, t: ["demo", "--out", str(t / "demo"), "--res", "7"], "--res 7.0: must divide"),
    # inspect / evaluate
    Row("inspect-missing-store", lambda w, t: ["inspect", str(t / "nope.zarr")], "nope.zarr"),
    Row("inspect-grid-lacking-an-array", _grid_lacking("cell_ilat"), "grid.zarr: Grid store lacks 'cell_ilat'"),
    Row("evaluate-checkpoint-config-cut", _damaged_checkpoint_config('{"model": {'),
        "config.json: not a checkpoint's config"),
    Row("evaluate-checkpoint-without-split",  # the workspace's checkpoint records a model but no data section
        lambda w, t: ["evaluate", "--checkpoint", str(w.checkpoint), "--store", str(w.grid)],
        "records no data.split, so its test part is unknown; use --split all"),
    Row("evaluate-missing-checkpoint", lambda w, t: ["evaluate", "--checkpoint", str(t / "nockpt"), "--store",
                                                     str(w.grid)], "nockpt"),
    Row("evaluate-predictions-on-a-grid-store",
        lambda w, t: ["evaluate", "--checkpoint", str(w.checkpoint), "--store", str(w.grid), "--split", "all",
                      "--predictions", str(t / "p.csv")], "p.csv: only for a Site store"),
    # train: typos and impossible values in the model, a resumed run whose model changed
    Row("train-model-param-typo", lambda w, t: ["train", "--config", _train_cfg(w, t, {"params": {"hiddn_size": 8}})],
        "cfg.yaml: model.params.hiddn_size: unknown key"),
    Row("train-model-param-impossible",
        lambda w, t: ["train", "--config", _train_cfg(w, t, {"params": {"num_layers": -3}})],
        "cfg.yaml: model.params.num_layers: Input should be greater than or equal to 1"),
    Row("train-model-param-set-override",
        lambda w, t: ["train", "--config", _train_cfg(w, t, {}), "--set", "model.params.dropout=1.5"],
        "model.params.dropout"),
    Row("train-unknown-model", lambda w, t: ["train", "--config", _train_cfg(w, t, {"name": "lstmx"})], "lstmx"),
    Row("train-resume-changed-model",
        lambda w, t: ["train", "--config", _train_cfg(w, t, {"params": {"hidden_size": 8, "num_layers": 1}}, "old")],
        "model.params.hidden_size: run 'old' resumes from"),
    Row("train-resume-changed-architecture",
        lambda w, t: ["train", "--config", _train_cfg(w, t, {"name": "gru"}, "old")], "model.name: run 'old'"),
    Row("train-resume-ray-run-changed-store",
        lambda w, t: ["train", "--config", _train_cfg(w, t, {"params": {"hidden_size": 4, "num_layers": 1}},
                                                      "old-ray")], "data.store: run 'old-ray' resumes from"),
    Row("train-resume-config-cut", _damaged_run_config, "epoch_0001/config.json: not a checkpoint's config"),
    Row("train-split-without-training-years",  # the default split trains on 1979-1998; the store holds 2000-2001
        lambda w, t: ["train", "--config", _train_cfg(w, t, {})],
        "data.split: train_years 1979-1998 less test_years 1999-2018 leaves none of"),
    *[Row(f"{command}-best-holds-a-users-file", _best_with_notes(command),
          "best: holds 'notes.txt', which is not part of a checkpoint; use another run.name") for command in ("train", "transfer", "tune")],
    # transfer: strategy parameters are checked with the config, before the tree baseline
    Row("transfer-strategy-param-typo",
        lambda w, t: ["transfer", "--config", _transfer_cfg(w, t, strategy_params={"adversarial": {"lamda_max": 1}})],
        "strategy_params.adversarial.lamda_max: unknown key"),
    Row("transfer-strategy-param-impossible",
        lambda w, t: ["transfer", "--config", _transfer_cfg(w, t, strategy_params={"finetune": {"lr_scale": -1}})],
        "strategy_params.finetune.lr_scale"),
    Row("transfer-unknown-strategy-params",
        lambda w, t: ["transfer", "--config", _transfer_cfg(w, t, strategy_params={"finetun": {}})],
        "strategy_params.finetun: unknown strategy"),
    Row("transfer-to-object-storage",  # was run in a local folder named "s3:" under the working directory
        lambda w, t: ["transfer", "--config", _transfer_cfg(w, t), "--set", "run.output_dir=s3://bucket/runs"],
        "run.output_dir: s3://bucket/runs: a transfer experiment writes to a local folder"),
    Row("transfer-model-param-typo",
        lambda w, t: ["transfer", "--config", _transfer_cfg(w, t, models=[{"name": "tcn", "params": {"kernel": 3}}])],
        "models.0.params.kernel: unknown key"),
    Row("transfer-missing-store",  # refused before Ray starts and before the experiment's folder is made
        lambda w, t: ["transfer", "--config", _transfer_cfg(w, t), "--set", f"data.store={t / 'nope'}"],
        "nope: store not found"),
    Row("transfer-source-split-without-training-years",
        lambda w, t: ["transfer", "--config", _transfer_cfg(w, t), "--set", "source.split.train_years=[1990,1995]"],
        "source.split: train_years 1990-1995"),
    Row("transfer-without-its-section",
        lambda w, t: ["transfer", "--config", _train_cfg(w, t, {"name": "lstm"})], "cfg.yaml: transfer: missing section"),
    # tune
    Row("tune-without-its-section",
        lambda w, t: ["tune", "--config", _train_cfg(w, t, {"name": "lstm"})], "cfg.yaml: search: missing section"),
    Row("tune-planted-state", _planted_search_state,
        "experiment_state-9999-12-31_23-59-59.json: a new search's folder already holds a file a resume"),
    Row("tune-missing-store",  # every trial would fail after Ray started, leaving a search folder behind
        lambda w, t: ["tune", "--config", _tune_cfg(w, t, {"num_samples": 1}), "--set", f"data.store={t / 'nope'}",
                      "--set", "resources.num_workers=1"], "nope: store not found"),
    Row("tune-model-without-space", lambda w, t: ["tune", "--config", _tune_cfg(w, t, {"models": ["residual"]})],
        "search: model 'residual' has no search space"),
    Row("tune-unknown-strategy", lambda w, t: ["tune", "--config", _tune_cfg(w, t, {"strategies": ["finetun"]})],
        "search.strategies"),
    # infer: resources and flags before the map store exists
    Row("infer-too-many-actors", lambda w, t: ["infer", "--checkpoint", str(w.checkpoint), "--grid", str(w.grid),
                                               "--out", str(t / "maps"), "--actors", "100"], "--actors 100: needs"),
    Row("infer-gpu-without-gpu", lambda w, t: ["infer", "--checkpoint", str(w.checkpoint), "--grid", str(w.grid),
                                               "--out", str(t / "maps"), "--use-gpu"], "GPU"),
    Row("infer-zero-actors", lambda w, t: ["infer", "--checkpoint", str(w.checkpoint), "--grid", str(w.grid),
                                           "--out", str(t / "maps"), "--actors", "0"], "--actors 0"),
    Row("infer-bad-years", lambda w, t: ["infer", "--checkpoint", str(w.checkpoint), "--grid", str(w.grid),
                                         "--out", str(t / "maps"), "--years", "1990-1991"], "--years 1990-1991"),
    # report
    Row("report-missing-input", lambda w, t: ["report", str(t / "nope"), "--out", str(t / "page.html")], "nope"),
]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_and_leaves_nothing(row: Row, workspace: Workspace, tmp_path, capsys, monkeypatch,
                                                  request):
    import ray

    if row.real_towers:
        workspace = replace(workspace, fluxnet=request.getfixturevalue("fluxnet_dir"))

    if row.id == "infer-gpu-without-gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    ray_was_up = ray.is_initialized()

    def no_ray(*_a, **_k):
        raise AssertionError("ray.init called while validating bad input")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)  # a default relative output would land here and be seen
    argv = row.make(workspace, tmp_path)
    before_ws, before_tmp = _files(workspace.root), _files(tmp_path)
    capsys.readouterr()

    assert main(argv) == 2

    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("xmw: error: "), lines
    assert row.needle in lines[0], lines[0]
    assert _files(tmp_path) == before_tmp
    assert _files(workspace.root) == before_ws
    assert ray.is_initialized() == ray_was_up
