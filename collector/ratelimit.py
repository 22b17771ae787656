"""Per-pod read rate limits: how much of a pod's log files may be read now.

A limit slows reading, it never drops: the log file is the buffer, and a throttled pod's lines
are read later, in order. `500/s` counts lines, `1MiB/s` (any size unit of the settings)
counts bytes. The pod annotation `logferry.io/rate-limit` overrides the node's `rate_limit`;
`none` on a pod lifts the node's limit for it.

A bucket holds one second of its rate (the burst). Lines are counted only after a read, so a
read is sized from the lines' mean length so far (the first read is small, to learn it) and
may overdraw the bucket; the debt is paid back before the next read, which keeps the
long-run rate exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from logferry.settings import LARGEST, size

RATE = re.compile(r"\s*(?P<amount>[^/]+?)\s*/\s*s(ec(ond)?)?\s*", re.IGNORECASE)
NUMBER = re.compile(r"\d+(\.\d+)?")
UNLIMITED_WORDS = ("", "none", "off", "0")

MIN_READ = 4096
"""Smallest read a throttled pod is offered: smaller reads cost more calls than they save."""


@dataclass(frozen=True)
class Rate:
    per_second: float
    lines: bool
    """True: lines per second; False: bytes per second."""

    def __str__(self) -> str:
        return f"{self.per_second:g} {'lines' if self.lines else 'bytes'}/s"


def rate(text: str) -> Rate | None:
    """`500/s` (lines), `1MiB/s` or `200KB/s` (bytes); `none`, `off`, `0` or empty: no limit."""
    if text.strip().lower() in UNLIMITED_WORDS:
        return None
    found = RATE.fullmatch(text)
    if found is None:
        raise ValueError(f"must be a rate such as 500/s (lines) or 1MiB/s (bytes), got {text!r}")
    amount = found["amount"]
    if NUMBER.fullmatch(amount):
        value, lines = float(amount), True
    else:
        try:
            value, lines = float(size(amount)), False
        except ValueError:
            raise ValueError(
                f"must be a rate such as 500/s (lines) or 1MiB/s (bytes), got {text!r}"
            ) from None
    if value <= 0:
        raise ValueError(f"must be a rate above zero such as 500/s or 1MiB/s, got {text!r}")
    if value > LARGEST:
        raise ValueError(f"must be at most {LARGEST} a second, got {text.strip()[:40]!r}")
    return Rate(value, lines)


class Bucket:
    """A token bucket in lines or bytes, refilled continuously, one second of burst."""

    __slots__ = ("line_bytes", "rate", "stamp", "tokens")

    def __init__(self, limit: Rate, now: float) -> None:
        self.rate = limit
        self.tokens = limit.per_second
        self.stamp = now
        self.line_bytes = 0.0
        """Mean bytes per line read so far (for a limit in lines); 0 before the first read,
        which is then MIN_READ: a guess could overdraw the bucket many times over."""

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(
                self.rate.per_second, self.tokens + (now - self.stamp) * self.rate.per_second
            )
        self.stamp = now

    def allowance(self, now: float, most: int) -> int:
        """Bytes that may be read now, at most `most`; 0 while the bucket is in debt."""
        self.refill(now)
        if self.tokens < 1:
            return 0
        room = self.tokens * self.line_bytes if self.rate.lines else self.tokens
        if self.rate.lines and not self.line_bytes:
            room = MIN_READ
        return max(MIN_READ, min(most, int(room)))

    def spend(self, now: float, read_bytes: int, lines: int) -> None:
        self.refill(now)
        if self.rate.lines:
            if lines:
                # Weighted towards recent reads: a pod's lines change length over its life.
                mean = read_bytes / lines
                self.line_bytes = 0.7 * self.line_bytes + 0.3 * mean if self.line_bytes else mean
            self.tokens -= lines
        else:
            self.tokens -= read_bytes

    def ready_in(self, now: float) -> float:
        """Seconds until a read is allowed again (0: now)."""
        self.refill(now)
        return max(0.0, (1 - self.tokens) / self.rate.per_second)
