"""One memory budget for what the collector holds between reading and delivery.

Readers (the file loop, forward connections) take bytes from it as they buffer and give
them back once delivered; while it is exhausted they stop reading, so the kernel's buffers
and the TCP window hold the rest (backpressure) instead of the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from collector.tail import Chunk, Tail

MIB = 1024 * 1024
DEFAULT_LIMIT = 256 * MIB
"""The budget without a cgroup memory limit."""
CGROUP_SHARE = 0.5
"""Of a cgroup limit, the part for buffers: the rest is the interpreter and the objects it
makes around the buffered bytes."""
WORKING_BYTES = 16 * MIB
"""Kept out of the budget for what it does not count: librdkafka's request buffers (batches
copied and compressed on their way to the brokers) and the copies one read makes while it
is decoded and encoded."""
M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter; setting it also stops its dynamic adjustment."""
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


def return_big_buffers() -> None:
    """Buffers of 128 KiB and more (reads, long lines, records) are mapped on their own and
    given back to the system when freed.

    glibc raises that threshold each time such a buffer is freed, after which they come from
    the heap, which holds on to the pages they leave: the process then keeps what it used at
    its peak. Not glibc (another libc): nothing done.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 128 * 1024)


class Budget:
    """A count of bytes held against a limit, shared by threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.threshold = max(limit - WORKING_BYTES, limit // 2)
        """Readers stop at this much: the rest of the limit is WORKING_BYTES."""
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
        return self.used >= self.threshold

    def room(self) -> int:
        return self.threshold - self.used

    def paused(self, reader: str) -> None:
        """A reader stopped reading for want of room (counted once per stop, not per check)."""
        PAUSES.labels(reader).inc()


PARK_BYTES = 64 * 1024
"""A started line at least this long at a file's end is not held while the file does not
grow: its bytes are read again from the file when more comes."""


class FileReads:
    """The file side of the budget: the agent's reads of its files go through here.

    It charges the started lines files hold; while the budget is exhausted, files are not
    read and let go of what they hold, except those in the middle of a long line (at least
    PARK_BYTES): only reading on finishes it and gives the memory back, and dropping it
    would read it again and again.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.held: dict[Tail, int] = {}
        """Bytes of a started line each file holds, as charged."""
        self.parked: dict[Tail, int] = {}
        """Files whose started line at their end was let go, with their size then."""
        self.pausing = False

    def read(self, tail: Tail, size: int) -> Chunk | None:
        """What `tail.read` gives, or None while the file waits (budget, parked line)."""
        parked = self.parked.get(tail)
        if parked is not None:
            if tail.size() == parked:
                return None
            del self.parked[tail]
        if self.budget.exhausted():
            if not self.pausing:
                self.pausing = True
                self.budget.paused("files")
                self.sweep()
            if len(tail.pending) < PARK_BYTES:
                # The end of a read cut mid-line: let go, and read again from the file later.
                tail.seek(tail.offset)
                self.charge(tail)
                return None
        else:
            self.pausing = False
        chunk = tail.read(size)
        pending = len(tail.pending)
        if chunk is None and pending >= PARK_BYTES and tail.size() == tail.offset + pending:
            self.parked[tail] = tail.size()
            tail.seek(tail.offset)
        self.charge(tail)
        return chunk

    def finish(self, tail: Tail) -> Chunk | None:
        """What `tail.finish` gives: the last line of a file that has ended without its
        newline."""
        self.parked.pop(tail, None)
        chunk = tail.finish()
        self.charge(tail)
        return chunk

    def waiting_at_end(self, tail: Tail) -> bool:
        """The file's unread bytes are a started line let go at its end: nothing to read."""
        return self.parked.get(tail) == tail.size()

    def charge(self, tail: Tail) -> None:
        held = len(tail.pending)
        before = self.held.pop(tail, 0)
        if held:
            self.held[tail] = held
        if held != before:
            self.budget.take(held - before)

    def sweep(self) -> None:
        """Files closed without `forget`: what they held is given back."""
        for tail in [t for t in (*self.held, *self.parked) if t.fd < 0]:
            self.forget(tail)

    def forget(self, tail: Tail) -> None:
        """The file is let go: what it held is given back."""
        self.parked.pop(tail, None)
        self.budget.give(self.held.pop(tail, 0))
