"""``xmw inspect``: what a prepared store holds (Grid or Site, detected), streamed block by block."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmw_ray.data import schema
from xmw_ray.data.grid_store import GridStore
from xmw_ray.data.site_store import SiteStore
from xmw_ray.data.stores import GridKind, SiteKind, detect_kind
from xmw_ray.errors import XmwInputError
from xmw_ray.storage import is_url


class _Ranges:
    """Running min / max / mean of each column over finite values."""

    def __init__(self, names: list[str]):
        d = len(names)
        self.names = names
        self.lo = np.full(d, np.inf)
        self.hi = np.full(d, -np.inf)
        self.total = np.zeros(d)
        self.count = np.zeros(d)

    def add(self, values: np.ndarray) -> None:
        x = values.reshape(-1, len(self.names)).astype(np.float64)
        ok = np.isfinite(x)
        self.lo = np.minimum(self.lo, np.where(ok, x, np.inf).min(axis=0, initial=np.inf))
        self.hi = np.maximum(self.hi, np.where(ok, x, -np.inf).max(axis=0, initial=-np.inf))
        self.total += np.where(ok, x, 0.0).sum(axis=0)
        self.count += ok.sum(axis=0)

    def lines(self, kind: str, units: dict[str, str]) -> list[str]:
        out = []
        for i, name in enumerate(self.names):
            mean = self.total[i] / self.count[i] if self.count[i] else float("nan")
            out.append(f"  {kind:<8} {name:<22} {units.get(name, ''):<16} "
                       f"min {self.lo[i]:.4g}  max {self.hi[i]:.4g}  mean {mean:.4g}")
        return out


def _summarise(blocks, dynamic_vars, static_vars, units) -> list[str]:
    dyn, sta = _Ranges(list(dynamic_vars)), _Ranges(list(static_vars))
    tgt = _Ranges([schema.TARGET])
    n_days = 0
    for block in blocks:
        dyn.add(block[schema.DYNAMIC])
        sta.add(block[schema.STATIC])
        tgt.add(block[schema.TARGET])
        n_days += block[schema.TARGET].size
    lines = ["features:"]
    lines += dyn.lines("dynamic", units) + sta.lines("static", units)
    tunits = {schema.TARGET: units.get("CH4_emission", "")}
    lines += tgt.lines("target", tunits)
    missing = 1.0 - tgt.count[0] / n_days if n_days else float("nan")
    lines.append(f"target missing fraction: {missing:.4f} ({int(n_days - tgt.count[0])} of {n_days} days)")
    return lines


def inspect_store(path: str | Path) -> str:
    """A text report of the store at ``path``."""
    path = str(path)
    if not is_url(path) and not Path(path).exists():
        raise XmwInputError(f"{path}: no such store")
    kind = detect_kind(path)
    if kind == GridKind.name:
        g = GridStore.open(path)
        head = [
            f"Grid store {path}",
            f"grid: {g.res} deg ({g.nlat} x {g.nlon}); cells: {g.n_cells} valid; "
            f"chunks: {g.n_chunks} of {g.cells_per_chunk} cells",
            f"years: {g.years[0]}-{g.years[-1]} ({len(g.years)}); samples: {g.n_cells * len(g.years)}",
            "wetland extent: " + (f"{ext['source']} ({ext['variable']}, {ext['time']})"
                                  if (ext := g.attrs.get("wetland_extent")) else "none (no budget)"),
        ]
        blocks = (g.read_block(y, c) for y in range(len(g.years)) for c in range(g.n_chunks))
        return "\n".join(head + _summarise(blocks, g.dynamic_vars, g.static_vars, g.units))
    if kind == SiteKind.name:
        s = SiteStore.open(path)
        head = [f"Site store {path}", f"target: {s.meta['target']}; sites: {len(s.sites)}; "
                f"samples: {s.table().num_rows}"]
        head += [f"  {site}: {', '.join(map(str, s.years_of(site)))}" for site in s.sites]
        dropped = {k: v for k, v in s.meta.get("dropped", {}).items() if v}
        head.append(f"dropped site-years: {dropped or 'none'}")
        return "\n".join(head + _summarise([s.samples()], s.dynamic_vars, s.static_vars, s.units))
    raise XmwInputError(f"{path}: not a Grid store ({GridKind.commit_file}) nor a Site store ({SiteKind.commit_file})")
