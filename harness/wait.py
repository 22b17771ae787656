"""Waiting on a condition with a bounded deadline, the one way tests synchronise with what runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "condition", every: float = 0.02
) -> Any:
    """Polls `check` every `every` seconds until it returns something true, and returns that;
    fails naming `what` and the last value after `timeout` seconds. The default bound is
    generous because it only decides how long a failing test takes to say so, and a busy
    machine must not make a passing one fail."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout:.0f} s")
        time.sleep(every)
    return value
