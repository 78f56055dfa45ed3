"""Results of a transfer experiment: per-run rows → mean ± std over seeds (CSV, Markdown) and a skill plot."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from xmw_ray.storage import file_aside, write_text_atomic

SUMMARY_METRICS = ("nse", "rmse", "kge")
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


def markdown(summary: list[dict[str, Any]]) -> str:
    """One Markdown table: a row per (model, setting, fraction, strategy), metrics as mean ± std."""
    head = "| model | setting | fraction | strategy | seeds | " + " | ".join(m.upper() for m in SUMMARY_METRICS) + " |"
    lines = [head, "|" + "---|" * (5 + len(SUMMARY_METRICS))]
    for r in summary:
        cells = [f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f}" for m in SUMMARY_METRICS]
        lines.append(f"| {r['model']} | {r['setting']} | {r['fraction']} | {r['strategy']} | {r['seeds']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """NSE (mean ± std over seeds) against the observation data fraction, a line per strategy, a panel per
    (model, setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["setting"]) for r in summary})
    if not panels:
        return
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
    with file_aside(path) as tmp:  # the aside has no suffix: name the format
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or None)
    plt.close(fig)


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
