"""Score a checkpoint on a store's split, streaming: predictions are made batch by batch and only per-entity
sums are kept (``MetricAccumulator``), so the store may be far larger than memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xmw_ray.config import validate
from xmw_ray.data import schema
from xmw_ray.data.features import check_pairing
from xmw_ray.data.ray_datasets import sample_dataset, store_info
from xmw_ray.data.splits import SplitSpec
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import CONFIG_FILE, load_checkpoint_model, load_config_json
from xmw_ray.train.metrics import METRIC_KEYS, MetricAccumulator


def predict_batch(model: torch.nn.Module, dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
    """Flux (mg CH4 m-2 d-1) for raw drivers, in inference mode."""
    with torch.inference_mode():
        return model(torch.tensor(dynamic, dtype=torch.float32), torch.tensor(static, dtype=torch.float32)).numpy()


def evaluate_checkpoint(checkpoint: str, store: str, split: str = "test", aggregation: str = "daily",
                        batch_size: int = 256) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``split`` of ``store`` (the checkpoint's own split rule; ``all``: every sample)."""
    from xmw_ray.train.runner import ensure_ray

    model = load_checkpoint_model(checkpoint)
    cfg = load_config_json(checkpoint)
    info = store_info(store)
    if len(info.dynamic_vars) != model.n_dynamic:
        raise XmwInputError(f"{store}: {len(info.dynamic_vars)} dynamic variables, the checkpoint expects "
                            f"{model.n_dynamic}")
    if len(info.static_vars) != model.n_static:
        raise XmwInputError(f"{store}: {len(info.static_vars)} static variables, the checkpoint expects "
                            f"{model.n_static}")
    check_pairing(model.features, f"checkpoint {checkpoint}", info.features, store,
                  "evaluate on a store prepared like the checkpoint's training store")
    data = cfg.get("data")
    rule = data.get("split") if isinstance(data, dict) else None
    if split != "all" and not isinstance(rule, dict):
        raise XmwInputError(f"{checkpoint}: its {CONFIG_FILE} records no data.split, so its {split} part is "
                            "unknown; use --split all")
    spec = validate(rule, SplitSpec, f"{checkpoint}/{CONFIG_FILE} data.split") if split != "all" else None
    ensure_ray()  # only once the checkpoint and the store are known to fit each other
    ds = sample_dataset(info, spec, split)
    acc = MetricAccumulator(aggregation)
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        pred = predict_batch(model, batch[schema.DYNAMIC], batch[schema.STATIC])
        acc.update(pred, batch[schema.TARGET], batch[schema.ENTITY])
    out = acc.result()
    out["checkpoint"] = str(checkpoint)
    out["store"] = str(store)
    out["split"] = split
    out["aggregation"] = aggregation
    return out


def format_report(report: dict[str, Any]) -> str:
    """A short human table: pooled and median rows, then one row per entity."""
    head = f"{'':<14}" + "".join(f"{k:>11}" for k in METRIC_KEYS)
    lines = [f"{report['checkpoint']} on {report['store']} ({report['split']}, {report['aggregation']})", head]

    def row(name: str, m: dict[str, float]) -> str:
        return f"{name:<14}" + "".join(f"{m[k]:>11.4g}" for k in METRIC_KEYS)

    lines.append(row("pooled", report["pooled"]))
    lines.append(row("median", report["median"]))
    for name, m in report["per_entity"].items():
        lines.append(row(name[:14], m))
    return "\n".join(lines)
