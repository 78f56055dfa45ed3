"""Solar geometry from latitude and day: the project's one place for the season.

Why: a season is where the sun is in a tower's sky, not a calendar date. A southern-hemisphere tower's July is
winter; the bare day of year would tell a model the opposite. Everything here is a function of latitude and day
(1..365), so a tower at -50° on 1 January gets what a tower at +50° gets on 1 July (up to the Earth's orbital
eccentricity, which TOA radiation keeps: the Earth is nearest the sun in early January).

Formulas (FAO-56, Allen et al. 1998, eqs. 21-25 and 34): declination δ = 0.409 sin(2πJ/365 − 1.39), sunset hour
angle ω_s = arccos(−tan φ tan δ) (clipped: 0 in polar night, π in polar day), day length 24 ω_s / π hours, daily
mean top-of-atmosphere shortwave S₀/π · d_r (ω_s sin φ sin δ + cos φ cos δ sin ω_s) with d_r = 1 + 0.033 cos(2πJ/365).
"""

from __future__ import annotations

import numpy as np

from xmw_ray.data.contract import DAYS_PER_YEAR

SOLAR_CONSTANT = 1361.0  # W m-2
#: Season inputs, in slot order: day length (h), daily-mean TOA shortwave (W m-2), and whether the noon sun climbs
#: (+1, the tower's spring half-year: days lengthening) or sinks (-1, autumn half-year); 0 on the equator.
SEASON_VARS = ("DAY_LENGTH", "TOA_RAD", "SUN_TREND")
SEASON_UNITS = {"DAY_LENGTH": "h", "TOA_RAD": "W m-2", "SUN_TREND": "1 (sign)"}
SEASON_MEANINGS = {"DAY_LENGTH": "day_length", "TOA_RAD": "toa_shortwave_radiation", "SUN_TREND": "sun_trend"}


def _angle(doy: np.ndarray) -> np.ndarray:
    return 2.0 * np.pi * np.asarray(doy, dtype=np.float64) / 365.0


def declination(doy: np.ndarray) -> np.ndarray:
    """Solar declination (radians) on day ``doy`` (1..365)."""
    return 0.409 * np.sin(_angle(doy) - 1.39)


def _sunset_hour_angle(phi: np.ndarray, decl: np.ndarray) -> np.ndarray:
    return np.arccos(np.clip(-np.tan(phi) * np.tan(decl), -1.0, 1.0))


def day_length_hours(lat_deg: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Hours from sunrise to sunset (0 in polar night, 24 in polar day, 12 on the equator), broadcasting
    ``lat_deg`` against ``doy`` (1..365)."""
    phi = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    return 24.0 / np.pi * _sunset_hour_angle(phi, declination(doy))


def toa_insolation(lat_deg: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Daily-mean top-of-atmosphere shortwave (W m⁻²), broadcasting ``lat_deg`` against ``doy`` (1…365)."""
    phi = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    decl = declination(doy)
    dr = 1.0 + 0.033 * np.cos(_angle(doy))
    ws = _sunset_hour_angle(phi, decl)
    q = SOLAR_CONSTANT / np.pi * dr * (ws * np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.sin(ws))
    return np.maximum(q, 0.0)


def sun_trend(lat_deg: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """+1 while the noon sun climbs in the sky at ``lat_deg`` (days lengthening, also through polar day and night),
    -1 while it sinks, 0 on the equator: sign(φ) · sign(dδ/dJ). Tells spring from autumn, which day length and
    TOA radiation alone (symmetric about the solstice) cannot."""
    slope = np.cos(_angle(doy) - 1.39)
    return np.sign(np.asarray(lat_deg, dtype=np.float64)) * np.sign(slope)


def season_features(lat_deg: float) -> np.ndarray:
    """``(365, len(SEASON_VARS))`` season inputs of a tower at ``lat_deg`` for doy 1..365 (``SEASON_VARS``)."""
    doy = np.arange(1, DAYS_PER_YEAR + 1)
    return np.stack([day_length_hours(lat_deg, doy), toa_insolation(lat_deg, doy), sun_trend(lat_deg, doy)],
                    axis=-1)
