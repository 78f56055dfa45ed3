"""Resource arithmetic done before asking Ray: a request that cannot fit fails at once with what was asked and
what exists, instead of waiting forever (Ray never errors on too few CPUs, it waits)."""

from __future__ import annotations

import ray

from xmw_ray.errors import XmwInputError

#: CPUs kept free for Ray Data read/transform tasks: with every CPU held by training workers they never run.
DATA_CPUS = 1.0


def required_resources(num_workers: int, cpus_per_worker: float, use_gpu: bool) -> dict[str, float]:
    """What one training run holds: its workers (local mode: the driver) plus the Ray Data reserve."""
    workers = max(num_workers, 1)
    need = {"CPU": workers * cpus_per_worker + DATA_CPUS}
    if use_gpu:
        need["GPU"] = float(workers)
    return need


def check_fits(num_workers: int, cpus_per_worker: float, use_gpu: bool) -> None:
    """Raise ``XmwInputError`` when one run of this shape exceeds the cluster's total resources."""
    have = ray.cluster_resources()
    need = required_resources(num_workers, cpus_per_worker, use_gpu)
    for key, total in need.items():
        if have.get(key, 0.0) + 1e-9 < total:
            raise XmwInputError(
                f"resources: asked for {total:g} {key} ({num_workers} worker(s) x "
                f"{cpus_per_worker:g} CPU{' + 1 GPU' if use_gpu else ''} each, + {DATA_CPUS:g} CPU for Ray Data) "
                f"but the cluster has {have.get(key, 0.0):g} {key}; lower resources.num_workers / "
                f"resources.cpus_per_worker or add nodes")
