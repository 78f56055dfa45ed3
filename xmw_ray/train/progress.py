"""A training run's epochs on the command's terminal: ``run-name: k/N epochs, val NSE x``.

The training loop runs in Ray Train's worker processes (in the driver only in local mode), whose output does not
reach the terminal, and Ray Train V2 calls user callbacks in its controller actor. So the loop's rank-0 worker puts
each finished epoch on a small queue (a Ray actor holding no CPU) and a thread of the command's driver shows it.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from queue import Empty
from typing import Any

from xmw_ray.console import Progress, in_command


def epoch_line(msg: dict[str, Any]) -> str:
    """``val NSE 0.412, train loss 0.31`` (what a finished epoch says on the terminal)."""
    nse = msg.get("val_nse", math.nan)
    parts = [f"val NSE {nse:.3f}" if isinstance(nse, float) and math.isfinite(nse) else "no validation score"]
    if isinstance(msg.get("train_loss"), float):
        parts.append(f"train loss {msg['train_loss']:.3g}")
    if msg.get("done") and msg.get("epoch", 0) < msg.get("epochs", 0):
        parts.append("stopped early: validation stopped improving")
    return ", ".join(parts)


def report_epoch(queue: Any, epoch: int, epochs: int, metrics: dict[str, Any]) -> None:
    """The worker's side: one finished epoch (1-based ``epoch`` of ``epochs``); a lost message never fails training."""
    msg = {"epoch": epoch, "epochs": epochs, "done": bool(metrics.get("done"))}
    for key in ("val_nse", "train_loss"):
        if key in metrics:
            msg[key] = float(metrics[key])
    with contextlib.suppress(Exception):
        queue.put_nowait(msg)


@contextlib.contextmanager
def epoch_feed(label: str, epochs: int) -> Iterator[Any]:
    """Meanwhile, epochs reported to the yielded queue are shown as ``label: k/N epochs, …``; yields None (nothing
    to report to) outside a command's driver, e.g. inside a Tune trial, whose search shows trials instead."""
    if not in_command():
        yield None
        return
    from ray.util.queue import Queue

    queue = Queue(actor_options={"num_cpus": 0})
    bar = Progress(label, epochs, "epochs")
    last: list[dict[str, Any]] = []
    stop = threading.Event()

    def show(msg: dict[str, Any]) -> None:
        last[:] = [msg]
        bar.update(int(msg["epoch"]), epoch_line(msg))

    def drain() -> None:
        while not stop.is_set():
            try:
                show(queue.get(timeout=0.5))
            except Empty:
                continue
            except Exception:  # the queue is gone (Ray shutting down): nothing more will come
                stop.wait(1.0)

    thread = threading.Thread(target=drain, name="xmw-epoch-feed", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            while not queue.empty():
                show(queue.get_nowait())
        if last:
            bar.finish(int(last[0]["epoch"]), epoch_line(last[0]))
        with contextlib.suppress(Exception):
            queue.shutdown()
