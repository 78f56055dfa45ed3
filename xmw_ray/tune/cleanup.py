"""Give back the resources of trials that ASHA (or the time budget) stopped.

A stopped trial's driver actor is killed; its TorchTrainer controller dies with it, and the workers' placement
group is left behind. Ray Train's detached ``PlacementGroupCleaner`` removes it by asking the state API whether
the controller is alive, but it finds the API by auto-detection, which fails when one host runs several Ray
instances ("Found multiple active Ray instances") and then never cleans up: the next trials wait forever for
CPUs. The search driver knows its own dashboard, so it sweeps: a placement group whose Ray Train workers are all
dead is removed (Ray Train itself replaces a failed worker group with a new placement group).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray import tune

logger = logging.getLogger(__name__)


def dashboard_address() -> str | None:
    """The state API address of the cluster this driver is connected to (None without a dashboard)."""
    url = ray._private.worker.get_dashboard_url()
    return f"http://{url}" if url else None


def sweep_dead_worker_groups(address: str) -> int:
    """Remove every live placement group whose Ray Train workers are all dead; returns how many."""
    from ray.util.placement_group import PlacementGroup
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("class_name", "=", "RayTrainWorker")], detail=True,
                         limit=10_000, raise_on_missing_output=False)
    alive = {a.placement_group_id for a in actors if a.state != "DEAD" and a.placement_group_id}
    dead = {a.placement_group_id for a in actors if a.state == "DEAD" and a.placement_group_id} - alive
    table = ray.util.placement_group_table()
    removed = 0
    for pg_id in dead:
        if table.get(pg_id, {}).get("state") != "CREATED":
            continue
        try:
            ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
            removed += 1
        except Exception as exc:  # already removed by Ray Train in the meantime
            logger.debug("placement group %s: %s", pg_id, exc)
    return removed


class WorkerGroupSweeper(tune.Callback):
    """Tune callback: sweep dead trials' worker placement groups every ``interval_s`` of the search loop."""

    def __init__(self, interval_s: float = 3.0) -> None:
        self.interval_s = interval_s
        self.removed = 0
        self._last = 0.0
        self._address: str | None = None

    def setup(self, **info: Any) -> None:
        self._address = dashboard_address()
        if self._address is None:
            logger.warning("no Ray dashboard: stopped trials' placement groups are left to Ray Train's cleaner")

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self._address is None or now - self._last < self.interval_s:
            return
        self._last = now
        try:
            self.removed += sweep_dead_worker_groups(self._address)
        except Exception as exc:  # the state API may be briefly unavailable; try again next time
            logger.warning("placement group sweep failed: %s", exc)
