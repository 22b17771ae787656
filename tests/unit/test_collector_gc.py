"""The collector settles its startup objects before reading (collector.cli): cyclic garbage
made afterwards must still be collected, or a long-running collector would grow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROGRAM = """
import gc, weakref
from collector.cli import GC_YOUNG, settle_startup_objects

settle_startup_objects()
assert gc.isenabled()

class Node:
    pass

node = Node()
node.me = node
gone = weakref.ref(node)
del node
kept = [[] for _ in range(3 * GC_YOUNG)]
print("collected" if gone() is None else "kept")
"""


def test_cycles_made_after_startup_are_still_collected() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "collected", done.stderr
