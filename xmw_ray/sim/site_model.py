"""The process model at one tower: its own daily forcing on real calendar dates (leap days included).

Both the pseudo towers' "true world" and ``xmw simulate sites`` (the simulator at real towers' forcing) go through
here, so a site is always simulated the same way: vapour pressure from air temperature and VPD, CO2 of each
date's year, one spin-up pass over the first year of forcing, then the whole record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmw_ray.data.atmosphere import annual_concentrations
from xmw_ray.data.fluxnet import vapour_pressure_hpa
from xmw_ray.sim.process import CellProps, Forcing, ProcessParams, run, spin_up


@dataclass(frozen=True)
class SiteRun:
    """Daily outputs of one site ``(days,)``: emission (mg CH4 m⁻² d⁻¹), NPP (g C m⁻² d⁻¹), soil temperature
    (°C), water table (mm, positive above the surface), evapotranspiration (mm d⁻¹)."""

    ch4: np.ndarray
    npp: np.ndarray
    soil_temp: np.ndarray
    water_table: np.ndarray
    et: np.ndarray


def site_forcing(years: np.ndarray, ta: np.ndarray, p: np.ndarray, sw: np.ndarray, vpd: np.ndarray) -> Forcing:
    """A one-column ``Forcing`` from tower variables (TA °C, P mm d⁻¹, SW_IN W m⁻², VPD hPa) and each day's year."""
    vapr = vapour_pressure_hpa(ta, vpd)
    uniq, inverse = np.unique(np.asarray(years, dtype=np.int64), return_inverse=True)
    co2 = annual_concentrations(uniq)["CO2"][inverse]
    col = lambda a: np.asarray(a, dtype=np.float32).reshape(-1, 1)  # noqa: E731
    return Forcing(tair=col(ta), prec=col(np.maximum(p, 0.0)), solr=col(np.maximum(sw, 0.0)), vapr=col(vapr), co2=co2)


def run_site(forcing: Forcing, props: CellProps, params: ProcessParams) -> SiteRun:
    """Spin up on the first (up to) 365 days, then simulate every day of ``forcing`` for one site."""
    first = min(365, forcing.n_days)
    spin = Forcing(tair=forcing.tair[:first], prec=forcing.prec[:first], solr=forcing.solr[:first],
                   vapr=forcing.vapr[:first], co2=forcing.co2[:first])
    result, _ = run(forcing, props, params, spin_up(spin, props, params), diagnostics=True)
    return SiteRun(ch4=result.ch4[:, 0], npp=result.npp[:, 0], soil_temp=result.soil_temp[:, 0],
                   water_table=result.water_table[:, 0], et=result.et[:, 0])
