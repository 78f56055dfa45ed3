"""PNG figures of a flux-map store: one annual-mean map per year and the global budget over the years.

Figures are drawn with matplotlib's Agg canvas (no display, no global backend switch) and written through a
temporary name, so a crash never leaves a truncated PNG.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from xmw_ray.data.contract import FLUX_UNIT
from xmw_ray.infer.budget import BAND_NAMES, BUDGET_UNIT
from xmw_ray.infer.maps import put_bytes


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def annual_map_png(annual: np.ndarray, year: int, path: str) -> None:
    """Map of one year's annual-mean flux ``(nlat, nlon)`` (row 0 = south, column 0 = 180°W); NaN left blank."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5))
    ax = fig.add_subplot()
    values = np.ma.masked_invalid(annual)
    lo, hi = np.nanpercentile(annual, [1, 99]) if values.count() else (0.0, 1.0)
    vmin = min(0.0, float(lo))
    im = ax.imshow(values, origin="lower", extent=(-180, 180, -90, 90), cmap="viridis", vmin=vmin,
                   vmax=max(float(hi), vmin + 1e-12), interpolation="nearest")
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(f"Annual mean wetland CH4 emission, {year}")
    fig.colorbar(im, ax=ax, shrink=0.8, label=FLUX_UNIT)
    put_bytes(path, _png(fig))


def budget_png(rows: Sequence[tuple[int, Mapping[str, float]]], path: str) -> None:
    """Global budget and its latitude bands over the years (Tg CH4 yr-1)."""
    from matplotlib.figure import Figure

    rows = sorted(rows)
    years = [y for y, _ in rows]
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    ax.plot(years, [r["global"] for _, r in rows], "k-o", label="global", linewidth=2)
    for band in BAND_NAMES:
        ax.plot(years, [r[band] for _, r in rows], "-o", label=band, markersize=3)
    ax.set_xlabel("year")
    ax.set_ylabel(BUDGET_UNIT)
    ax.set_title("Wetland CH4 budget")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    put_bytes(path, _png(fig))
