"""Choices and defaults of ``xmw prepare``: one place for each, importing nothing, so that building the
command-line parser (``xmw --help``) does not load numpy, pandas or zarr. The store builders import them from
here too."""

from __future__ import annotations

#: ``--target``: FCH4 (measured only), FCH4_F (gap-filled), xmw-fill (FCH4_F, remaining gaps
#: from FCH4_F_ANNOPTLM).
TARGET_CHOICES = ("FCH4", "FCH4_F", "xmw-fill")
DEFAULT_TARGET = TARGET_CHOICES[0]
#: ``--drivers``: X-MethaneWet's five drivers, the towers' own columns, or the slots of a Grid store a tower can
#: supply without one (``map``: daily weather, wetland type, CH4/CO2; a model on it maps a Grid store).
DRIVER_SETS = ("xmw", "tower", "map")
DEFAULT_DRIVERS = DRIVER_SETS[0]
#: Grid store layout: cells per Zarr chunk along the cell axis, chunks per shard file.
DEFAULT_CELLS_PER_CHUNK = 256
DEFAULT_CHUNKS_PER_SHARD = 16
#: Site store: longest driver gap (days) filled by interpolation.
DEFAULT_MAX_INPUT_GAP = 3
