"""The search's progress display: trials finished of the total, with the best validation NSE so far.

Tune's own trial tables go to the command's Ray log (``xmw_ray.console``); this callback runs on the search's
driver and prints one progress line through the console instead.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from xmw_ray.console import Progress
from xmw_ray.tune.leaderboard import RANK_METRIC


def _what(trial: Any) -> str:
    """``model / strategy`` of a trial, from its sampled configuration."""
    config = getattr(trial, "config", None) or {}
    return " / ".join(str(config[k]) for k in ("model", "strategy") if k in config) or str(trial)


class TrialProgress(tune.Callback):
    """``trials: k/N done, best val NSE so far x (model / strategy)``, shown as each trial ends (completed, stopped
    early by ASHA or the time budget, or failed). It holds counts and the display's state only, no stream: Tune
    pickles its callbacks with the search."""

    def __init__(self, total: int) -> None:
        self.bar = Progress("trials", total, "done")
        self.finished: set[str] = set()
        self.best = -math.inf
        self.best_of = ""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        score = result.get(RANK_METRIC)
        if isinstance(score, int | float) and math.isfinite(score) and score > self.best:
            self.best, self.best_of = float(score), _what(trial)

    def _trial_ended(self, trial: Any) -> None:
        self.finished.add(trial.trial_id)
        best = (f"best val NSE so far {self.best:.3f} ({self.best_of})" if math.isfinite(self.best)
                else "no trial scored yet")
        self.bar.update(len(self.finished), best)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial_ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial_ended(trial)
