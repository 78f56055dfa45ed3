"""The evidence a search leaves: a leaderboard (every trial's config, validation and test metrics; CSV and
Markdown), plots of the search, and the best trial's checkpoint copied to ``<search>/best``.

Trials are ranked by their best validation NSE (pooled over the validation part, in flux units), never by a test
metric; the test split is only reported. Not by ``val_loss``: it is the MSE divided by the model's own
``target_std``², which is the simulations' variance for a model pretrained on them (finetune, adversarial,
reweight) and the observations' for scratch and residual, so two strategies' losses are on different scales.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from xmw_ray.config import ExperimentConfig
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import file_aside, is_url, publish_dir, write_text_atomic
from xmw_ray.tune.space import model_params, strategy_params

#: What trials are ranked on, and the direction that is better (ASHA and Optuna use the same, ``search.py``).
RANK_METRIC, RANK_MODE = "val_nse", "max"
CHECKPOINT_KEY = "checkpoint_path"  # what TuneReportCallback adds to a report that carried a checkpoint
TEST_KEYS = ("nse", "rmse", "kge", "pearson_r2", "bias", "n")
COLUMNS = ["rank", "trial", "trial_id", "model", "strategy", "status", "epochs", "best_epoch", "val_nse", "val_loss",
           *[f"test_{k}" for k in TEST_KEYS], "test_median_nse", "lr", "weight_decay", "params", "checkpoint", "test_error"]
FILES = {"csv": "leaderboard.csv", "markdown": "leaderboard.md", "plot_trials": "search_trials.png",
         "plot_groups": "search_by_model_strategy.png", "summary": "best.json"}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def rank_score(row: dict[str, Any]) -> float:
    """The row's validation NSE, or -inf when it has none (unscored trials rank last)."""
    v = row.get(RANK_METRIC)
    return float(v) if _finite(v) else -math.inf


def rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows best first by validation NSE (ties keep their order), numbered ``rank`` from 1."""
    rows.sort(key=rank_score, reverse=True)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def summary_line(name: str, rows: list[dict[str, Any]], planned: int, time_budget_s: float | None,
                 wall_s: float) -> str:
    """The one line ``xmw tune`` ends with. A trial that reported nothing without an error was ended by the time
    budget (or an interruption) before its first epoch: counting it as failed would send a user hunting for a bug."""
    count = {s: sum(r.get("status") == s for r in rows) for s in ("completed", "stopped", "no report", "error")}
    cut = "the time budget" if time_budget_s else "an interruption"
    parts = [f"{count['completed']} completed", f"{count['stopped']} stopped early"]
    if count["no report"]:
        parts.append(f"{count['no report']} ended by {cut} before a first epoch")
    parts.append(f"{count['error']} failed")
    started = f"{len(rows)} of {planned} trials" if len(rows) < planned else f"{len(rows)} trials"
    budget = f" (time budget {time_budget_s:.0f} s)" if time_budget_s and len(rows) < planned else ""
    return f"search {name!r}: {started}{budget} ({', '.join(parts)}) in {wall_s:.0f} s"


def trial_row(result: Any, cfg: ExperimentConfig) -> dict[str, Any]:
    """One leaderboard row from a Tune ``Result``: its config and the epoch with the highest validation NSE."""
    params = dict(result.config or {})
    df = result.metrics_dataframe
    trial_id = (result.metrics or {}).get("trial_id") or Path(str(result.path)).name
    row: dict[str, Any] = {"trial_id": trial_id, "model": params.get("model"), "strategy": params.get("strategy"),
                           "lr": params.get("lr"), "weight_decay": params.get("weight_decay")}
    try:
        hp = {"model": model_params(params, cfg.search), "strategy": strategy_params(params)}
    except KeyError:
        hp = {}
    row["params"] = json.dumps(hp, sort_keys=True)
    if df is None or df.empty or "val_loss" not in df:
        row.update(status="error" if result.error else "no report", epochs=0, started=math.inf)
        return row
    row["started"] = float(df["timestamp"].min()) if "timestamp" in df else math.inf
    scored = df[df[RANK_METRIC].notna()] if RANK_METRIC in df else df.iloc[:0]
    best = scored.loc[scored[RANK_METRIC].idxmax()] if len(scored) else df.iloc[-1]
    last = df.iloc[-1]
    # Tune overwrites the loop's own ``done`` flag, so completion is read from the epochs run: fewer than
    # configured means ASHA, the time budget or early stopping on patience ended the trial.
    epochs = int(last["epoch"]) + 1
    row.update(status="error" if result.error else ("completed" if epochs >= cfg.optim.epochs else "stopped"),
               epochs=epochs, best_epoch=int(best["epoch"]),
               val_loss=float(best["val_loss"]), val_nse=float(best.get("val_nse", math.nan)))
    ckpt = best.get(CHECKPOINT_KEY)
    if isinstance(ckpt, str) and ckpt and (is_url(ckpt) or Path(ckpt).is_dir()):
        row["checkpoint"] = ckpt
    return row


def add_test_metrics(row: dict[str, Any], store: str) -> None:
    """Score the row's checkpoint on the test split of ``store`` (the checkpoint's own split rule); a checkpoint
    that cannot be scored gets its one-line reason in ``test_error`` instead of sinking the whole leaderboard."""
    from xmw_ray.train.evaluate import evaluate_checkpoint

    if not row.get("checkpoint"):
        return
    try:
        report = evaluate_checkpoint(row["checkpoint"], store, split="test")
    except XmwInputError as exc:
        row["test_error"] = str(exc)
        return
    for key in TEST_KEYS:
        row[f"test_{key}"] = report["pooled"][key]
    row["test_median_nse"] = report["median"]["nse"]


def collect_rows(grid: Any, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Every trial of the ResultGrid as a row, numbered in start order, ranked by validation NSE."""
    rows = [trial_row(result, cfg) for result in grid]
    for i, row in enumerate(sorted(rows, key=lambda r: r["started"]), start=1):
        row["trial"] = i
    if cfg.search.evaluate_test:
        for row in rows:
            add_test_metrics(row, cfg.data.store)
    for row in rows:
        row.pop("started", None)
    return rank_rows(rows)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]], title: str) -> str:
    cols = [c for c in COLUMNS if c not in ("checkpoint", "trial_id", "test_error")]
    lines = [f"# Search {title}: {len(rows)} trials, ranked by validation NSE", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [_fmt(row.get(c)).replace("|", "\\|") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    best = rows[0] if rows and _finite(rows[0].get(RANK_METRIC)) else None
    if best is not None:
        lines += ["", f"Best: trial {best['trial']} ({best['model']}, strategy {best['strategy']}), "
                      f"val NSE {_fmt(best[RANK_METRIC])}, test NSE {_fmt(best.get('test_nse'))}; "
                      f"checkpoint `{best.get('checkpoint', '')}`"]
    return "\n".join(lines) + "\n"


def _save_fig(fig: Any, path: Path) -> None:
    with file_aside(path) as tmp:  # the aside has no suffix: name the format
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or None)


def plot_trials(rows: list[dict[str, Any]], path: Path) -> None:
    """Best validation NSE of each trial in start order, coloured by model, with the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = sorted((r for r in rows if _finite(r.get(RANK_METRIC))), key=lambda r: r["trial"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for model in sorted({r["model"] for r in scored}):
        pts = [r for r in scored if r["model"] == model]
        ax.scatter([r["trial"] for r in pts], [r[RANK_METRIC] for r in pts], label=model, s=30)
    run, best = [], -math.inf
    for r in scored:
        best = max(best, r[RANK_METRIC])
        run.append(best)
    ax.step([r["trial"] for r in scored], run, where="post", color="k", lw=1, label="best so far")
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel("best validation NSE (pooled, flux units)")
    ax.legend(fontsize=8)
    _save_fig(fig, path)
    plt.close(fig)


def plot_groups(rows: list[dict[str, Any]], path: Path) -> None:
    """Best validation NSE of every trial, grouped by model x strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if _finite(r.get(RANK_METRIC))]
    groups = sorted({(r["model"], r["strategy"]) for r in scored})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) + 2), 4))
    for i, key in enumerate(groups):
        vals = [r[RANK_METRIC] for r in scored if (r["model"], r["strategy"]) == key]
        ax.scatter([i] * len(vals), vals, s=30)
        ax.hlines(max(vals), i - 0.3, i + 0.3, color="k", lw=1)
    ax.set_xticks(range(len(groups)), [f"{m}\n{s}" for m, s in groups], fontsize=8)
    ax.set_ylabel("best validation NSE")
    ax.set_title("trials per model and strategy (bar: best)")
    _save_fig(fig, path)
    plt.close(fig)


def _copy_best(checkpoint: str, dest: Path) -> str:
    if is_url(checkpoint):
        return checkpoint
    return str(publish_dir(checkpoint, dest))


def write_results(rows: list[dict[str, Any]], cfg: ExperimentConfig, path: str) -> tuple[dict[str, str], str | None]:
    """Write the leaderboard, plots and summary into the search folder (a local path or an fsspec URL);
    returns the files and the best checkpoint's path."""
    remote = is_url(path)
    local = Path(tempfile.mkdtemp(prefix="xmw_tune_results_")) if remote else Path(path)
    local.mkdir(parents=True, exist_ok=True)
    best = next((r for r in rows if _finite(r.get(RANK_METRIC)) and r.get("checkpoint")), None)
    best_path = _copy_best(best["checkpoint"], local / "best") if best and not remote else (
        best["checkpoint"] if best else None)
    write_text_atomic(local / FILES["csv"], to_csv(rows))
    write_text_atomic(local / FILES["markdown"], to_markdown(rows, cfg.run.name))
    plot_trials(rows, local / FILES["plot_trials"])
    plot_groups(rows, local / FILES["plot_groups"])
    summary = {"search": cfg.run.name, "best_checkpoint": best_path, "best": best, "n_trials": len(rows)}
    write_text_atomic(local / FILES["summary"], json.dumps(summary, indent=1, default=str))
    files = {k: str(local / v) for k, v in FILES.items()}
    if remote:
        import fsspec

        fs, root = fsspec.core.url_to_fs(path)
        for key, name in FILES.items():
            fs.put_file(str(local / name), f"{root.rstrip('/')}/{name}")
            files[key] = f"{path.rstrip('/')}/{name}"
        shutil.rmtree(local, ignore_errors=True)
    return files, best_path
