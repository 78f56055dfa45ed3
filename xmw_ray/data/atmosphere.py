"""Global annual-mean atmospheric CH4 (ppb) and CO2 (ppm): the annual drivers when no TEM-MDM files give them.

The table follows the NOAA GML global marine-surface annual means (CO2 1979–2018; CH4 1984–2018, the start of
NOAA's global CH4 record). CH4 for 1979–1983 is interpolated linearly between 1575 ppb (1979) and NOAA's 1984
value. Values are rounded to 0.1; they serve as a site-level driver, not as a reference record. Years outside
1979–2018 are extended linearly with the mean growth of the nearest ten tabulated years.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

TABLE_FIRST_YEAR = 1979

_CO2_PPM = np.array([
    336.8, 338.9, 340.1, 340.9, 342.5, 344.1, 345.5, 347.0, 348.7, 351.2,  # 1979-1988
    352.8, 354.1, 355.4, 356.1, 356.8, 358.3, 360.2, 361.9, 363.1, 365.7,  # 1989-1998
    367.8, 369.0, 370.6, 372.6, 375.1, 377.0, 379.0, 381.2, 382.9, 385.0,  # 1999-2008
    386.5, 388.8, 390.6, 392.7, 395.4, 397.3, 399.7, 403.1, 405.2, 407.6,  # 2009-2018
])

_CH4_PPB = np.array([
    1575.0, 1589.0, 1603.0, 1617.0, 1631.0, 1644.7, 1657.3, 1670.1, 1682.7, 1693.2,  # 1979-1988
    1704.6, 1714.5, 1724.1, 1735.3, 1736.5, 1742.1, 1748.9, 1751.4, 1754.6, 1765.7,  # 1989-1998
    1772.5, 1773.2, 1771.2, 1772.7, 1777.3, 1777.0, 1774.2, 1775.0, 1781.5, 1787.0,  # 1999-2008
    1793.5, 1798.6, 1803.1, 1808.1, 1813.5, 1822.6, 1834.2, 1841.9, 1849.1, 1857.3,  # 2009-2018
])


def _extend(table: np.ndarray, years: np.ndarray) -> np.ndarray:
    idx = years - TABLE_FIRST_YEAR
    n = len(table)
    out = table[np.clip(idx, 0, n - 1)].astype(np.float64)
    early_slope = (table[10] - table[0]) / 10.0
    late_slope = (table[-1] - table[-11]) / 10.0
    out = np.where(idx < 0, table[0] + idx * early_slope, out)
    return np.where(idx >= n, table[-1] + (idx - (n - 1)) * late_slope, out)


def annual_concentrations(years: Iterable[int]) -> dict[str, np.ndarray]:
    """``{"CH4": ppb, "CO2": ppm}`` float64 arrays, one value per requested year."""
    y = np.asarray(list(years), dtype=np.int64)
    return {"CH4": _extend(_CH4_PPB, y), "CO2": _extend(_CO2_PPM, y)}
