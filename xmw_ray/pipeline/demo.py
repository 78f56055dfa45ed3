"""``xmw demo``: simulate a coarse world with towers → prepare the stores → search the model zoo × the transfer
strategies from the simulations to the towers (``configs/tune/transfer-search.yaml``) → the transfer experiment →
map the transfer experiment's ``best`` (chosen on validation) and its model trained on the simulations alone (the
fine-tuning's pretrained stage) over the grid → score both maps, and the simulator's own output, against the
world's true flux (``xmw score-maps``) → report.

The maps use the transfer experiment's model rather than the search's: the search's tiny trials (4 epochs, a few
minutes in all) rank strategies, while the experiment trains its runs fully; in one demo run the search's best
(a 4-unit TCN) mapped a negative global budget (-180 Tg in 1979) where the experiment's fine-tuned LSTM mapped
about 215 Tg a year against the world's true 157-193.

Each stage is an ``xmw`` sub-command run through :func:`xmw_ray.cli.main` (one code path with the CLI and
``jobs/``), and is skipped when its output already exists, so re-running after an interruption resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xmw_ray import console
from xmw_ray.data.layout import TRUTH_FILE, WETLAND_EXTENT_FILE
from xmw_ray.data.presets import CONFIGS_DIR


@dataclass
class Stage:
    name: str
    argv: list[str]
    output: Path  # the stage is done when this exists
    #: For a stage whose arguments name something an earlier stage makes (a hashed folder): the arguments,
    #: computed when the stage starts.
    late_argv: Callable[[], list[str]] | None = None

    def resolved_argv(self) -> list[str]:
        return self.late_argv() if self.late_argv is not None else self.argv

    def describe(self) -> str:
        return "xmw " + " ".join(self.resolved_argv())


def simulator_only_checkpoint(transfer_dir: Path) -> Path:
    """The transfer experiment's model trained on the simulations alone (the cached pretraining its fine-tuning
    started from, ``runs/pretrain/<hash>/best``): the "no observations" model to compare with the transfer model."""
    from xmw_ray.errors import XmwInputError

    found = sorted(Path(transfer_dir).glob("runs/pretrain/*/best/model.pt"))
    if not found:
        raise XmwInputError(f"{transfer_dir}: the transfer experiment trained no model on the simulations alone "
                            "(runs/pretrain/*/best: run a finetune strategy)")
    return found[0].parent


def source_fraction(res: float) -> float:
    """Share of the grid's cells the demo's models pretrain on: all of them at 5 degrees or coarser, fewer at finer
    grids, so that pretraining costs what it costs at 5 degrees while the maps cover every cell."""
    return round(min(1.0, (res / 5.0) ** 2), 4)


def demo_stages(out: Path, res: float, years: tuple[int, int], sites: int, seed: int) -> list[Stage]:
    y0, y1 = years
    world, grid, site_store, runs = out / "world", out / "grid.zarr", out / "sites", out / "runs"
    search_best = runs / "tune" / "transfer-search" / "best"
    # the search pretrains every trial on its own: five simulated years keep it to a few minutes on a laptop
    source_years = ["--set", f"source.split.train_years=[{max(y0, y1 - 9)},{y1 - 5}]",
                    "--set", f"source.split.test_years=[{y1 - 4},{y1}]",
                    "--set", f"source.split.fraction={source_fraction(res)}"]
    transfer_dir = runs / "transfer"
    maps, sim_maps = out / "maps", out / "maps-simulator-only"
    return [
        Stage("simulate", ["simulate", "--out", str(world), "--res", str(res), "--years", f"{y0}-{y1}",
                           "--sites", str(sites), "--seed", str(seed)], world / TRUTH_FILE),
        Stage("prepare grid", ["prepare", "grid", "--src", str(world), "--out", str(grid),
                               "--wetland-area", str(world / WETLAND_EXTENT_FILE)], grid),
        Stage("prepare sites", ["prepare", "sites", "--src", str(world), "--grid", str(grid), "--out", str(site_store)],
              site_store),
        Stage("tune (transfer search: models x strategies, simulations -> towers)", [
            "tune", "--config", str(CONFIGS_DIR / "tune" / "transfer-search.yaml"),
            "--set", f"data.store={site_store}", "--set", f"source.store={grid}",
            *source_years, "--set", f"run.output_dir={runs / 'tune'}"],
              search_best),
        Stage("transfer (built-in preset, reduced)", [
            "transfer", "--config", str(CONFIGS_DIR / "experiments" / "builtin-transfer.yaml"),
            "--set", f"run.output_dir={runs}", "--set", f"run.name={transfer_dir.name}",
            "--set", f"source.store={grid}", "--set", f"data.store={site_store}",
            "--set", f"source.split.train_years=[{max(y0, y1 - 19)},{y1 - 5}]",
            "--set", f"source.split.test_years=[{y1 - 4},{y1}]",
            "--set", f"source.split.fraction={source_fraction(res)}",
            "--set", "transfer.strategies=[scratch,finetune]", "--set", "transfer.fractions=[0.25]",
            "--set", "transfer.seeds=[0]"],
              runs / "transfer" / "summary.md"),
        Stage("infer", ["infer", "--checkpoint", str(transfer_dir / "best"), "--grid", str(grid),
                        "--years", f"{y0}-{y1}", "--out", str(maps), "--truth", str(world)],
              maps / "budget.csv"),
        Stage("infer-simulator-only (the fine-tuning's pretrained model: no observations)", [],
              sim_maps / "budget.csv",
              late_argv=lambda: ["infer", "--checkpoint", str(simulator_only_checkpoint(transfer_dir)),
                                 "--grid", str(grid), "--years", f"{y0}-{y1}", "--out", str(sim_maps)]),
        Stage("score (both maps and the simulator against the true flux)", [
            "score-maps", "--truth", str(world), str(sim_maps), str(maps),
            "--names", "simulator-only model", "transfer model", "--out", str(out / "skill.csv")],
              out / "skill.csv"),
        Stage("report", ["report", str(world), str(runs), str(maps), "--out", str(out / "report.html")],
              out / "report.html"),
    ]


def run_demo(out: Path, res: float = 3.0, years: tuple[int, int] = (1979, 2018), sites: int = 30, seed: int = 0,
             log: Callable[[str], None] = console.out, verbose: bool = False) -> list[tuple[str, Path]]:
    """Run every stage not yet done (``verbose``: with ``-v``, Ray's output on the terminal); returns (stage,
    output path) pairs."""
    from xmw_ray.cli import RAY_COMMANDS, main

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for stage in demo_stages(out, res, years, sites, seed):
        if stage.output.exists():
            log(f"[{stage.name}] already done: {stage.output}")
        else:
            log(f"[{stage.name}] {stage.describe()}")
            t0 = time.perf_counter()
            argv = stage.resolved_argv()
            rc = main(argv + (["-v"] if verbose and argv[0] in RAY_COMMANDS else []))
            if rc:
                raise SystemExit(rc)
            log(f"[{stage.name}] finished in {time.perf_counter() - t0:.0f} s")
        done.append((stage.name, stage.output))
    return done
