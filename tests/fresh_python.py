"""Run a snippet in a fresh interpreter: measurements of a process's own memory or CPU that a test process's state
(its Ray children, its allocations so far) would move."""

from __future__ import annotations

import subprocess
import sys


def run_fresh_python(code: str, timeout: float = 120) -> str:
    """``python -c code`` in a new interpreter; its stdout (the test fails with the snippet's stderr if it fails)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
