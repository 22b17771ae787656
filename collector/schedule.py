"""Which containers the agent reads in a turn, and how much of each: fair, and throttled.

Round robin over the containers that have something to read: each gets at most one read of
`read_quantum` bytes a turn, so a container writing 20 MB/s is read a quantum at a time while
the quiet ones are read in the same turn, and the one that goes first changes every turn.

A container is visited when something says it has lines: an inotify event on one of its
files, a last read that gave lines (there may be more), a scan that found unread bytes, or
state that needs time to pass (`restless`: a record held for joining, a rotated file to
finish). Without inotify every container is visited every turn, as a poller must.

A pod over its rate limit (collector.ratelimit) is not read until its bucket allows: its
files keep the lines, and how far behind it is shows per container in
logferry_collector_throttled_behind_bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge

from collector.ratelimit import Bucket, Rate, rate

log = logging.getLogger("collector.schedule")

READ_QUANTUM = 512 * 1024
"""read_quantum's default: large reads keep syscalls and Python calls per line low, and a
read's lines and records (about four times its bytes with the enrichment fields) are what
the collector holds above its startup: 1 MiB put the peak RSS of a 64 MB catch-up at 56-63
MiB, 512 KiB at 52-55 (issue 17's bound is 64), for 0.4% more instructions."""

THROTTLED_BEHIND = Gauge(
    "logferry_collector_throttled_behind_bytes",
    "Bytes written to a throttled container's files and not read yet, per container over "
    "its pod's rate limit (series removed once it has caught up)",
    ["namespace", "pod", "container"],
)
THROTTLED_WAITS = Counter(
    "logferry_collector_throttled_waits",
    "Times a container had lines to read but its pod's rate limit made it wait",
)
RATE_LIMIT_INVALID = Counter(
    "logferry_collector_rate_limit_invalid",
    "Pod rate-limit annotations that could not be read (the node's rate_limit applied)",
)
QUANTUM_READS = Counter(
    "logferry_collector_quantum_reads",
    "Reads that took a whole read_quantum: the container had more, the others went first",
)


class Scheduler:
    def __init__(self, quantum: int, default: Rate | None, poll_all: bool) -> None:
        self.quantum = quantum
        self.default = default
        """The node's rate limit (None: none), for pods without a valid annotation."""
        self.poll_all = poll_all
        """No change notification: every container is visited every turn."""
        self.ready: dict[str, None] = {}
        """Containers (folders) with something to read, in the order they were told."""
        self.start = 0
        self.waiting: dict[str, float] = {}
        """Throttled containers -> when their pod's bucket allows a read again."""
        self.buckets: dict[str, Bucket] = {}
        """Per pod."""
        self.annotations: dict[str, tuple[str | None, Rate | None]] = {}
        """Per container: its pod's annotation as last seen, and the limit it gave."""
        self.behind: dict[str, tuple[str, str, str]] = {}
        """Throttled containers with a series in THROTTLED_BEHIND, and its labels."""

    def reconfigure(self, quantum: int, default: Rate | None) -> None:
        """New settings: pods without an annotation of their own take the new default."""
        self.quantum = quantum
        self.default = default
        self.annotations.clear()
        # Throttled containers are looked at again under the new limits at once.
        for folder in self.waiting:
            self.ready[folder] = None
        self.waiting.clear()

    def mark(self, folder: str) -> None:
        self.ready[folder] = None

    def turn(
        self, folders: Iterable[str], restless: Callable[[str], bool], now: float
    ) -> list[str]:
        """The containers to visit this turn, each once, the first one changing every turn."""
        ready, waiting = self.ready, self.waiting
        if self.poll_all:
            chosen = list(folders)
        else:
            chosen = [
                f
                for f in folders
                if f in ready or (f in waiting and waiting[f] <= now) or restless(f)
            ]
        ready.clear()
        if len(chosen) > 1:
            first = self.start % len(chosen)
            chosen = chosen[first:] + chosen[:first]
        self.start += 1
        return chosen

    def limit(self, folder: str, annotation: str | None) -> Rate | None:
        """The container's limit: its pod's annotation when valid, else the node's."""
        known = self.annotations.get(folder)
        if known is not None and known[0] == annotation:
            return known[1]
        limit = self.default
        if annotation is not None:
            try:
                limit = rate(annotation)
            except ValueError as exc:
                RATE_LIMIT_INVALID.inc()
                log.warning(
                    "pod annotation ignored for %s: rate-limit %s; the node's %s applies",
                    folder,
                    exc,
                    self.default or "no limit",
                )
        self.annotations[folder] = (annotation, limit)
        return limit

    def allowance(self, folder: str, pod: str, limit: Rate | None, now: float) -> int:
        """Bytes the container may read now: the quantum, less under its pod's limit, 0 to wait."""
        if limit is None:
            return self.quantum
        bucket = self.buckets.get(pod)
        if bucket is None or bucket.rate != limit:
            bucket = self.buckets[pod] = Bucket(limit, now)
        size = bucket.allowance(now, self.quantum)
        if size == 0:
            self.waiting[folder] = now + bucket.ready_in(now)
        else:
            self.waiting.pop(folder, None)
        return size

    def spent(
        self,
        folder: str,
        pod: str,
        limit: Rate | None,
        now: float,
        read: int,
        lines: int,
        more: bool,
    ) -> None:
        """A read gave lines. When it filled its size (`more`) the file may hold more, and
        the container is visited next turn; a read that reached the file's end waits for
        the file's next write event instead: going round again at once would read the few
        lines written meanwhile, a turn's cost each time, on a node written continuously."""
        if more:
            self.ready[folder] = None
        if read >= self.quantum:
            QUANTUM_READS.inc()
        if limit is not None:
            self.buckets[pod].spend(now, read, lines)

    def throttled(self, folder: str, labels: tuple[str, str, str], unread: int) -> None:
        """The container waits for its pod's limit with `unread` bytes still in its files."""
        THROTTLED_WAITS.inc()
        self.behind[folder] = labels
        THROTTLED_BEHIND.labels(*labels).set(unread)

    def caught_up(self, folder: str) -> None:
        """The container has nothing left to read (or is gone): no longer shown as behind."""
        labels = self.behind.pop(folder, None)
        if labels is not None:
            THROTTLED_BEHIND.remove(*labels)

    def forget(self, folder: str) -> None:
        self.caught_up(folder)
        self.ready.pop(folder, None)
        self.waiting.pop(folder, None)
        self.annotations.pop(folder, None)

    def forget_pods(self, pods: set[str]) -> None:
        """Buckets of pods with no container left."""
        for pod in [p for p in self.buckets if p not in pods]:
            del self.buckets[pod]

    def next_due(self, now: float) -> float | None:
        """Seconds until a throttled container may read again; None when none waits."""
        if not self.waiting:
            return None
        return max(0.0, min(self.waiting.values()) - now)
