"""Transfer learning from simulations (TEM-MDM) to observations (FLUXNET-CH4): one interface, five strategies."""

from xmw_ray.transfer.base import Strategy, TransferJob
from xmw_ray.transfer.registry import STRATEGIES, get_strategy

__all__ = ["STRATEGIES", "Strategy", "TransferJob", "get_strategy"]
