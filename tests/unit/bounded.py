"""Work that must end: an input that makes a regular expression backtrack quadratically
stalls the collector for minutes (one 1 MiB line: about 45 minutes of CPU), while a linear
search of it takes well under a second. Run in a child process so that a failing test is
stopped rather than left spinning."""

from __future__ import annotations

import subprocess
import sys

from harness.collector_run import REPO

GENEROUS = 120.0
"""Seconds: hundreds of times what the linear work takes on a busy machine, and a small
part of what the quadratic one would."""


def ends(code: str) -> bool:
    """Whether `code` (Python, run from the repository) finishes within GENEROUS seconds."""
    try:
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=GENEROUS)
    except subprocess.TimeoutExpired:
        return False
    return True
