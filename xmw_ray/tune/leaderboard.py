"""The evidence a search leaves: a leaderboard (every trial's config, validation and test metrics, one
``xmw_ray/train/results.py`` row each; CSV and Markdown), plots of the search, and the best trial's checkpoint copied to ``<search>/best``.

Trials are ranked by their best validation NSE (pooled over the validation part, in flux units), never by a test
metric; the test split is only reported. Not by ``val_loss``: it is the MSE divided by the model's own
``target_std``², which is the simulations' variance for a model pretrained on them (finetune, adversarial,
reweight) and the observations' for scratch and residual, so two strategies' losses are on different scales.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from xmw_ray.config import ExperimentConfig
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import file_aside, is_url, write_text_atomic
from xmw_ray.train.results import ResultRow, leaderboard_columns, markdown_table
from xmw_ray.train.results import to_csv as rows_to_csv
from xmw_ray.tune.space import model_params, strategy_params

#: What trials are ranked on, and the direction that is better (ASHA and Optuna use the same, ``search.py``).
RANK_METRIC, RANK_MODE = "val_nse", "max"
CHECKPOINT_KEY = "checkpoint_path"  # what TuneReportCallback adds to a report that carried a checkpoint
#: The test metrics the leaderboard shows (every one of ``METRIC_KEYS`` is measured).
TEST_KEYS = ("nse", "rmse", "kge", "pearson_r2", "bias", "n")
COLUMNS = leaderboard_columns(TEST_KEYS)
#: Columns of the CSV file that the shown table (Markdown, the report) leaves out.
HIDDEN = ("checkpoint", "trial_id", "test_error")
FILES = {"csv": "leaderboard.csv", "markdown": "leaderboard.md", "plot_trials": "search_trials.png",
         "plot_groups": "search_by_model_strategy.png", "summary": "best.json"}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def rank_score(row: ResultRow) -> float:
    """The row's validation NSE, or -inf when it has none (unscored trials rank last)."""
    v = row.val_nse
    return float(v) if _finite(v) else -math.inf


def rank_rows(rows: list[ResultRow]) -> list[ResultRow]:
    """Rows best first by validation NSE (ties keep their order), numbered ``rank`` from 1."""
    rows.sort(key=rank_score, reverse=True)
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


def summary_line(name: str, rows: list[ResultRow], planned: int, time_budget_s: float | None,
                 wall_s: float) -> str:
    """The one line ``xmw tune`` ends with. A trial that reported nothing without an error was ended by the time
    budget (or an interruption) before its first epoch: counting it as failed would send a user hunting for a bug."""
    count = {s: sum(r.status == s for r in rows) for s in ("completed", "stopped", "no report", "error")}
    cut = "the time budget" if time_budget_s else "an interruption"
    parts = [f"{count['completed']} completed", f"{count['stopped']} stopped early"]
    if count["no report"]:
        parts.append(f"{count['no report']} ended by {cut} before a first epoch")
    parts.append(f"{count['error']} failed")
    started = f"{len(rows)} of {planned} trials" if len(rows) < planned else f"{len(rows)} trials"
    budget = f" (time budget {time_budget_s:.0f} s)" if time_budget_s and len(rows) < planned else ""
    return f"search {name!r}: {started}{budget} ({', '.join(parts)}) in {wall_s:.0f} s"


