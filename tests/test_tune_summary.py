"""What `xmw tune` ends with: its summary line (trials the time budget ended before their first epoch are not
failures) and the results it writes."""

from __future__ import annotations

from xmw_ray.train.results import ResultRow
from xmw_ray.tune.leaderboard import summary_line


def _rows(*statuses: str) -> list[ResultRow]:
    return [ResultRow(status=s) for s in statuses]


def test_trials_cut_by_the_time_budget_are_not_counted_as_failed() -> None:
    line = summary_line("transfer-search", _rows("completed", "stopped", "no report", "no report"), 6, 240.0, 254.3)
    assert line == ("search 'transfer-search': 4 of 6 trials (time budget 240 s) (1 completed, 1 stopped early, "
                    "2 ended by the time budget before a first epoch, 0 failed) in 254 s")


def test_errors_are_failures_and_a_full_search_says_nothing_of_a_budget() -> None:
    line = summary_line("s", _rows("completed", "error", "completed"), 3, None, 10.0)
    assert line == "search 's': 3 trials (2 completed, 0 stopped early, 1 failed) in 10 s"


def test_unreported_trials_without_a_budget_were_interrupted() -> None:
    line = summary_line("s", _rows("completed", "no report"), 4, None, 5.0)
    assert "1 ended by an interruption before a first epoch, 0 failed" in line
    assert line.startswith("search 's': 2 of 4 trials (")


def test_results_for_an_object_store_leave_no_local_folder_when_a_step_fails(tmp_path, monkeypatch) -> None:
    """A search whose folder is a URL writes its files locally, then uploads them: that local folder goes whether
    the upload happens or a plot (or the upload) fails at the end of a long search."""
    import tempfile
    from types import SimpleNamespace

    import pytest

    from xmw_ray.tune import leaderboard

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's own temporary folder
    cfg = SimpleNamespace(run=SimpleNamespace(name="s"))
    rows = [ResultRow(status="completed", val_nse=0.5, checkpoint="memory://runs/s/trial/best")]
    files, best = leaderboard.write_results(rows, cfg, "memory://runs/s")
    assert files["csv"] == "memory://runs/s/leaderboard.csv" and best == "memory://runs/s/trial/best"
    assert list(tmp_path.iterdir()) == []

    def broken(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(leaderboard, "plot_groups", broken)
    with pytest.raises(OSError, match="no space"):
        leaderboard.write_results(rows, cfg, "memory://runs/s2")
    assert list(tmp_path.iterdir()) == []
