"""Fresh processes: run a snippet in a new interpreter (measurements of a process's own memory or CPU that a test
process's state, its Ray children or its allocations so far, would move), and recognise what Ray prints on the
terminal of a command that starts its own Ray."""

from __future__ import annotations

import re
import subprocess
import sys

#: A line Ray's own Python logging writes (``2026-11-26 03:55:11,202	WARNING authentication_token_setup.py:85 --``).
RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING|ERROR)\s+\S+:\d+ -- ", re.M)
#: Other chatter Ray prints on a driver's terminal: raylet warnings, Tune's tables, C++ log lines, tracebacks.
RAY_CHATTER = re.compile(r"\(raylet\)|Trial status:|Unhandled error|Traceback|^\[\d{4}-\d\d-\d\d [\d:,]+ [EWI] ", re.M)


def run_fresh_python(code: str, timeout: float = 120) -> str:
    """``python -c code`` in a new interpreter; its stdout (the test fails with the snippet's stderr if it fails)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