def trial_row(result: Any, cfg: ExperimentConfig) -> tuple[ResultRow, float]:
    """One leaderboard row from a Tune ``Result`` (its config and the epoch with the highest validation NSE), and
    when the trial started (inf when it reported nothing), which numbers the trials."""
    params = dict(result.config or {})
    df = result.metrics_dataframe
    trial_id = (result.metrics or {}).get("trial_id") or Path(str(result.path)).name
    try:
        hp = {"model": model_params(params, cfg.search), "strategy": strategy_params(params)}
    except KeyError:
        hp = {}
    row = ResultRow(trial_id=trial_id, model=params.get("model") or "", strategy=params.get("strategy") or "",
                    lr=params.get("lr"), weight_decay=params.get("weight_decay"), params=json.dumps(hp, sort_keys=True))
    if df is None or df.empty or "val_loss" not in df:
        row.status, row.epochs = ("error" if result.error else "no report"), 0
        return row, math.inf
    started = float(df["timestamp"].min()) if "timestamp" in df else math.inf
    scored = df[df[RANK_METRIC].notna()] if RANK_METRIC in df else df.iloc[:0]
    best = scored.loc[scored[RANK_METRIC].idxmax()] if len(scored) else df.iloc[-1]
    last = df.iloc[-1]
    # Tune overwrites the loop's own ``done`` flag, so completion is read from the epochs run: fewer than
    # configured means ASHA, the time budget or early stopping on patience ended the trial.
    row.epochs = int(last["epoch"]) + 1
    row.status = "error" if result.error else ("completed" if row.epochs >= cfg.optim.epochs else "stopped")
    row.best_epoch = int(best["epoch"])
    row.val_loss, row.val_nse = float(best["val_loss"]), float(best.get("val_nse", math.nan))
    ckpt = best.get(CHECKPOINT_KEY)
    if isinstance(ckpt, str) and ckpt and (is_url(ckpt) or Path(ckpt).is_dir()):
        row.checkpoint = ckpt
    return row, started


def add_test_metrics(row: ResultRow, store: str) -> None:
    """Score the row's checkpoint on the test split of ``store`` (the checkpoint's own split rule); a checkpoint
    that cannot be scored gets its one-line reason in ``test_error`` instead of sinking the whole leaderboard."""
    from xmw_ray.train.evaluate import evaluate_checkpoint

    if not row.checkpoint:
        return
    try:
        report = evaluate_checkpoint(row.checkpoint, store, split="test")
    except XmwInputError as exc:
        row.test_error = str(exc)
        return
    row.test = dict(report["pooled"])
    row.test_median_nse = report["median"]["nse"]


def collect_rows(grid: Any, cfg: ExperimentConfig) -> list[ResultRow]:
    """Every trial of the ResultGrid as a row, numbered in start order, ranked by validation NSE."""
    started = [trial_row(result, cfg) for result in grid]
    for i, (row, _) in enumerate(sorted(started, key=lambda pair: pair[1]), start=1):
        row.trial = i
    rows = [row for row, _ in started]
    if cfg.search.evaluate_test:
        for row in rows:
            add_test_metrics(row, cfg.data.store)
    return rank_rows(rows)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def to_csv(rows: list[ResultRow]) -> str:
    return rows_to_csv(rows, COLUMNS)


def shown_table(rows: list[ResultRow]) -> tuple[list[str], list[list[str]]]:
    """The shown leaderboard, whatever draws it (Markdown here, HTML in the report): column names and cells."""
    cols = [c for c in COLUMNS if c not in HIDDEN]
    return cols, [[_fmt(row.value(c)) for c in cols] for row in rows]


def best_of(rows: list[ResultRow]) -> ResultRow | None:
    """The top row when it has a validation NSE (ranked rows: the best first)."""
    return rows[0] if rows and _finite(rows[0].val_nse) else None


def best_line(best: ResultRow) -> str:
    """The sentence under the table; the checkpoint is left for the caller to set as code."""
    return (f"Best: trial {best.trial} ({best.model}, strategy {best.strategy}), val NSE {_fmt(best.val_nse)}, "
            f"test NSE {_fmt(best.test.get('nse'))}; checkpoint ")


def title(name: str, rows: list[ResultRow]) -> str:
    return f"Search {name}: {len(rows)} trials, ranked by validation NSE"


def to_markdown(rows: list[ResultRow], name: str) -> str:
    cols, body = shown_table(rows)
    lines = [f"# {title(name, rows)}", "", *markdown_table(cols, body)]
    best = best_of(rows)
    if best is not None:
        lines += ["", f"{best_line(best)}`{best.checkpoint}`"]
    return "\n".join(lines) + "\n"


def _save_fig(fig: Any, path: Path) -> None:
    with file_aside(path) as tmp:  # the aside has no suffix: name the format
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or None)


