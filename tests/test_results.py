"""One result row for the transfer tables, the leaderboard and the report: its CSV and JSON-lines round trip, the
names of files written before it, and a report drawn from the CSV files alone (no Markdown read)."""

from __future__ import annotations

import json
import math
import re
from html import unescape

import pytest

from xmw_ray.cli import main
from xmw_ray.data.contract import FLUX_UNIT
from xmw_ray.errors import XmwInputError
from xmw_ray.train.metrics import METRIC_KEYS
from xmw_ray.train.results import (
    RUN_COLUMNS,
    ResultRow,
    append_jsonl,
    metric_column,
    read_csv,
    read_jsonl,
    summary_columns,
    write_csv,
)
from xmw_ray.transfer.experiment import run_row
from xmw_ray.transfer.table import SUMMARY_COLUMNS, write_results
from xmw_ray.tune.leaderboard import COLUMNS, FILES, to_csv, to_markdown

POOLED = {"nse": 0.61, "rmse": 31.5, "nrmse": 0.7, "pearson_r2": 0.66, "kge": 0.52, "bias": -1.25, "n": 730}


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def assert_same_rows(got: list[ResultRow], want: list[ResultRow], columns) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for c in columns:
            assert same(g.value(c), w.value(c)), (c, g.value(c), w.value(c))


def test_a_run_and_a_trial_round_trip_through_csv_and_json_lines(tmp_path):
    runs = [run_row("finetune", "lstm", "spatial", 0.25, 3, POOLED, 0.48, "/runs/x/best"),
            run_row("gbt", "gbt", "spatial", 0.25, 3, {**dict.fromkeys(METRIC_KEYS, float("nan")), "n": 0},
                    float("nan"), "")]
    for row in runs:
        append_jsonl(tmp_path / "results.jsonl", row)
    assert_same_rows(read_jsonl(tmp_path / "results.jsonl"), runs, RUN_COLUMNS)
    assert_same_rows(read_csv(write_csv(runs, RUN_COLUMNS, tmp_path / "results.csv")), runs, RUN_COLUMNS)
    assert [line.split(",")[6] for line in (tmp_path / "results.csv").read_text().splitlines()[:2]] == [
        "test_nse", "0.61"]  # metrics.py's names, marked as test scores
    trial = ResultRow(rank=1, trial=2, trial_id="t_a", model="tcn", strategy="adversarial", status="stopped",
                      epochs=3, best_epoch=1, val_nse=0.4, val_loss=0.2, test=dict(POOLED), test_median_nse=0.3,
                      lr=0.005, weight_decay=1e-4, params=json.dumps({"model": {"hidden_size": 8}}),
                      checkpoint="s3://bucket/trials/t_a/checkpoint_000001")
    unscored = ResultRow(rank=2, trial=1, trial_id="t_b", model="lstm", strategy="scratch", status="no report",
                         epochs=0, params="{}")
    (tmp_path / "leaderboard.csv").write_text(to_csv([trial, unscored]))
    back = read_csv(tmp_path / "leaderboard.csv")
    assert_same_rows(back, [trial, unscored], COLUMNS)
    assert back[1].val_nse is None and back[1].test == {}  # not measured stays not measured, not NaN



def test_an_append_cut_short_loses_only_its_own_row(tmp_path):
    """A full disk or a kill mid-append leaves an unfinished last line: the experiment still resumes (that
    combination runs again, its next append starts a line of its own); a damaged line elsewhere is one clear error."""
    path = tmp_path / "results.jsonl"
    rows = [run_row(st, "lstm", "spatial", 0.25, 0, POOLED, 0.5, f"/runs/{st}/best") for st in ("scratch", "finetune")]
    append_jsonl(path, rows[0])
    with path.open("a") as fh:
        fh.write(json.dumps(rows[1].record(RUN_COLUMNS))[:57])  # the second row, cut short
    assert [r.strategy for r in read_jsonl(path)] == ["scratch"]
    append_jsonl(path, rows[1])  # the rerun's row
    assert [r.strategy for r in read_jsonl(path)] == ["scratch", "finetune"]
    assert path.read_text().count("\n") == 2
    path.write_text("{oops\n" + path.read_text())
    with pytest.raises(XmwInputError, match=rf"^{path}:1: not a JSON line"):
        read_jsonl(path)

