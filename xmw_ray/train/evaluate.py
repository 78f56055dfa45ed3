"""Score a checkpoint on a store's split, streaming: predictions are made batch by batch and only per-entity
sums are kept (``MetricAccumulator``), so the store may be far larger than memory. On a Site store the per-day
predictions can also be written (``--predictions``): towers are small, and they are what a scientist plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmw_ray.config import validate
from xmw_ray.data import schema
from xmw_ray.data.contract import DAYS_IN_MONTH, DAYS_PER_YEAR
from xmw_ray.data.features import check_pairing
from xmw_ray.data.ray_datasets import sample_dataset, store_info
from xmw_ray.data.splits import SplitSpec
from xmw_ray.errors import XmwInputError
from xmw_ray.models.checkpoint import CONFIG_FILE, load_checkpoint_model, load_config_json
from xmw_ray.models.ensemble import ensemble_size
from xmw_ray.storage import refuse_foreign_file, write_text_atomic
from xmw_ray.train.metrics import METRIC_KEYS, MetricAccumulator


def predict_batch(model: torch.nn.Module, dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
    """Flux (mg CH4 m-2 d-1) for raw drivers, in inference mode."""
    with torch.inference_mode():
        return model(torch.tensor(dynamic, dtype=torch.float32), torch.tensor(static, dtype=torch.float32)).numpy()


#: The columns of a predictions file (flux in mg CH4 m-2 d-1; an empty observation is a day without one); an
#: ensemble of two or more members adds ``SPREAD_COLUMNS``, the lowest and highest member's prediction that day.
PREDICTION_COLUMNS = ("site", "date", "observed_mg_ch4_m2_d", "predicted_mg_ch4_m2_d")
SPREAD_COLUMNS = ("member_min", "member_max")
#: ``-MM-DD`` of each day of the stores' 365-day year (Feb 29 is not in them).
_MONTH_DAYS = np.array([f"-{m:02d}-{d:02d}" for m, n in enumerate(DAYS_IN_MONTH, 1) for d in range(1, n + 1)])


def check_predictions_path(path: str | Path, store_kind: str, store: str) -> Path:
    """Before any Ray work: ``--predictions`` needs a Site store (a Grid store's predictions are maps, ``xmw
    infer``), a folder that exists, and no file there unless it is a predictions file of ours to replace."""
    path = Path(path)
    if store_kind != "sites":
        raise XmwInputError(f"--predictions {path}: only for a Site store ({store} is a Grid store; its "
                            "predictions are maps: xmw infer)")
    if not path.parent.is_dir():
        raise XmwInputError(f"--predictions {path}: folder {path.parent} not found")
    header = ",".join(PREDICTION_COLUMNS).encode()
    refuse_foreign_file(path, lambda head: head.startswith(header), "a predictions file of xmw evaluate",
                        "--predictions")
    return path


def _dates(years: np.ndarray) -> np.ndarray:
    """``YYYY-MM-DD`` of every day of each 365-day year, ``(n, 365)``."""
    return np.char.add(np.asarray(years, dtype=int).astype(str)[:, None], _MONTH_DAYS[None, :])


def _prediction_lines(batch: dict[str, np.ndarray], pred: np.ndarray, spread: np.ndarray | None) -> list[str]:
    """CSV lines of one batch of site-years: one per day, observed or not."""
    n = pred.shape[0]
    cols = [np.repeat(np.asarray(batch[schema.ENTITY], dtype=str), DAYS_PER_YEAR), _dates(batch[schema.YEAR]).ravel()]
    values = [np.asarray(batch[schema.TARGET], dtype=np.float64).reshape(n * DAYS_PER_YEAR), pred.reshape(-1)]
    if spread is not None:
        values += [spread.min(axis=0).reshape(-1), spread.max(axis=0).reshape(-1)]
    text = [np.where(np.isfinite(v), np.char.mod("%.6g", np.nan_to_num(v)), "") for v in values]
    return [",".join(row) for row in zip(*cols, *text, strict=True)]


def evaluate_checkpoint(checkpoint: str, store: str, split: str = "test", aggregation: str = "daily",
                        batch_size: int = 256, predictions: str | Path | None = None) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``split`` of ``store`` (the checkpoint's own split rule; ``all``: every sample);
    with ``predictions`` (a Site store only) also every scored day's prediction, written whole to that CSV."""
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
    out_path = check_predictions_path(predictions, info.kind, store) if predictions is not None else None
    members = model.members if ensemble_size(model) else None
    ensure_ray()  # only once the checkpoint and the store are known to fit each other
    ds = sample_dataset(info, spec, split)
    acc = MetricAccumulator(aggregation)
    lines: list[str] = []
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        spread = None
        if out_path is not None and members is not None:
            spread = np.stack([predict_batch(m, batch[schema.DYNAMIC], batch[schema.STATIC]) for m in members])
            pred = spread.mean(axis=0)  # the ensemble's forward: the members' mean
        else:
            pred = predict_batch(model, batch[schema.DYNAMIC], batch[schema.STATIC])
        acc.update(pred, batch[schema.TARGET], batch[schema.ENTITY])
        if out_path is not None:
            lines += _prediction_lines(batch, pred, spread)
    if out_path is not None:
        header = ",".join(PREDICTION_COLUMNS + (SPREAD_COLUMNS if members is not None else ()))
        write_text_atomic(out_path, "\n".join([header, *lines]) + "\n")
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
