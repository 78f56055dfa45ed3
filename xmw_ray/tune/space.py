"""Define-by-run Optuna search spaces: each model suggests its own hyper-parameters (the space it declares beside
its ``Params``, ``xmw_ray/models/ranges.py``), each strategy its own (``search_space`` beside the strategy's
``Params``).

A space is a function of an Optuna trial; :func:`define_by_run` picks the model and strategy first and then asks
only that model's and that strategy's questions, so an LSTM trial never carries attention heads. Parameter names
are ``hp/<model>/<name>`` and ``sp/<strategy>/<name>`` (Ray's OptunaSearch unflattens ``/`` into nested dicts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xmw_ray.config import NO_TRANSFER, SearchSection, check_model_spaces
from xmw_ray.models.ranges import SIZES, model_space

if TYPE_CHECKING:
    from xmw_ray.transfer.base import StrategySpace


def strategy_space(strategy: str) -> StrategySpace | None:
    """The search space strategy ``strategy`` declares beside its ``Params``; None for one with nothing to search
    (``scratch``, ``residual``) and for ``none`` (no transfer)."""
    if strategy == NO_TRANSFER:
        return None
    from xmw_ray.transfer.registry import get_strategy

    return get_strategy(strategy).search_space


class DefineByRun:
    """The OptunaSearch ``space`` (a picklable callable: the searcher's state is saved with the search)."""

    def __init__(self, search: SearchSection) -> None:
        check_model_spaces(search)  # validated with the config; checked again for a searcher built by hand
        self.search = search

    def __call__(self, trial: Any) -> dict[str, Any]:
        search = self.search
        model = trial.suggest_categorical("model", list(search.models))
        strategy = trial.suggest_categorical("strategy", list(search.strategies))
        lo, hi = search.lr
        trial.suggest_float("lr", lo, hi, log=lo > 0 and hi > lo)
        wlo, whi = search.weight_decay
        trial.suggest_float("weight_decay", wlo, whi)
        model_space(model)(trial, f"hp/{model}/", SIZES[search.space])
        space = strategy_space(strategy)
        if space is not None:
            space(trial, f"sp/{strategy}/")
        return {}


def covering_points(search: SearchSection) -> list[dict[str, str]]:
    """The first trials of a ``cover_strategies`` search: each strategy once, the models taken in turn (Optuna
    samples their other parameters); none otherwise. A few samples of Optuna alone may miss a strategy."""
    if not search.cover_strategies:
        return []
    points = [{"model": search.models[i % len(search.models)], "strategy": strategy}
              for i, strategy in enumerate(search.strategies)]
    return points[:search.num_samples]


def model_params(config: dict[str, Any], search: SearchSection) -> dict[str, Any]:
    """The model hyper-parameters of a trial's (unflattened) config, in the model's own names."""
    model = config["model"]
    raw = dict(config.get("hp", {}).get(model, {}))
    return _rebuild(model, raw, search)


def _rebuild(model: str, raw: dict[str, Any], search: SearchSection) -> dict[str, Any]:
    """Replay the model's space on recorded answers (e.g. ``ff_mult`` → ``d_ff``) without Optuna."""
    return model_space(model)(_Replay(raw), "", SIZES[search.space])


def strategy_params(config: dict[str, Any]) -> dict[str, Any]:
    strategy = config["strategy"]
    space = strategy_space(strategy)
    if space is None:
        return {}
    return space(_Replay(dict(config.get("sp", {}).get(strategy, {}))), "")


class _Replay:
    """An object with Optuna's ``suggest_*`` methods that answers from a dict of recorded values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def _get(self, name: str, *_: Any, **__: Any) -> Any:
        if name not in self._values:
            raise KeyError(f"trial config has no value for {name!r}")
        return self._values[name]

    suggest_categorical = suggest_int = suggest_float = _get
