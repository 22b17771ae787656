"""One memory budget for what the collector holds between reading and delivery.

Readers (the file loop, forward connections) take bytes from it as they buffer and give
them back once delivered; while it is exhausted they stop reading, so the kernel's buffers
and the TCP window hold the rest (backpressure) instead of the heap.
"""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import Counter, Gauge

MIB = 1024 * 1024
DEFAULT_LIMIT = 256 * MIB
"""The budget without a cgroup memory limit."""
CGROUP_SHARE = 0.5
"""Of a cgroup limit, the part for buffers: the rest is the interpreter, its objects around
the buffered bytes, and librdkafka's own queue (queue.buffering.max.kbytes)."""
UNLIMITED = 1 << 60
"""cgroup v1 says "no limit" with a number near 2**63."""
CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
"""cgroup v2, then v1: the container's own limit (a container sees its cgroup as the root)."""

LIMIT = Gauge("logferry_collector_memory_limit_bytes", "The memory budget (--memory-limit)")
BUFFERED = Gauge(
    "logferry_collector_memory_buffered_bytes",
    "Bytes held between reading and delivery, counted against --memory-limit",
)
PAUSES = Counter(
    "logferry_collector_memory_pauses",
    "Times a reader stopped reading because the memory budget was exhausted, by reader",
    ["reader"],
)


def cgroup_limit(files: tuple[str, ...] = CGROUP_FILES) -> int | None:
    """The memory limit of this process's cgroup, None when there is none."""
    for name in files:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < UNLIMITED else None
    return None


def default_limit(files: tuple[str, ...] = CGROUP_FILES) -> int:
    cgroup = cgroup_limit(files)
    return DEFAULT_LIMIT if cgroup is None else int(cgroup * CGROUP_SHARE)


def byte_size(text: str) -> int:
    """A number of bytes, with an optional Ki/Mi/Gi (or KiB/MiB/GiB) suffix; 0 or auto: default."""
    value = text.strip()
    if value.lower() == "auto":
        return 0
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        for spelled in (suffix + "B", suffix):
            if value.endswith(spelled):
                number = int(value.removesuffix(spelled))
                if number < 0:
                    raise ValueError(f"must be zero or more bytes, got {text}")
                return number * factor
    number = int(value)
    if number < 0:
        raise ValueError(f"must be zero or more bytes, got {text}")
    return number


class Budget:
    """A count of bytes held against a limit, shared by threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.lock = threading.Lock()
        LIMIT.set(limit)
        BUFFERED.set(0)

    def take(self, size: int) -> None:
        """Bytes now held; taking never fails: readers ask `exhausted` before they read."""
        with self.lock:
            self.used += size
            BUFFERED.set(self.used)

    def give(self, size: int) -> None:
        self.take(-size)

    def exhausted(self) -> bool:
        return self.used >= self.limit

    def room(self) -> int:
        return self.limit - self.used

    def paused(self, reader: str) -> None:
        """A reader stopped reading for want of room (counted once per stop, not per check)."""
        PAUSES.labels(reader).inc()
