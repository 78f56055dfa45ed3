"""Measuring helpers shared by the benches: peak resident memory sampled in a thread, and a least-squares line."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

#: PeakRSS(plasma=True) asks the raylet for the object store's bytes every this many PSS samples (every 2 s).
PLASMA_EVERY = 4


class PeakRSS:
    """Peak rise of resident memory (MiB) of this process and of its whole process tree, sampled every
    ``interval`` seconds while the ``with`` block runs (the tree includes Ray's raylet, workers and actors).

    ``tree`` sums each process's RSS rise over its own RSS at the start (a process started inside counts whole; one
    that ended inside counts nothing), so a page shared by several processes (Ray's object store is shared memory
    that the raylet and every worker reading a block map) counts once per process that touched it. ``tree_pss`` is
    the rise of the tree's summed proportional set size (a shared page split among its sharers): its real footprint,
    so a process that ends inside lowers it (its private pages are gone; the survivors take over its shares),
    sampled every ``pss_every``-th sample because reading it walks each process's page tables.

    Where the tree's memory is (a profile): ``by_role`` is, per role, the peak of the summed rise of its processes'
    PSS, each process over its own PSS at the start (0 for a process started inside) and counted under the role it
    has now (``role``: ``driver``, a Ray process by its title such as ``ray::IDLE`` or an actor's class, or the
    program's name; an idle worker that becomes an actor brings only its growth to the actor's role). With
    ``plasma=True``, ``plasma`` is the peak rise of the bytes held in Ray's object store, asked of the raylet every
    ``PLASMA_EVERY``-th PSS sample (answering, the raylet polls its workers: a little CPU taken from the measured
    work; a private Ray API, so 0 when it cannot be read)."""

    def __init__(self, interval: float = 0.05, pss_every: int = 10, plasma: bool = False) -> None:
        import psutil

        self._me = psutil.Process()
        self._interval = interval
        self._pss_every = pss_every
        self._plasma_probe = _plasma_probe() if plasma else None
        self.driver = self.tree = self.tree_pss = self.plasma = 0.0
        self.by_role: dict[str, float] = {}
        self.samples = 0

    def _tree(self) -> list:
        """This process and its descendants, listed once per sample (both figures read the same list)."""
        return process_tree(self._me)

    def _role(self, proc) -> str:
        return process_role(proc, self._me.pid)

    def _pss(self, procs: list) -> tuple[float, dict[int, tuple[str, float]]]:
        """The tree's PSS (MiB), and per process: pid → (role, MiB) (``lower_pss_reading``)."""
        import psutil

        def pss_of(proc) -> float | None:
            try:
                return proc.memory_full_info().pss / 2**20
            except (psutil.Error, AttributeError):  # ended meanwhile; or no PSS on this platform (then left out)
                return None

        def role_of(proc) -> str:
            try:
                return self._role(proc)
            except psutil.Error:
                return "ended"

        return lower_pss_reading(procs, pss_of, role_of)

    def _rss(self, procs: list) -> dict[int, float]:
        """RSS (MiB) per process of the tree: pid → MiB (a child that ended between listing and reading is left
        out)."""
        import psutil

        rss = {self._me.pid: self._me.memory_info().rss / 2**20}
        for child in procs[1:]:
            try:
                rss[child.pid] = child.memory_info().rss / 2**20
            except psutil.Error:
                pass
        return rss

    def __enter__(self) -> PeakRSS:
        # RSS rises are per process, each over its own figure at the start (0 for one started inside): a process
        # that ends inside the block takes nothing away from the others' rise (the tree's total minus its total at
        # the start did, and a Ray worker exiting during a test once hid a 200 MiB allocation of the driver).
        procs = self._tree()
        base_rss = self._rss(procs)
        base_pss, base = self._pss(procs)
        base_plasma = self._plasma_probe() if self._plasma_probe else 0.0
        self._stop = threading.Event()

        def sample() -> None:
            while True:
                procs = self._tree()
                rss = self._rss(procs)
                self.driver = max(self.driver, rss[self._me.pid] - base_rss[self._me.pid])
                self.tree = max(self.tree, sum(mib - base_rss.get(pid, 0.0) for pid, mib in rss.items()))
                if self.samples % self._pss_every == 0:
                    pss, per_process = self._pss(procs)
                    self.tree_pss = max(self.tree_pss, pss - base_pss)
                    for role, rise in role_rises(base, per_process).items():
                        self.by_role[role] = max(self.by_role.get(role, rise), rise)
                    # the raylet polls every worker to answer: ask it every PLASMA_EVERY-th PSS sample only
                    if self._plasma_probe and self.samples % (self._pss_every * PLASMA_EVERY) == 0:
                        self.plasma = max(self.plasma, self._plasma_probe() - base_plasma)
                self.samples += 1
                if self._stop.wait(self._interval):
                    return

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


#: Two readings of a tree's PSS (forward, then backward) that differ by more than this many MiB, or this share, saw
#: pages move between its processes while they were read: the tree is read again, up to PSS_TRIES times in all.
PSS_SETTLED_MIB, PSS_SETTLED_SHARE, PSS_TRIES = 4.0, 0.02, 3


