"""X-MethaneWet's published per-tower facts carried as presets in ``configs/presets/`` (see its README.md)."""

from __future__ import annotations

import csv
from pathlib import Path

from xmw_ray.errors import XmwInputError, reading

#: The repository's ``configs/`` folder (next to the package in a source checkout): experiment presets and these.
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
PRESETS_DIR = CONFIGS_DIR / "presets"
XMW_SITE_FOLDS = PRESETS_DIR / "xmw_site_folds.csv"
XMW_WETLAND_TYPES = PRESETS_DIR / "xmw_site_wetland_type.csv"


def read_site_ints(path: str | Path, column: str) -> dict[str, int]:
    """``site_id → int`` from a CSV with columns ``site_id`` and ``column``."""
    path = Path(path)
    if not path.is_file():
        raise XmwInputError(f"{path}: file not found")
    with reading(path), path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "site_id" not in reader.fieldnames or column not in reader.fieldnames:
            raise XmwInputError(f"{path}: expected columns site_id and {column}")
        out: dict[str, int] = {}
        for row in reader:
            n = reader.line_num
            missing = [c for c in ("site_id", column) if row.get(c) is None]
            if missing:  # a short row: DictReader fills the absent fields with None
                raise XmwInputError(f"{path}: line {n}: {missing[0]} is missing")
            try:
                out[row["site_id"].strip()] = int(row[column])
            except ValueError:
                raise XmwInputError(f"{path}: line {n}: {column} is not an integer ({row[column]!r})") from None
    return out


def xmw_site_folds() -> dict[str, int]:
    """X-MethaneWet's five tower folds (``site → fold 0..4``)."""
    return read_site_ints(XMW_SITE_FOLDS, "fold")


def xmw_wetland_types() -> dict[str, int]:
    """X-MethaneWet's per-tower ``wetlandtype`` override."""
    return read_site_ints(XMW_WETLAND_TYPES, "wetlandtype")


def resolve_site_ints(spec: str | Path, column: str) -> dict[str, int]:
    """``"xmw"`` → the X-MethaneWet preset for ``column``; anything else is a CSV path."""
    if str(spec) == "xmw":
        return xmw_site_folds() if column == "fold" else xmw_wetland_types()
    return read_site_ints(spec, column)
