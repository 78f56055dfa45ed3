"""Measuring helpers shared by the benches: peak resident memory sampled in a thread, and a least-squares line."""

from __future__ import annotations

import threading
import time

import numpy as np


class PeakRSS:
    """Peak rise of resident memory (MiB) of this process and of its whole process tree, sampled every
    ``interval`` seconds while the ``with`` block runs (the tree includes Ray's raylet, workers and actors).

    ``tree`` sums each process's RSS, so a page shared by several processes (Ray's object store is shared memory
    that the raylet and every worker reading a block map) counts once per process that touched it. ``tree_pss``
    sums the proportional set size instead (a shared page split among its sharers): the tree's real footprint,
    sampled every ``pss_every``-th sample because reading it walks each process's page tables."""

    def __init__(self, interval: float = 0.05, pss_every: int = 10) -> None:
        import psutil

        self._me = psutil.Process()
        self._interval = interval
        self._pss_every = pss_every
        self.driver = self.tree = self.tree_pss = 0.0
        self.samples = 0

    def _tree(self) -> list:
        """This process and its descendants, listed once per sample (both figures read the same list)."""
        return [self._me, *self._me.children(recursive=True)]

    @staticmethod
    def _pss(procs: list) -> float:
        import psutil

        total = 0
        for proc in procs:
            try:
                total += proc.memory_full_info().pss
            except (psutil.Error, AttributeError):  # ended meanwhile; or no PSS on this platform (then 0)
                pass
        return total / 2**20

    def _rss(self, procs: list) -> tuple[float, float]:
        import psutil

        own = self._me.memory_info().rss
        total = own
        for child in procs[1:]:
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a child that ended between listing and reading
                pass
        return own / 2**20, total / 2**20

    def __enter__(self) -> PeakRSS:
        procs = self._tree()
        self._base = self._rss(procs)
        self._base_pss = self._pss(procs)
        self._stop = threading.Event()

        def sample() -> None:
            while True:
                procs = self._tree()
                own, total = self._rss(procs)
                self.driver = max(self.driver, own - self._base[0])
                self.tree = max(self.tree, total - self._base[1])
                if self.samples % self._pss_every == 0:
                    self.tree_pss = max(self.tree_pss, self._pss(procs) - self._base_pss)
                self.samples += 1
                if self._stop.wait(self._interval):
                    return

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def linear_fit(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> tuple[float, float, float]:
    """``(intercept, slope, r2)`` of the least-squares line ``y = intercept + slope * x`` (r2 = 1 for an exact
    line; NaN when ``y`` does not vary)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a line needs at least two distinct x values")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else float("nan")
    return float(intercept), float(slope), r2


def start_ray(tries: int = 6, **init_kwargs) -> float:
    """``ray.init(**init_kwargs)``, tried again when the raylet misses Ray's fixed 30 s start-up wait (a heavily
    loaded machine); returns the seconds it took, failed tries included."""
    import ray

    t = time.perf_counter()
    for attempt in range(tries):
        try:
            ray.init(**init_kwargs)
            return time.perf_counter() - t
        except Exception as exc:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(exc) or attempt == tries - 1:
                raise
            ray.shutdown()
    raise AssertionError("unreachable")


def require_cuda(ap) -> None:
    """For a bench's ``--use-gpu``: stop with ``ap.error`` when no CUDA device is visible, else print which card
    (the figures are recorded with the card named)."""
    import torch

    if not torch.cuda.is_available():
        ap.error("--use-gpu: no CUDA device visible")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)

