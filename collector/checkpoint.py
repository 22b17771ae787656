"""Where each file's acknowledged records end, kept on the node across restarts.

Keyed by the file's fingerprint (content plus folder, see tail.py), so a renamed file is
found again and a reused inode is not mistaken for the old file. Written with
write-then-rename, so a crash leaves the previous complete state, never a torn one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter

from collector.encode import spelled

log = logging.getLogger("collector.checkpoint")

FORGET_AFTER = 24 * 3600.0
"""A file gone this long will not come back; its entry is dropped."""


@dataclass(slots=True)
class Position:
    offset: int
    path: str
    seen: float


def position(entry: Any) -> Position:
    """An entry of the file; ValueError for one of the wrong shape (a file edited by hand,
    or written by something else): a negative offset or a `seen` that is no time would
    fail later, at the seek or the first save, and at every start again."""
    offset, path, seen = entry["offset"], entry["path"], entry["seen"]
    if type(offset) is not int or offset < 0:
        raise ValueError(f"offset {offset!r} is not a position in a file")
    if type(seen) not in (int, float) or type(path) is not str:
        raise ValueError(f"entry {entry!r} is not a checkpoint")
    return Position(offset, path, float(seen))


SAVE_FAILURES = Counter(
    "logferry_collector_checkpoint_save_failures",
    "Times the checkpoint file could not be written (disk full, state folder read-only): "
    "checkpoints stay where they were last saved",
)


class Checkpoints:
    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self.file = os.path.join(state_dir, "checkpoints.json")
        self.positions: dict[str, Position] = {}
        self.dirty = True
        """The first save of a run writes even with nothing new: when it was written tells
        the next run that files begun since were known to a run (collector.files,
        UNSEEN_MARGIN), though this one may be stopped before it read any of them."""
        self.failing = False
        """The last save failed."""
        self.saved_at: float = time.time()
        """When a previous run last saved, else (a node's first run) when this one began:
        what no run could have known of was written after that."""
        self.load()

    def load(self) -> None:
        try:
            with open(self.file, "rb") as f:
                saved = orjson.loads(f.read())
                saved_at = os.fstat(f.fileno()).st_mtime
            for key, entry in saved["files"].items():
                self.positions[key] = position(entry)
            self.saved_at = saved_at
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Refusing to start would stop every log of the node; reading again from the
            # start only repeats records, which keep their event.id and are deduplicated.
            aside = f"{self.file}.unreadable"
            os.replace(self.file, aside)
            self.positions.clear()
            log.error("checkpoints unreadable (%s); moved to %s, files are read again", exc, aside)

    def get(self, key: str) -> int | None:
        position = self.positions.get(key)
        return position.offset if position else None

    def set(self, key: str, offset: int, path: str) -> None:
        position = self.positions.get(key)
        if position is None:
            self.positions[key] = Position(offset, path, time.time())
            self.dirty = True
        elif position.offset != offset or position.path != path:
            position.offset = offset
            position.path = path
            position.seen = time.time()
            self.dirty = True

    def touch(self, key: str) -> None:
        position = self.positions.get(key)
        if position is not None:
            position.seen = time.time()

    def save(self) -> None:
        """Writes the file; a failure is said (once until a save works again) and counted,
        and the collector goes on: what was shipped since is shipped again after a restart,
        which a crash now would make certain."""
        try:
            self.write()
        except OSError as exc:
            SAVE_FAILURES.inc()
            if not self.failing:
                log.error("checkpoints not saved to %s, they stay behind: %s", self.file, exc)
            self.failing = True
            return
        if self.failing:
            log.info("checkpoints saved to %s again", self.file)
        self.failing = False

    def write(self) -> None:
        now = time.time()
        for key in [k for k, p in self.positions.items() if now - p.seen > FORGET_AFTER]:
            del self.positions[key]
        if not self.dirty:
            return
        data = orjson.dumps(
            {
                "version": 1,
                "files": {
                    # The path only tells a reader of the file which it was: spelled.
                    k: {"offset": p.offset, "path": spelled(p.path), "seen": p.seen}
                    for k, p in self.positions.items()
                },
            }
        )
        tmp = f"{self.file}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.file)
        with contextlib.suppress(OSError):
            folder = os.open(os.path.dirname(self.file), os.O_RDONLY)
            os.fsync(folder)
            os.close(folder)
        self.dirty = False
