"""The programs' own logs: one JSON object a line on stderr, for the same pipeline to read."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


@dataclass
class Repeats:
    first: float
    said: float
    seen: float
    count: int = 0
    reminders: int = 0


NUMBERS = re.compile(
    r"(?<![\w./#:-])\d+(?:\.\d+)?(?=(?:ms|us|ns|s|m|h|%|B|KB|MB|KiB|MiB)?(?![\w./-]))"
)
"""Measurements in a message: standalone numbers, with a unit at most (`after 12ms`, `3
times`, `in 2.5 s`). Digits inside names (paths, hosts, ports, ids) are not: two files or
two brokers are two failures."""


class RepeatFolder(logging.Filter):
    """One line per distinct failure, then a reminder with a count at a slowing pace.

    While a broker or Elasticsearch is away, every reconnect attempt of librdkafka, of the
    Elasticsearch client and of our own retry loops logs the same words: dozens of lines a
    second that bury everything else. Warnings and errors are grouped by logger, level and
    text with its measurements blanked (NUMBERS: attempt counts, delays and durations
    differ each time; two files or two brokers stay two failures); the first is said at
    once, the repeats are counted and said again 10 s, 30 s, 1 min and then every 5 min
    later. A failure not seen for 5 min starts afresh. At most `max_keys` failures are
    remembered, the oldest forgotten first, so memory stays bounded.
    """

    REMINDERS = (10.0, 30.0, 60.0, 300.0)
    FORGET_AFTER = 300.0

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 256) -> None:
        super().__init__()
        self.clock = clock
        self.max_keys = max_keys
        self.seen: dict[tuple[str, int, str], Repeats] = {}
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        key = (record.name, record.levelno, NUMBERS.sub("#", text))
        now = self.clock()
        with self.lock:
            repeats = self.seen.get(key)
            if repeats is None or now - repeats.seen > self.FORGET_AFTER:
                self.seen.pop(key, None)
                if len(self.seen) >= self.max_keys:
                    del self.seen[next(iter(self.seen))]
                self.seen[key] = Repeats(first=now, said=now, seen=now)
                return True
            repeats.seen = now
            repeats.count += 1
            wait = self.REMINDERS[min(repeats.reminders, len(self.REMINDERS) - 1)]
            if now - repeats.said < wait:
                return False
            record.msg = (
                f"{text} (again {repeats.count} times in {now - repeats.said:.0f} s; "
                f"first {now - repeats.first:.0f} s ago)"
            )
            record.args = None
            repeats.count = 0
            repeats.said = now
            repeats.reminders += 1
            return True


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatFolder())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
