"""Strategy name → strategy object (what configs, ``xmw transfer`` and Tune name)."""

from __future__ import annotations

from xmw_ray.errors import XmwInputError
from xmw_ray.transfer.adversarial import Adversarial
from xmw_ray.transfer.base import Strategy
from xmw_ray.transfer.finetune import Finetune
from xmw_ray.transfer.residual import Residual
from xmw_ray.transfer.reweight import Reweight
from xmw_ray.transfer.scratch import Scratch

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Scratch(), Finetune(), Adversarial(), Residual(), Reweight())}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise XmwInputError(f"unknown transfer strategy {name!r} (known: {', '.join(STRATEGIES)})") from None