def lower_pss_reading(procs: list, pss_of, role_of) -> tuple[float, dict[int, tuple[str, float]]]:
    """The tree's summed PSS (MiB) and per process pid → (role, MiB): the tree read once forward and once backward,
    again while the two totals differ by more than ``PSS_SETTLED_*``, and the reading with the lower total kept
    (the last try's).
    Why: the processes are read one after the other, so a page passing between two of them in between (a worker
    mapping a block the raylet holds, a child touching shared memory) counts whole in both, or in neither; one order
    errs up and the other down by the same pages, so the lower one never counts a moving page twice (a peak taken
    from single forward readings once overstated a 160 MiB shared page by 70 MiB on a loaded machine).
    ``pss_of(proc)`` gives MiB, or None for a process that ended; ``role_of(proc)`` its role's name."""
    for _ in range(PSS_TRIES):
        forward = {proc.pid: pss_of(proc) for proc in procs}
        backward = {proc.pid: pss_of(proc) for proc in reversed(procs)}
        alive = [proc for proc in procs if forward[proc.pid] is not None and backward[proc.pid] is not None]
        (low, read), (high, _) = sorted(((sum(r[p.pid] for p in alive), r) for r in (forward, backward)),
                                        key=lambda total_reading: total_reading[0])
        if high - low <= max(PSS_SETTLED_MIB, PSS_SETTLED_SHARE * high):
            break
    return low, {p.pid: (role_of(p), read[p.pid]) for p in alive}


def role_rises(start: dict[int, tuple[str, float]], now: dict[int, tuple[str, float]]) -> dict[str, float]:
    """Per role, the summed rise of its processes (pid → (role, MiB)): each over its own figure at ``start`` (0 for
    one started since), counted under the role it has ``now``, so an idle Ray worker that became an actor brings
    only its growth to the actor's role."""
    rises: dict[str, float] = {}
    for pid, (role, mib) in now.items():
        rises[role] = rises.get(role, 0.0) + mib - start.get(pid, (role, 0.0))[1]
    return rises


def process_tree(me) -> list:
    """``me`` (a ``psutil.Process``) and all its descendants."""
    return [me, *me.children(recursive=True)]


def process_role(proc, driver_pid: int) -> str:
    """What a process of the tree is: ``driver``, a Ray worker by its title (``ray::IDLE``, an actor's class, a
    task's name), or its program (``raylet``, ``gcs_server``, ``dashboard.py``, ...)."""
    if proc.pid == driver_pid:
        return "driver"
    cmd = proc.cmdline()
    if cmd and cmd[0].startswith("ray::"):  # a Ray worker's title: ray::IDLE, ray::Class.method, ray::task
        return cmd[0].split(".")[0].split("->")[0]
    prog = next((Path(a).name for a in cmd[1:] if a.endswith(".py")), None) if cmd else None
    return prog or proc.name()


class CpuByRole:
    """CPU seconds (user + system) each role of this process tree used while the ``with`` block ran, read every
    ``interval`` seconds in a thread: a process alive at the start counts from there, one started inside counts all
    of its CPU time, one that ended inside counts up to its last reading (at most ``interval`` of it is missed).
    ``by_role`` maps role → seconds; ``wall`` is the block's wall time. Why: on 2 cores, whatever Ray's own
    processes use is taken from a training worker; this says how much, and whose."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self._me = psutil.Process()
        self._interval = interval
        self.by_role: dict[str, float] = {}
        self.wall = 0.0

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        import psutil

        out = {}
        for proc in process_tree(self._me):
            try:
                t = proc.cpu_times()
                out[proc.pid] = (process_role(proc, self._me.pid), t.user + t.system)
            except psutil.Error:
                pass
        return out

    def __enter__(self) -> CpuByRole:
        start = self._snapshot()
        self._last = dict(start)  # pid → (role, cumulative CPU) at its latest reading
        self._stop = threading.Event()
        self._t0 = time.perf_counter()

        def sample() -> None:
            while not self._stop.wait(self._interval):
                self._last.update(self._snapshot())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        self._start = start
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._last.update(self._snapshot())
        for pid, (role, cpu) in self._last.items():
            used = cpu - self._start.get(pid, (role, 0.0))[1]
            self.by_role[role] = self.by_role.get(role, 0.0) + used


def _plasma_probe():
    """A callable giving the MiB held in the local Ray object store now (0.0 when Ray's private memory API
    cannot be read), or None when Ray is not running."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        state = get_state_from_address(ray.get_runtime_context().gcs_address)
    except Exception:  # a private API: its absence must not stop a bench
        return lambda: 0.0

    def used() -> float:
        try:
            return get_memory_info_reply(state, timeout_seconds=5).store_stats.object_store_bytes_used / 2**20
        except Exception:
            return 0.0

    return used


def top_roles(by_role: dict[str, float], n: int = 4) -> str:
    """``"ray::InferActor +412, driver +120"``: the ``n`` roles whose memory rose most (MiB)."""
    top = sorted(by_role.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{role} {mib:+,.0f}" for role, mib in top)


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
    """``ray.init(**init_kwargs)`` of a local instance, tried again when the raylet misses Ray's fixed 30 s start-up
    wait (a heavily loaded machine); returns the seconds it took, failed tries included."""
    import ray

    from xmw_ray.train.runner import PREEMPTION_WATCHER_ENV

    # a local instance, as ensure_ray starts one: Train's preemption watcher off (runner.PREEMPTION_WATCHER_ENV)
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
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

