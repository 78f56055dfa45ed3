"""The line ``xmw tune`` ends with: trials the time budget ended before their first epoch are not failures."""

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
