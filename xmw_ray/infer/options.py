"""Defaults of ``xmw infer``, importing nothing, so that building the command-line parser stays fast."""

from __future__ import annotations

#: Cell-years per model call of an inference actor.
DEFAULT_BATCH_SIZE = 2048
#: Colour scales of the flux maps (``--map-scale``), one scale shared by every year's map.
MAP_SCALES = ("percentile", "linear", "log")
DEFAULT_MAP_SCALE = "percentile"
