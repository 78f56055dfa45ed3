"""``xmw demo``: simulate a coarse world with towers → prepare the stores → train on simulations and on
observations → evaluate, then every later stage that exists (tune, transfer, infer, report).

Each stage is an ``xmw`` sub-command run through :func:`xmw_ray.cli.main` (one code path with the CLI and
``jobs/``), and is skipped when its output already exists, so re-running after an interruption resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class Stage:
    name: str
    argv: list[str]
    output: Path  # the stage is done when this exists

    def describe(self) -> str:
        return "xmw " + " ".join(self.argv)


def demo_stages(out: Path, res: float, years: tuple[int, int], sites: int, seed: int) -> list[Stage]:
    y0, y1 = years
    split_year = y0 + (y1 - y0 + 1) * 2 // 3 - 1  # first two thirds train, last third test
    world, grid, site_store, runs = out / "world", out / "grid.zarr", out / "sites", out / "runs"
    exp = REPO_CONFIGS / "experiments"
    common = ["--set", f"run.output_dir={runs}"]
    return [
        Stage("simulate", ["simulate", "--out", str(world), "--res", str(res), "--years", f"{y0}-{y1}",
                           "--sites", str(sites), "--seed", str(seed)], world / "truth.json"),
        Stage("prepare grid", ["prepare", "grid", "--src", str(world), "--out", str(grid)], grid),
        Stage("prepare sites", ["prepare", "sites", "--src", str(world), "--grid", str(grid), "--out", str(site_store)],
              site_store),
        Stage("train sim-temporal", ["train", "--config", str(exp / "sim-temporal.yaml"), *common,
                                     "--set", f"data.store={grid}",
                                     "--set", f"data.split.train_years=[{y0},{split_year}]",
                                     "--set", f"data.split.test_years=[{split_year + 1},{y1}]",
                                     "--set", "optim.epochs=4"],
              runs / "sim-temporal" / "best"),
        Stage("train obs-spatial", ["train", "--config", str(exp / "obs-spatial.yaml"), *common,
                                    "--set", f"data.store={site_store}", "--set", "optim.epochs=15"],
              runs / "obs-spatial" / "best"),
    ]


def run_demo(out: Path, res: float = 10.0, years: tuple[int, int] = (1979, 2018), sites: int = 30, seed: int = 0,
             log: Callable[[str], None] = print) -> list[tuple[str, Path]]:
    """Run every stage not yet done; returns (stage, output path) pairs."""
    from xmw_ray.cli import main

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for stage in demo_stages(out, res, years, sites, seed):
        if stage.output.exists():
            log(f"[{stage.name}] already done: {stage.output}")
        else:
            log(f"[{stage.name}] {stage.describe()}")
            t0 = time.perf_counter()
            rc = main(stage.argv)
            if rc:
                raise SystemExit(rc)
            log(f"[{stage.name}] finished in {time.perf_counter() - t0:.0f} s")
        done.append((stage.name, stage.output))
    return done
