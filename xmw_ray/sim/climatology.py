"""The built-in world's mean climate per land cell: temperature cycle, precipitation regime, humidity.

Equations (φ latitude, s = |sin φ|, c continentality 0 coast … 1 interior, z elevation in m, g_* smooth unit noise):

- annual mean air temperature  ``T̄ = T_zonal(|φ|) − 2 c − 0.0065 z + 1.5 g_T`` (°C; lapse rate 6.5 K km⁻¹), with
  ``T_zonal`` interpolated through 27, 25, 20, 14, 7, 0, −9, −18, −25 °C at 0, 20, …, 80, 90° (roughly the
  observed zonal-mean land temperatures)
- seasonal half-range          ``A = (1 + 24 s^1.5)(0.35 + 0.75 c)``  (K; maritime climates are damped)
- warmest day                  day 200 (north) / 18 (south), 10·(1 − c) days later at the coast
- climatological precipitation (mm d⁻¹) on day d: an ITCZ band that follows the sun plus mid-latitude storm
  tracks, drier inland and wetter on mountains:
  ``P̄(d) = [2400 e^{−(φ−φ_I(d))²/(2·9²)} + 700 e^{−(|φ|−45)²/(2·12²)} + 100] / 365 · (1.25 − 0.75 c)
  · (1 + 0.3 z/1000) · e^{0.35 g_P}``, with ``φ_I(d) = 5 + 10 cos(2π(d − 200)/365)``
- mean relative humidity       ``RH = 0.25 + 0.6 P_ann / (P_ann + 600)``
- annual potential evapotranspiration (for aridity and wetland siting) from degree-days of the mean cycle:
  ``PET_ann = 100 + 0.15 Σ_d max(T̄(d), 0)`` mm (≈ 1500 mm in the humid tropics, ≈ 250 mm in the boreal zone)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from xmw_ray.sim.fields import smooth_field, stream

DAYS = np.arange(1, 366)
_ZONAL_LAT = np.array([0.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0])
_ZONAL_T = np.array([27.0, 25.0, 20.0, 14.0, 7.0, 0.0, -9.0, -18.0, -25.0])


@dataclass(frozen=True)
class Climatology:
    """Per-land-cell climate parameters (all ``(n,)`` float64)."""

    lat: np.ndarray
    t_mean: np.ndarray
    t_amp: np.ndarray
    t_peak: np.ndarray
    p_factor: np.ndarray
    rh_mean: np.ndarray
    p_ann: np.ndarray
    pet_ann: np.ndarray

    def seasonal_temperature(self, days: np.ndarray = DAYS) -> np.ndarray:
        """``(days, n)`` climatological daily air temperature (°C)."""
        phase = 2.0 * np.pi * (days[:, None] - self.t_peak[None, :]) / 365.0
        return self.t_mean[None, :] + self.t_amp[None, :] * np.cos(phase)

    def daily_precip(self, days: np.ndarray = DAYS) -> np.ndarray:
        """``(days, n)`` climatological precipitation (mm d⁻¹)."""
        return _zonal_precip(self.lat, days) * self.p_factor[None, :]

    @property
    def warmest(self) -> np.ndarray:
        """Mean temperature of the warmest month (°C), the monthly mean of a cosine peak ≈ 0.97 A."""
        return self.t_mean + 0.97 * self.t_amp

    @property
    def coldest(self) -> np.ndarray:
        return self.t_mean - 0.97 * self.t_amp

    @property
    def wetness(self) -> np.ndarray:
        """Aridity ratio P_ann / PET_ann (< 0.2 desert, > 1 humid)."""
        return self.p_ann / self.pet_ann


def _zonal_precip(lat: np.ndarray, days: np.ndarray) -> np.ndarray:
    """``(days, n)`` zonal precipitation profile (mm d⁻¹) before the cell's own factor."""
    itcz = 5.0 + 10.0 * np.cos(2.0 * np.pi * (days[:, None] - 200.0) / 365.0)
    lat = lat[None, :]
    zonal = (2400.0 * np.exp(-((lat - itcz) ** 2) / (2 * 9.0**2))
             + 700.0 * np.exp(-((np.abs(lat) - 45.0) ** 2) / (2 * 12.0**2)) + 100.0)
    return zonal / 365.0


def build_climatology(seed: int, lat: np.ndarray, xyz: np.ndarray, cont: np.ndarray, elev: np.ndarray) -> Climatology:
    """The mean climate of each land cell (see the module docstring for the equations)."""
    s = np.abs(np.sin(np.deg2rad(lat)))
    g_t = smooth_field(stream(seed, "clim-temperature"), xyz, 2.0, 5.0)
    g_p = smooth_field(stream(seed, "clim-precip"), xyz, 2.0, 6.0)
    t_zonal = np.interp(np.abs(lat), _ZONAL_LAT, _ZONAL_T)
    t_mean = t_zonal - 2.0 * cont - 0.0065 * elev + 1.5 * g_t
    t_amp = (1.0 + 24.0 * s**1.5) * (0.35 + 0.75 * cont)
    t_peak = np.where(lat >= 0, 200.0, 18.0) + 10.0 * (1.0 - cont)
    p_factor = (1.25 - 0.75 * cont) * (1.0 + 0.3 * elev / 1000.0) * np.exp(0.35 * g_p)
    lat = np.asarray(lat, dtype=np.float64)
    p_ann = np.zeros_like(t_mean)
    for month_days in np.array_split(DAYS, 12):  # a month at a time keeps memory at (31, n)
        p_ann += _zonal_precip(lat, month_days).sum(axis=0) * p_factor
    rh = 0.25 + 0.6 * p_ann / (p_ann + 600.0)
    clim = Climatology(lat=lat, t_mean=t_mean, t_amp=t_amp, t_peak=t_peak, p_factor=p_factor, rh_mean=rh,
                       p_ann=p_ann, pet_ann=np.zeros_like(p_ann))
    degree_days = np.zeros_like(t_mean)
    for month_days in np.array_split(DAYS, 12):
        degree_days += np.maximum(clim.seasonal_temperature(month_days), 0.0).sum(axis=0)
    return replace(clim, pet_ann=100.0 + 0.15 * degree_days)
