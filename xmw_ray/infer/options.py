"""Defaults of ``xmw infer``, importing nothing, so that building the command-line parser stays fast."""

from __future__ import annotations

#: Cell-years per model call of an inference actor.
DEFAULT_BATCH_SIZE = 2048
