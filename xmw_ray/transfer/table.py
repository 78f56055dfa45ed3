"""Results of a transfer experiment: per-run rows → mean ± std over seeds (CSV, Markdown) and a skill plot."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from xmw_ray.data.contract import FLUX_UNIT
from xmw_ray.storage import file_aside, write_text_atomic
from xmw_ray.train.results import RUN_COLUMNS, ResultRow, markdown_table, summary_columns, write_csv

SUMMARY_METRICS = ("nse", "rmse", "kge")
#: Column heads of the shown table: NSE and KGE are unitless, RMSE is in flux units.
METRIC_HEADS = {"nse": "NSE", "rmse": f"RMSE ({FLUX_UNIT})", "kge": "KGE"}
GROUP_KEYS = ("model", "setting", "fraction", "strategy")
SUMMARY_COLUMNS = summary_columns(SUMMARY_METRICS)


def summarise(rows: list[ResultRow]) -> list[ResultRow]:
    """Group rows by (model, setting, fraction, strategy): a row per group whose ``test`` is each metric's mean
    over seeds, ``test_std`` its spread and ``seeds`` the count."""
    groups: dict[tuple, list[ResultRow]] = defaultdict(list)
    for r in rows:
        groups[(r.model, r.setting, r.fraction, r.strategy)].append(r)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], float(k[2]), k[3])):
        rs = groups[key]
        row = ResultRow(**dict(zip(GROUP_KEYS, key, strict=True)), seeds=len(rs))
        for m in SUMMARY_METRICS:
            v = np.array([np.nan if r.test.get(m) is None else float(r.test[m]) for r in rs], dtype=np.float64)
            row.test[m] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            row.test_std[m] = float(np.nanstd(v)) if np.isfinite(v).any() else float("nan")
        out.append(row)
    return out


def _mean_std(row: ResultRow, metric: str) -> str:
    """``mean ± std`` over seeds; the value alone for one seed, where a spread of 0 would say nothing."""
    mean = f"{row.test[metric]:.3f}"
    return mean if (row.seeds or 0) < 2 else f"{mean} ± {row.test_std[metric]:.3f}"


def summary_table(summary: list[ResultRow]) -> tuple[list[str], list[list[str]], str]:
    """The shown transfer table, whatever draws it (Markdown here, HTML in the report): column heads, cells of a
    row per (model, setting, fraction, strategy) with metrics as mean ± std over seeds (the value alone where there
    is one seed, n=1), and the note below it."""
    head = ["model", "setting", "fraction", "strategy", "seeds", *(METRIC_HEADS[m] for m in SUMMARY_METRICS)]
    body = [[r.model, r.setting, f"{r.fraction}", r.strategy, f"{r.seeds}", *(_mean_std(r, m) for m in SUMMARY_METRICS)]
            for r in summary]
    note = ("Test scores on the observation test split; mean ± std over seeds." if any((r.seeds or 0) > 1 for r in summary)
            else "Test scores on the observation test split; one seed per row (n=1), so no spread is shown.")
    return head, body, note


def markdown(summary: list[ResultRow]) -> str:
    """:func:`summary_table` as one Markdown table and its note."""
    head, body, note = summary_table(summary)
    return "\n".join(markdown_table(head, body)) + "\n\n" + note + "\n"


def plot(summary: list[ResultRow], path: Path) -> None:
    """NSE (mean ± std over seeds) against the observation data fraction, a line per strategy, a panel per
    (model, setting); with a single fraction there is no curve to draw, so one panel of bars instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r.model, r.setting) for r in summary})
    if not panels:
        return
    if len({float(r.fraction) for r in summary}) == 1:
        fig = _bars_of_one_fraction(summary, panels)
    else:
        fig = _curves(summary, panels, plt)
    with file_aside(path) as tmp:  # the aside has no suffix: name the format
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or None)
    plt.close(fig)


def _bars_of_one_fraction(summary: list[ResultRow], panels: list[tuple[str, str]]):
    """Test NSE as bars: a group per setting, a bar per model and strategy (error bars with ≥ 2 seeds)."""
    import matplotlib.pyplot as plt

    settings = sorted({s for _, s in panels})
    runs = sorted({(r.model, r.strategy) for r in summary})
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(settings) * len(runs) + 2.5), 4))
    x = np.arange(len(settings))
    for i, (model, strategy) in enumerate(runs):
        by_setting = {r.setting: r for r in summary if (r.model, r.strategy) == (model, strategy)}
        rows = [by_setting.get(s) for s in settings]
        ys = [np.nan if r is None else r.test["nse"] for r in rows]
        errs = [0.0 if r is None or (r.seeds or 0) < 2 else r.test_std["nse"] for r in rows]
        ax.bar(x - 0.4 + width * (i + 0.5), ys, width, yerr=errs if any(errs) else None, capsize=3,
               label=model if model == strategy else f"{model}, {strategy}", hatch="//" if strategy == "gbt" else None)
    ax.set_xticks(x, settings)
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    ax.set_xlabel("setting")
    ax.set_ylabel("NSE (test)")
    fraction = float(summary[0].fraction)
    one_seed = all((r.seeds or 0) < 2 for r in summary)
    ax.set_title(f"Test NSE at observation data fraction {fraction:g}"
                 + (" (one seed each, n=1)" if one_seed else " (mean ± std over seeds)"), fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _curves(summary: list[ResultRow], panels: list[tuple[str, str]], plt):
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (model, setting) in zip(axes[0], panels, strict=True):
        for strategy in sorted({r.strategy for r in summary}):
            pts = sorted((float(r.fraction), r.test["nse"], r.test_std["nse"]) for r in summary
                         if (r.model, r.setting, r.strategy) == (model, setting, strategy))
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


def write_results(rows: list[ResultRow], out_dir: Path) -> dict[str, Path]:
    """``results.csv`` (every run), ``summary.csv``, ``summary.md`` and ``skill_vs_fraction.png``."""
    summary = summarise(rows)
    paths = {"results": out_dir / "results.csv", "summary_csv": out_dir / "summary.csv",
             "summary_md": out_dir / "summary.md", "plot": out_dir / "skill_vs_fraction.png"}
    write_csv(rows, RUN_COLUMNS, paths["results"])
    write_csv(summary, SUMMARY_COLUMNS, paths["summary_csv"])
    write_text_atomic(paths["summary_md"], markdown(summary))
    plot(summary, paths["plot"])
    return paths
