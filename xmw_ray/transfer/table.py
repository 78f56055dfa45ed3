"""Results of a transfer experiment: per-run rows → mean ± std over seeds (CSV, Markdown) and a skill plot."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from xmw_ray.data.contract import FLUX_UNIT
from xmw_ray.storage import file_aside, write_text_atomic

SUMMARY_METRICS = ("nse", "rmse", "kge")
#: Column heads of the Markdown table: NSE and KGE are unitless, RMSE is in flux units.
METRIC_HEADS = {"nse": "NSE", "rmse": f"RMSE ({FLUX_UNIT})", "kge": "KGE"}
GROUP_KEYS = ("model", "setting", "fraction", "strategy")


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group rows by (model, setting, fraction, strategy): mean, std and count over seeds of each metric."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in GROUP_KEYS)].append(r)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], float(k[2]), k[3])):
        rs = groups[key]
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key, strict=True))
        row["seeds"] = len(rs)
        for m in SUMMARY_METRICS:
            v = np.array([float(r[m]) for r in rs], dtype=np.float64)
            row[f"{m}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            row[f"{m}_std"] = float(np.nanstd(v)) if np.isfinite(v).any() else float("nan")
        out.append(row)
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    fields = list(rows[0])
    with file_aside(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _mean_std(row: dict[str, Any], metric: str) -> str:
    """``mean ± std`` over seeds; the value alone for one seed, where a spread of 0 would say nothing."""
    mean = f"{row[f'{metric}_mean']:.3f}"
    return mean if int(row["seeds"]) < 2 else f"{mean} ± {row[f'{metric}_std']:.3f}"


def markdown(summary: list[dict[str, Any]]) -> str:
    """One Markdown table: a row per (model, setting, fraction, strategy), metrics as mean ± std over seeds (the
    value alone where there is one seed, n=1), test scores on observed days."""
    head = "| model | setting | fraction | strategy | seeds | " + " | ".join(METRIC_HEADS[m] for m in SUMMARY_METRICS) + " |"
    lines = [head, "|" + "---|" * (5 + len(SUMMARY_METRICS))]
    for r in summary:
        cells = [_mean_std(r, m) for m in SUMMARY_METRICS]
        lines.append(f"| {r['model']} | {r['setting']} | {r['fraction']} | {r['strategy']} | {r['seeds']} | "
                     + " | ".join(cells) + " |")
    note = ("\nTest scores on the observation test split; mean ± std over seeds." if any(int(r["seeds"]) > 1 for r in summary)
            else "\nTest scores on the observation test split; one seed per row (n=1), so no spread is shown.")
    return "\n".join(lines) + "\n" + note + "\n"


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """NSE (mean ± std over seeds) against the observation data fraction, a line per strategy, a panel per
    (model, setting); with a single fraction there is no curve to draw, so one panel of bars instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["setting"]) for r in summary})
    if not panels:
        return
    if len({float(r["fraction"]) for r in summary}) == 1:
        fig = _bars_of_one_fraction(summary, panels)
    else:
        fig = _curves(summary, panels, plt)
    with file_aside(path) as tmp:  # the aside has no suffix: name the format
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or None)
    plt.close(fig)


def _bars_of_one_fraction(summary: list[dict[str, Any]], panels: list[tuple[str, str]]):
    """Test NSE as bars: a group per setting, a bar per model and strategy (error bars with ≥ 2 seeds)."""
    import matplotlib.pyplot as plt

    settings = sorted({s for _, s in panels})
    runs = sorted({(r["model"], r["strategy"]) for r in summary})
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(settings) * len(runs) + 2.5), 4))
    x = np.arange(len(settings))
    for i, (model, strategy) in enumerate(runs):
        by_setting = {r["setting"]: r for r in summary if (r["model"], r["strategy"]) == (model, strategy)}
        rows = [by_setting.get(s) for s in settings]
        ys = [np.nan if r is None else r["nse_mean"] for r in rows]
        errs = [0.0 if r is None or int(r["seeds"]) < 2 else r["nse_std"] for r in rows]
        ax.bar(x - 0.4 + width * (i + 0.5), ys, width, yerr=errs if any(errs) else None, capsize=3,
               label=model if model == strategy else f"{model}, {strategy}", hatch="//" if strategy == "gbt" else None)
    ax.set_xticks(x, settings)
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    ax.set_xlabel("setting")
    ax.set_ylabel("NSE (test)")
    fraction = float(summary[0]["fraction"])
    one_seed = all(int(r["seeds"]) < 2 for r in summary)
    ax.set_title(f"Test NSE at observation data fraction {fraction:g}"
                 + (" (one seed each, n=1)" if one_seed else " (mean ± std over seeds)"), fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _curves(summary: list[dict[str, Any]], panels: list[tuple[str, str]], plt):
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (model, setting) in zip(axes[0], panels, strict=True):
        for strategy in sorted({r["strategy"] for r in summary}):
            pts = sorted((float(r["fraction"]), r["nse_mean"], r["nse_std"]) for r in summary
                         if r["model"] == model and r["setting"] == setting and r["strategy"] == strategy)
            if pts:
                x, y, e = zip(*pts, strict=True)
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=strategy,
                            linestyle="--" if strategy == "gbt" else "-")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of observation training data")
        ax.set_ylabel("NSE (test)")
        ax.set_title(f"{model}, {setting}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_results(rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """``results.csv`` (every run), ``summary.csv``, ``summary.md`` and ``skill_vs_fraction.png``."""
    summary = summarise(rows)
    paths = {"results": out_dir / "results.csv", "summary_csv": out_dir / "summary.csv",
             "summary_md": out_dir / "summary.md", "plot": out_dir / "skill_vs_fraction.png"}
    write_csv(rows, paths["results"])
    write_csv(summary, paths["summary_csv"])
    write_text_atomic(paths["summary_md"], markdown(summary))
    plot(summary, paths["plot"])
    return paths
