"""Seeded random streams and smooth random fields on the sphere, the raw material of the built-in world.

A smooth field is a sum of a few dozen random plane waves evaluated at the cells' 3-D unit vectors,
``f(p) = sqrt(2/K) Σ_k cos(2π ω_k·p + φ_k)``, with wave vectors ``ω_k`` of random direction and a magnitude in a
chosen band (cycles per Earth radius). It has unit variance, no seam at the date line or the poles, and is a
continuous function of position, so the same seed gives the same continents and weather patterns at any
resolution.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent generator for one purpose (``keys``), so adding a use never shifts another's numbers."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(words)


def unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """``(n, 3)`` Cartesian unit vectors of points given in degrees."""
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def wave_set(rng: np.random.Generator, n_waves: int, k_min: float, k_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Random wave vectors ``(n_waves, 3)`` (magnitudes uniform in ``[k_min, k_max]``) and phases ``(n_waves,)``."""
    direction = rng.standard_normal((n_waves, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    magnitude = rng.uniform(k_min, k_max, size=(n_waves, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n_waves)
    return direction * magnitude, phase


def eval_waves(xyz: np.ndarray, vectors: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Unit-variance field at ``xyz`` ``(n, 3)`` from one wave set; float64 ``(n,)``."""
    arg = 2.0 * np.pi * (xyz @ vectors.T) + phase
    return np.cos(arg).sum(axis=1) * np.sqrt(2.0 / len(phase))


def smooth_field(rng: np.random.Generator, xyz: np.ndarray, k_min: float, k_max: float, n_waves: int = 32) -> np.ndarray:
    """One unit-variance smooth random field at ``xyz`` with wavenumbers in ``[k_min, k_max]``."""
    vectors, phase = wave_set(rng, n_waves, k_min, k_max)
    return eval_waves(xyz, vectors, phase)


def mode_basis(rng: np.random.Generator, xyz: np.ndarray, n_modes: int, k_min: float, k_max: float,
               n_waves: int = 12) -> np.ndarray:
    """``(n, n_modes)`` float32: independent smooth unit-variance fields, the spatial patterns of weather anomalies."""
    out = np.empty((len(xyz), n_modes), dtype=np.float32)
    for m in range(n_modes):
        out[:, m] = smooth_field(rng, xyz, k_min, k_max, n_waves)
    return out