def test_files_written_before_the_shared_row_still_read(tmp_path):
    """A ``results.jsonl`` of an experiment to resume and a ``summary.csv`` of an old run used the bare names."""
    (tmp_path / "results.jsonl").write_text(json.dumps(
        {"key": "scratch-lstm-t-f1-s0", "model": "lstm", "setting": "t", "fraction": 1.0, "seed": 0,
         "strategy": "scratch", **POOLED, "val_nse": 0.5, "checkpoint": "/c"}) + "\n")
    (row,) = read_jsonl(tmp_path / "results.jsonl")
    assert row.key == "scratch-lstm-t-f1-s0" and row.test == POOLED and row.val_nse == 0.5
    (tmp_path / "summary.csv").write_text("model,setting,fraction,strategy,seeds,nse_mean,nse_std\n"
                                          "lstm,t,1.0,scratch,3,0.5,0.125\n")
    (old,) = read_csv(tmp_path / "summary.csv")
    assert (old.seeds, old.test, old.test_std) == (3, {"nse": 0.5}, {"nse": 0.125})


def test_a_cell_that_is_not_a_number_names_the_file_and_column(tmp_path):
    (tmp_path / "leaderboard.csv").write_text("rank,val_nse\n1,high\n")
    with pytest.raises(XmwInputError, match=r"leaderboard\.csv:2: column val_nse: not a number"):
        read_csv(tmp_path / "leaderboard.csv")


def test_the_summary_is_rows_of_the_same_type_over_seeds(tmp_path):
    rows = [run_row("scratch", "lstm", "t", 0.5, seed, {**POOLED, "nse": nse}, 0.1, f"/c{seed}")
            for seed, nse in ((0, 0.25), (1, 0.75))]
    paths = write_results(rows, tmp_path)
    assert SUMMARY_COLUMNS == summary_columns(("nse", "rmse", "kge"))
    assert paths["summary_csv"].read_text().splitlines()[0] == ",".join(SUMMARY_COLUMNS)
    (summary,) = read_csv(paths["summary_csv"])
    assert summary.seeds == 2 and summary.test["nse"] == pytest.approx(0.5)
    assert summary.test_std["nse"] == pytest.approx(0.25) and summary.value(metric_column("rmse")) == 31.5
    assert_same_rows(read_csv(paths["results"]), rows, RUN_COLUMNS)


def _tables(page: str) -> list[list[list[str]]]:
    """Every table of a page as rows of cell texts."""
    return [[[unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr)]
             for tr in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
            for table in re.findall(r"<table>(.*?)</table>", page, re.S)]


def _markdown_rows(text: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return [r for r in rows if not all(set(c) <= set("-: ") for c in r)]


def test_the_report_draws_its_tables_from_the_csv_files_alone(tmp_path):
    """The same tables as the Markdown files show (heads in words for the leaderboard), with every ``.md`` gone."""
    transfer = tmp_path / "runs" / "transfer"
    transfer.mkdir(parents=True)
    write_results([run_row(st, m, s, 0.25, seed, {**POOLED, "nse": 0.5 + 0.1 * seed}, 0.4, "")
                   for m, st in (("lstm", "scratch"), ("gbt", "gbt")) for s in ("temporal", "spatial")
                   for seed in (0, 1)], transfer)
    search = tmp_path / "runs" / "tune" / "s"
    search.mkdir(parents=True)
    rows = [ResultRow(rank=i + 1, trial=i + 1, trial_id=f"t{i}", model="lstm", strategy=st, status="completed",
                      epochs=2, best_epoch=1, val_nse=0.5 - 0.25 * i, val_loss=0.1, lr=0.01, weight_decay=0.0,
                      test=dict(POOLED), params=json.dumps({"model": {"hidden_size": 8}}),
                      checkpoint=str(search / f"t{i}" / "checkpoint_000001"))
            for i, st in enumerate(("scratch", "finetune"))]
    (search / FILES["csv"]).write_text(to_csv(rows))
    (search / FILES["markdown"]).write_text(to_markdown(rows, "s"))
    markdown = {p.name: _markdown_rows(p.read_text()) for p in tmp_path.rglob("*.md")}
    assert set(markdown) == {"summary.md", "leaderboard.md"}
    for md in tmp_path.rglob("*.md"):
        md.unlink()
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 0
    page = out.read_text()
    tables = _tables(page)
    board = next(t for t in tables if t[0][:2] == ["rank", "trial"])
    assert board[1:] == markdown["leaderboard.md"][1:]  # every cell as the Markdown shows it
    assert "validation NSE" in board[0] and f"test RMSE ({FLUX_UNIT})" in board[0]  # heads in words
    assert [t for t in tables if t[0] == markdown["summary.md"][0]] == [markdown["summary.md"]]
    assert "0.550 ± 0.050" in page and "mean ± std over seeds" in page
    assert "Best: trial 1 (lstm, strategy scratch)" in page and "<code>runs/tune/s/t0/checkpoint_000001</code>" in page
    assert "Search s: 2 trials, ranked by validation NSE" in page
    assert "strategies scratch (and a gradient-boosted-trees baseline)" in page and "n=2 per row" in page
