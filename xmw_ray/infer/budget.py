"""The global wetland CH4 budget (Tg CH4 yr-1), accumulated block by block as predictions arrive.

Budget of a year = Σ over cells and days of flux (mg CH4 m-2 d-1) × wetland area of that day's month (cell area ×
the month's wetland fraction, m²) × 1 day, in Tg (1 Tg = 1e15 mg), with a breakdown by latitude band of the cell
centre. The flux is per unit wetland area (``CH4_emission_intensity``), so without a wetland extent there is no
budget (``NO_EXTENT``). Nothing global is
ever held: each block adds its per-band sums (float64) to a five-number accumulator.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from xmw_ray.data.contract import MONTH_STARTS
from xmw_ray.data.layout import TRUTH_FILE
from xmw_ray.errors import XmwInputError

#: Milligrams in one teragram.
MG_PER_TG = 1e15
BUDGET_UNIT = "Tg CH4 yr-1"
#: Latitude bands (name, southern edge, northern edge) of the budget breakdown, south to north.
LAT_BANDS: tuple[tuple[str, float, float], ...] = (
    ("90S-30S", -90.0, -30.0),
    ("30S-0", -30.0, 0.0),
    ("0-30N", 0.0, 30.0),
    ("30N-60N", 30.0, 60.0),
    ("60N-90N", 60.0, 90.0),
)
BAND_NAMES = tuple(name for name, _, _ in LAT_BANDS)
CSV_COLUMNS = ("year", "global", *BAND_NAMES)
#: budget.csv's extra columns for an ensemble checkpoint: the lowest and highest of its members' global budgets and
#: their standard deviation (ddof 0), each member's budget computed from its own flux as the ensemble's is.
MEMBER_COLUMNS = ("global_member_min", "global_member_max", "global_member_std")
#: The literature range drawn on budget figures: bottom-up wetland emissions of the Global Methane Budget.
LITERATURE_BUDGET = {"central": 159.0, "low": 119.0, "high": 203.0,
                     "citation": "Saunois et al. 2024 (Global Methane Budget)"}
#: The key of the built-in world's ``truth.json`` (``layout.TRUTH_FILE``) that holds its true budget.
TRUE_BUDGET_KEY = "true_wetland_budget_Tg_per_year"  # the true world the towers observe, not the simulator
#: Why a Grid store without a wetland extent gets maps but no budget.
NO_EXTENT = "no wetland extent: budget not computed (prepare grid --wetland-area FILE)"


def band_of_lat(lat: np.ndarray) -> np.ndarray:
    """Index into ``LAT_BANDS`` of each latitude (a band holds ``south <= lat < north``; 90° is in the last)."""
    edges = np.array([south for _, south, _ in LAT_BANDS[1:]])
    return np.searchsorted(edges, np.asarray(lat, dtype=np.float64), side="right")


class BudgetAccumulator:
    """Per-band sums (mg CH4) of one year's emission over the blocks of cells added so far.

    Blocks arrive in whatever order the inference actors finish; each block's per-band sums are kept under its
    first cell and added up in cell order by ``tg``, so the budget is the same to the last bit on every run."""

    def __init__(self, wetland_area: np.ndarray, band: np.ndarray):
        """``wetland_area`` (m²) of every cell of the store by cell index, ``(12 months, cell)`` or static
        ``(cell,)``, and its ``band`` (index into ``LAT_BANDS``)."""
        area = np.asarray(wetland_area, dtype=np.float64)
        self._area = np.broadcast_to(area, (12, area.shape[-1]))
        self._band = np.asarray(band, dtype=np.int64)
        self._blocks: dict[int, np.ndarray] = {}  # first cell of a block -> its per-band mg

    def add(self, cells: np.ndarray, flux: np.ndarray) -> None:
        """Add cells ``cells`` (a block no other block overlaps) with daily flux ``(n, 365)`` in mg CH4 m-2 d-1."""
        self.add_monthly(cells, np.add.reduceat(np.asarray(flux, dtype=np.float64), MONTH_STARTS, axis=1))

    def add_monthly(self, cells: np.ndarray, monthly: np.ndarray) -> None:
        """Add cells ``cells`` with each month's sum of daily flux ``(n, 12)`` in mg CH4 m-2 (what an ensemble's
        actors return for each member)."""
        cells = np.asarray(cells)
        if len(cells) == 0:
            return
        per_cell = (np.asarray(monthly, dtype=np.float64) * self._area[:, cells].T).sum(axis=1)  # mg per year
        mg = np.bincount(self._band[cells], weights=per_cell, minlength=len(LAT_BANDS))
        key = int(cells[0])
        self._blocks[key] = self._blocks[key] + mg if key in self._blocks else mg

    def tg(self) -> dict[str, float]:
        """``{"global": …, band: …}`` in Tg CH4 yr-1."""
        mg = np.zeros(len(LAT_BANDS), dtype=np.float64)
        for key in sorted(self._blocks):
            mg += self._blocks[key]
        bands = mg / MG_PER_TG
        return {"global": float(bands.sum()), **{name: float(v) for name, v in zip(BAND_NAMES, bands, strict=True)}}


def member_range(members: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The spread of an ensemble's members' global budgets: ``MEMBER_COLUMNS`` (Tg CH4 yr-1; std with ddof 0)."""
    values = np.array([m["global"] for m in members], dtype=np.float64)
    return dict(zip(MEMBER_COLUMNS, (float(values.min()), float(values.max()), float(values.std())), strict=True))


def budget_csv(rows: Iterable[tuple[int, Mapping[str, float]]],
               members: Mapping[int, Sequence[Mapping[str, float]]] | None = None) -> str:
    """CSV text: one row per year, columns ``year, global, <bands>`` in Tg CH4 yr-1; for an ensemble (``members``:
    year -> each member's budget) also ``MEMBER_COLUMNS``, the members' range of the global budget."""
    columns = CSV_COLUMNS + (MEMBER_COLUMNS if members else ())
    out = io.StringIO()
    out.write(",".join(columns) + "\n")
    for year, tg in sorted(rows):
        values = [float(tg[k]) for k in CSV_COLUMNS[1:]]
        if members:
            values += list(member_range(members[year]).values())
        out.write(",".join([str(int(year)), *(repr(v) for v in values)]) + "\n")
    return out.getvalue()


def read_true_budget(path: str | Path, flag: str = "--truth") -> dict[int, float]:
    """The built-in world's true global budget by year (Tg CH4 yr-1) from its ``truth.json`` (``path`` is the file
    or the world folder ``xmw simulate --out`` wrote); what a budget figure draws as the truth line."""
    file = Path(path)
    if file.is_dir():
        file = file / TRUTH_FILE
    try:
        record = json.loads(file.read_text())
        return {int(year): float(tg) for year, tg in record[TRUE_BUDGET_KEY].items()}
    except FileNotFoundError as exc:
        raise XmwInputError(f"{flag} {path}: no {TRUTH_FILE} (give a world folder written by xmw simulate)") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise XmwInputError(f"{flag} {path}: not a built-in world's {TRUTH_FILE} (no {TRUE_BUDGET_KEY} by year)"
                            ) from exc
