"""The sample schema every Ray Data pipeline yields, from the Grid store and the Site store alike.

A sample is one entity (grid cell or tower) × one 365-day year:

- ``dynamic``: float32 ``(365, n_dynamic)`` daily drivers (``DYNAMIC_VARS`` order unless the store says otherwise)
- ``static``:  float32 ``(n_static,)``  static maps followed by the year's annual concentrations
- ``target``:  float32 ``(365,)``  flux in mg CH4 m-2 d-1, NaN where not observed
- ``entity``:  str  ``"c<ilat>_<ilon>"`` for a grid cell, the FLUXNET site id for a tower
- ``year``:    int64
"""

from __future__ import annotations

DYNAMIC = "dynamic"
STATIC = "static"
TARGET = "target"
ENTITY = "entity"
YEAR = "year"
SAMPLE_COLUMNS = (DYNAMIC, STATIC, TARGET, ENTITY, YEAR)


def cell_entity(ilat: int, ilon: int) -> str:
    """The entity id of a grid cell."""
    return f"c{int(ilat)}_{int(ilon)}"