def plot_trials(rows: list[ResultRow], path: Path) -> None:
    """Best validation NSE of each trial in start order, coloured by model, with the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = sorted((r for r in rows if _finite(r.val_nse)), key=lambda r: r.trial)
    fig, ax = plt.subplots(figsize=(7, 4))
    for model in sorted({r.model for r in scored}):
        pts = [r for r in scored if r.model == model]
        ax.scatter([r.trial for r in pts], [r.val_nse for r in pts], label=model, s=30)
    run, best = [], -math.inf
    for r in scored:
        best = max(best, r.val_nse)
        run.append(best)
    ax.step([r.trial for r in scored], run, where="post", color="k", lw=1, label="best so far")
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel("best validation NSE (pooled, flux units)")
    ax.legend(fontsize=8)
    _save_fig(fig, path)
    plt.close(fig)


def plot_groups(rows: list[ResultRow], path: Path) -> None:
    """Best validation NSE of every trial, grouped by model x strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if _finite(r.val_nse)]
    groups = sorted({(r.model, r.strategy) for r in scored})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) + 2), 4))
    for i, key in enumerate(groups):
        vals = [r.val_nse for r in scored if (r.model, r.strategy) == key]
        ax.scatter([i] * len(vals), vals, s=30)
        ax.hlines(max(vals), i - 0.3, i + 0.3, color="k", lw=1)
    ax.set_xticks(range(len(groups)), [f"{m}\n{s}" for m, s in groups], fontsize=8)
    ax.set_ylabel("best validation NSE")
    ax.set_title("trials per model and strategy (bar: best)")
    _save_fig(fig, path)
    plt.close(fig)


def _copy_best(checkpoint: str, folder: Path) -> str:
    """The best trial's checkpoint copied to ``folder/best`` (a URL one is named where it is)."""
    from xmw_ray.models.checkpoint import BEST_DIR, publish_checkpoint  # torch: not for readers (xmw report)

    if is_url(checkpoint):
        return checkpoint
    return str(publish_checkpoint(checkpoint, folder / BEST_DIR))


def write_results(rows: list[ResultRow], cfg: ExperimentConfig, path: str) -> tuple[dict[str, str], str | None]:
    """Write the leaderboard, plots and summary into the search folder (a local path or an fsspec URL);
    returns the files and the best checkpoint's path."""
    if not is_url(path):
        return _write_files(rows, cfg, Path(path), copy_best=True)
    import fsspec

    # written locally, then uploaded; the folder goes also when a plot or an upload fails
    with tempfile.TemporaryDirectory(prefix="xmw_tune_results_") as tmp:
        files, best_path = _write_files(rows, cfg, Path(tmp), copy_best=False)
        fs, root = fsspec.core.url_to_fs(path)
        for key, name in FILES.items():
            fs.put_file(files[key], f"{root.rstrip('/')}/{name}")
            files[key] = f"{path.rstrip('/')}/{name}"
    return files, best_path


def _write_files(rows: list[ResultRow], cfg: ExperimentConfig, folder: Path,
                 copy_best: bool) -> tuple[dict[str, str], str | None]:
    folder.mkdir(parents=True, exist_ok=True)
    best = next((r for r in rows if _finite(r.val_nse) and r.checkpoint), None)
    best_path = (_copy_best(best.checkpoint, folder) if copy_best else best.checkpoint) if best else None
    write_text_atomic(folder / FILES["csv"], to_csv(rows))
    write_text_atomic(folder / FILES["markdown"], to_markdown(rows, cfg.run.name))
    plot_trials(rows, folder / FILES["plot_trials"])
    plot_groups(rows, folder / FILES["plot_groups"])
    summary = {"search": cfg.run.name, "best_checkpoint": best_path, "best": best and best.record(COLUMNS), "n_trials": len(rows)}
    write_text_atomic(folder / FILES["summary"], json.dumps(summary, indent=1, default=str))
    return {k: str(folder / v) for k, v in FILES.items()}, best_path
