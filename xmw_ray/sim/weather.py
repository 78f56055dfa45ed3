"""Seeded, spatially coherent daily weather for the land cells of the built-in world.

Per cell and day (d = 1…365), on top of the mean climate of ``climatology.py``:

- air temperature ``T = T̄ + A cos(2π(d − d_peak)/365) + 0.018 (year − 2000) + σ_T (0.9 a_T + 0.45 ε_T)``:
  ``a_T`` is a sum of large-scale anomaly patterns (smooth random fields, wavenumber 0.7–2 per Earth radius,
  i.e. wavelengths of 3 000–9 000 km)
  whose amplitudes are AR(1) series, half with lag-1 correlation 0.8 (synoptic) and half 0.97 (persistent
  anomalies); ``ε_T`` is local AR(1) noise (0.6); ``σ_T = 1 + 3 s (0.5 + 0.5 c)`` grows with latitude and
  continentality. Anomaly amplitudes run continuously from 1900, so a year's large-scale weather does not depend
  on where a run starts.
- precipitation with wet and dry spells: a latent Gaussian ``ζ = 0.75 a_P + 0.66 ε_P`` (patterns of wavenumber
  1.2–3.5, local AR(1) 0.5) makes a wet day where ``ζ`` exceeds the quantile of the day's wet-day probability
  ``p = clip(0.08 + 0.6 P̄/(P̄ + 4), 0.03, 0.75)``; the amount is exponential with mean ``P̄/p`` (so the mean is P̄).
- shortwave ``S = Q_TOA · τ``, ``τ = (0.74 + 2·10⁻⁵ min(z, 2000)) (1 − 0.6 cloud)`` ≤ 0.78, with top-of-atmosphere
  daily insolation ``Q_TOA`` from solar geometry (``xmw_ray.data.solar``: latitude, declination, sunset hour angle,
  orbital eccentricity)
  and ``cloud = clip(0.2 + 0.45 wet + 0.12 ζ + 0.25 (RH̄ − 0.5), 0, 1)``.
- vapour pressure ``e = RH · e_sat(T)`` with ``RH = clip(RH̄ − 0.05 + 0.12 wet + 0.06 η, 0.05, 0.97)`` and the
  system's one saturation formula (Magnus, ``xmw_ray.data.fluxnet``), so e never exceeds saturation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmw_ray.data.fluxnet import saturation_vapour_pressure_hpa
from xmw_ray.data.solar import toa_insolation
from xmw_ray.sim.climatology import DAYS, Climatology
from xmw_ray.sim.fields import mode_basis, stream

#: Anomaly amplitude series start here; years before it are not simulated.
FIRST_YEAR = 1900
LAST_YEAR = 2100
_N_MODES = 24
_MODE_PHI = np.where(np.arange(_N_MODES) < _N_MODES // 2, 0.8, 0.97)


@dataclass(frozen=True)
class Weather:
    """One year of daily weather, time-major ``(365, n)`` float32."""

    tair: np.ndarray
    prec: np.ndarray
    solr: np.ndarray
    vapr: np.ndarray


class ModeSeries:
    """AR(1) amplitudes of the large-scale anomaly patterns, continuous from ``FIRST_YEAR``."""

    def __init__(self, seed: int, name: str):
        self.seed, self.name = seed, name
        self._year = FIRST_YEAR - 1
        self._end = stream(seed, name, "init").standard_normal(_N_MODES)
        self._last = np.empty((365, _N_MODES))

    def _advance(self) -> np.ndarray:
        self._year += 1
        out = stream(self.seed, self.name, self._year).standard_normal((365, _N_MODES)) * np.sqrt(1.0 - _MODE_PHI**2)
        prev = self._end
        for d in range(365):  # a plain loop: (n_modes,) vectors are too small for BLAS to pay off
            out[d] += _MODE_PHI * prev
            prev = out[d]
        self._end = out[-1].copy()
        self._last = out
        return out

    def year(self, year: int) -> np.ndarray:
        """``(365, n_modes)`` amplitudes of ``year`` (years must be requested in increasing order)."""
        if year == self._year:
            return self._last
        if year < self._year:  # restart: a fresh pass from the first year
            self.__init__(self.seed, self.name)
        while self._year < year:
            self._advance()
        return self._last


def _local_ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """``(365, n)`` float32 unit-variance AR(1) noise, started from its stationary distribution."""
    out = rng.standard_normal((365, n), dtype=np.float32)
    c = np.float32(np.sqrt(1.0 - phi**2))
    out[1:] *= c
    for d in range(1, 365):
        out[d] += np.float32(phi) * out[d - 1]
    return out


class WeatherGenerator:
    """Generates one year at a time for fixed land cells (see the module docstring for the equations)."""

    def __init__(self, seed: int, clim: Climatology, xyz: np.ndarray, cont: np.ndarray, elev: np.ndarray):
        self.seed = seed
        self.clim = clim
        self.n = len(clim.lat)
        s = np.abs(np.sin(np.deg2rad(clim.lat)))
        self.sigma_t = (1.0 + 3.0 * s * (0.5 + 0.5 * cont)).astype(np.float32)
        self.basis_t = mode_basis(stream(seed, "basis-temperature"), xyz, _N_MODES, 0.7, 2.0) / np.sqrt(_N_MODES)
        self.basis_p = mode_basis(stream(seed, "basis-precip"), xyz, _N_MODES, 1.2, 3.5) / np.sqrt(_N_MODES)
        self.modes_t = ModeSeries(seed, "modes-temperature")
        self.modes_p = ModeSeries(seed, "modes-precip")
        self.transmit = (0.74 + 2e-5 * np.minimum(elev, 2000.0)).astype(np.float32)
        lat_u, self._lat_row = np.unique(clim.lat, return_inverse=True)
        self._toa = toa_insolation(lat_u[None, :], DAYS[:, None]).astype(np.float32)  # (365, n_lat)
        self._seasonal_t = clim.seasonal_temperature().astype(np.float32)
        self._clim_p = clim.daily_precip().astype(np.float32)

    def year(self, year: int) -> Weather:
        if not FIRST_YEAR <= year <= LAST_YEAR:
            raise ValueError(f"year {year} outside {FIRST_YEAR}-{LAST_YEAR}")
        rng = stream(self.seed, "local-weather", year)
        n = self.n
        # temperature
        a_t = self.modes_t.year(year).astype(np.float32) @ self.basis_t.T
        tair = a_t
        tair *= 0.9
        tair += 0.45 * _local_ar1(rng, n, 0.6)
        tair *= self.sigma_t
        tair += self._seasonal_t
        tair += np.float32(0.018 * (year - 2000))
        # precipitation occurrence (latent Gaussian, logistic approximation of its quantile) and amount
        zeta = self.modes_p.year(year).astype(np.float32) @ self.basis_p.T
        zeta *= 0.75
        zeta += 0.66 * _local_ar1(rng, n, 0.5)
        pc = self._clim_p
        p_wet = np.clip(0.08 + 0.6 * pc / (pc + 4.0), 0.03, 0.75)
        threshold = np.log((1.0 - p_wet) / p_wet) / 1.702
        wet = zeta > threshold
        amount = rng.standard_exponential((365, n), dtype=np.float32)
        prec = np.where(wet, amount * (pc / p_wet), np.float32(0.0)).astype(np.float32)
        del amount, threshold
        wet_f = wet.astype(np.float32)
        # radiation
        cloud = np.clip(0.2 + 0.45 * wet_f + 0.12 * zeta + np.float32(0.25) * (self.clim.rh_mean.astype(np.float32) - 0.5),
                        0.0, 1.0)
        solr = self._toa[:, self._lat_row] * self.transmit * (1.0 - 0.6 * cloud)
        del cloud
        # humidity
        rh = np.clip(self.clim.rh_mean.astype(np.float32) - 0.05 + 0.12 * wet_f
                     + 0.06 * rng.standard_normal((365, n), dtype=np.float32), 0.05, 0.97)
        vapr = rh * saturation_vapour_pressure_hpa(tair)
        return Weather(tair=tair.astype(np.float32, copy=False), prec=prec, solr=solr.astype(np.float32, copy=False),
                       vapr=vapr.astype(np.float32, copy=False))
