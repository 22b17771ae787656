"""Waiting for work: inotify events on the followed files and the log folders, else polling.

An idle node should cost nothing: instead of reading every open file every 50 ms, the agent
sleeps on one inotify descriptor and wakes when a followed file is written or truncated
(IN_MODIFY) or a log folder gains, loses or renames an entry (a new container, a rotation)
or one of its files is written (a scan follows, at most every scan_interval: a file not
opened yet, such as an empty one, is found when it is written).

Files are watched through /proc/self/fd/N, the descriptor the agent reads: the watch is on
the very file being read, whatever its name is now, renamed or unlinked, and no path can
name another file between a scan and the watch.

inotify_simple (a small, maintained ctypes wrapper of the three system calls, no compiled
part, so the image stays wheel-only) makes the calls. Where inotify cannot be had (no
inotify, max_user_instances reached), every file is polled as before; a file or folder
beyond max_user_watches is polled alone (its container is visited every turn, folders are
scanned every scan_interval). Both are counted in logferry_collector_inotify_fallbacks and
the polled files in logferry_collector_files_polled. A queue overflow loses events: the
agent then rescans and visits every file. The periodic rescan (rescan_interval) covers
what no event reports (filesystems where inotify misses writes, such as network mounts).
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import select
import struct
import termios
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

log = logging.getLogger("collector.wakeup")

FALLBACKS = Counter(
    "logferry_collector_inotify_fallbacks",
    "Times inotify could not be used and polling took over, by reason: unavailable (no "
    "inotify, or max_user_instances reached: every file polled), watch_limit "
    "(max_user_watches reached: that file or folder polled), queue_overflow (events lost: "
    "everything rescanned)",
    ["reason"],
)
POLLED = Gauge(
    "logferry_collector_files_polled",
    "Open log files followed by polling instead of inotify (inotify unavailable or "
    "max_user_watches reached)",
)
for _reason in ("unavailable", "watch_limit", "queue_overflow"):
    FALLBACKS.labels(_reason)

try:
    from inotify_simple import INotify, flags
except ImportError:  # pragma: no cover - a dependency; kept importable for other platforms
    INotify = None  # type: ignore[assignment, misc]

EVENT = struct.Struct("iIII")
"""struct inotify_event without its name: wd, mask, cookie, len (the name's bytes after it)."""
FILE_EVENTS = 0 if INotify is None else flags.MODIFY
# MODIFY too: a file is opened only once it holds something, and kubelet leaves the new file
# of a rotation empty until the runtime writes to it; that first write is a folder event.
FOLDER_EVENTS = (
    0
    if INotify is None
    else flags.CREATE
    | flags.MOVED_TO
    | flags.MOVED_FROM
    | flags.DELETE
    | flags.DELETE_SELF
    | flags.MODIFY
)
MODIFY = 0 if INotify is None else flags.MODIFY
OVERFLOW = 0 if INotify is None else flags.Q_OVERFLOW
IGNORED = 0 if INotify is None else flags.IGNORED


@dataclass
class Woken:
    """What happened while waiting."""

    files: set[Hashable] = field(default_factory=set)
    """Keys of files written to (as given to `follow`)."""
    rescan: bool = False
    """A folder changed, or events were lost: scan the folders and look at every file."""


class Wakeup:
    def __init__(self, enabled: bool) -> None:
        self.inotify: INotify | None = None
        self.files: dict[int, Hashable] = {}
        """Watch descriptor -> key of the file it watches."""
        self.keys: dict[Hashable, int] = {}
        self.folders: dict[str, int] = {}
        self.folder_wds: set[int] = set()
        self.polled: set[Hashable] = set()
        self.folders_polled = False
        """A folder could not be watched: scans stay periodic at scan_interval."""
        self.refused: set[str] = set()
        """Folders past the watch limit: not asked again (and counted again) every scan."""
        self.limit_said = False
        self.poller = select.poll()
        if not enabled:
            return
        if INotify is None:
            self.unavailable("the inotify_simple package is missing")
            return
        try:
            self.inotify = INotify()
        except OSError as exc:
            self.unavailable(str(exc))
            return
        self.poller.register(self.inotify.fileno(), select.POLLIN)

    @property
    def polling(self) -> bool:
        """No inotify at all: every file is polled."""
        return self.inotify is None

    def unavailable(self, why: str) -> None:
        FALLBACKS.labels("unavailable").inc()
        log.warning("inotify unavailable (%s): every log file is polled", why)

    def watch(self, path: str, mask: int) -> int | None:
        """A watch descriptor, or None when the watch limit (or anything else) refused."""
        assert self.inotify is not None
        try:
            return int(self.inotify.add_watch(path, mask))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                if not self.limit_said:
                    self.limit_said = True
                    log.warning(
                        "inotify watch limit (fs.inotify.max_user_watches) reached: files "
                        "past it are polled"
                    )
                FALLBACKS.labels("watch_limit").inc()
            elif exc.errno != errno.ENOENT:
                log.warning("cannot watch %s: %s; it is polled", path, exc)
            return None

    def follow(self, key: Hashable, fd: int) -> bool:
        """Watch the open file `fd` for writes; False when it must be polled instead."""
        if self.inotify is None:
            return False
        wd = self.watch(f"/proc/self/fd/{fd}", FILE_EVENTS)
        if wd is None:
            self.polled.add(key)
            POLLED.set(len(self.polled))
            return False
        self.files[wd] = key
        self.keys[key] = wd
        return True

    def unfollow(self, key: Hashable) -> None:
        """Before the file's descriptor is closed."""
        if key in self.polled:
            self.polled.discard(key)
            POLLED.set(len(self.polled))
        wd = self.keys.pop(key, None)
        if wd is None or self.inotify is None:
            return
        self.files.pop(wd, None)
        # Already gone when the file was deleted and its last descriptor closed elsewhere.
        with contextlib.suppress(OSError):
            self.inotify.rm_watch(wd)

    def watch_folders(self, folders: set[str]) -> None:
        """Watch exactly these folders for entries coming and going."""
        if self.inotify is None:
            return
        for gone in [f for f in self.folders if f not in folders]:
            wd = self.folders.pop(gone)
            self.folder_wds.discard(wd)
            with contextlib.suppress(OSError):
                self.inotify.rm_watch(wd)
        self.refused &= folders
        complete = not self.refused
        for folder in folders:
            if folder in self.folders or folder in self.refused:
                continue
            wd = self.watch(folder, FOLDER_EVENTS)
            if wd is None:
                if os.path.isdir(folder):
                    self.refused.add(folder)
                    complete = False
                continue
            self.folders[folder] = wd
            self.folder_wds.add(wd)
        self.folders_polled = not complete

    def wait(self, timeout: float) -> Woken:
        """Until an event or `timeout` seconds; polling: just the timeout."""
        woken = Woken()
        if self.inotify is None:
            time.sleep(max(0.0, timeout))
            return woken
        data = self.available()
        if not data and timeout > 0 and self.poller.poll(int(timeout * 1000)):
            data = self.available()
        self.take_all(data, woken)
        return woken

    def available(self) -> bytes:
        """The events queued now, raw; b"" when none (the descriptor blocks)."""
        assert self.inotify is not None
        queued = array.array("i", [0])
        fcntl.ioctl(self.inotify.fileno(), termios.FIONREAD, queued)
        return os.read(self.inotify.fileno(), queued[0]) if queued[0] else b""

    def take_all(self, data: bytes, woken: Woken) -> None:
        """Raw events, read here rather than by inotify_simple: a runtime writes a line at a
        time, so a busy node sends thousands of write events a second, and inotify_simple
        makes a named tuple and decodes a name for each (about 3 us: 0.03 cores at 10,000
        lines/s). Writes are taken once per watch; the rest in order, after them (a write
        reported with its watch's end only brings one more visit)."""
        written: set[int] = set()
        others: list[tuple[int, int]] = []
        unpack = EVENT.unpack_from
        at, end = 0, len(data)
        while at < end:
            wd, mask, _cookie, name_size = unpack(data, at)
            at += EVENT.size + name_size
            if mask == MODIFY:
                written.add(wd)
            else:
                others.append((wd, mask))
        for wd in written:
            self.take(wd, MODIFY, woken)
        for wd, mask in others:
            self.take(wd, mask, woken)

    def take(self, wd: int, mask: int, woken: Woken) -> None:
        if mask & OVERFLOW:
            FALLBACKS.labels("queue_overflow").inc()
            log.warning("inotify queue overflowed: events lost, rescanning")
            woken.rescan = True
        elif wd in self.folder_wds:
            woken.rescan = True
            if mask & IGNORED:
                # The folder is gone (or unmounted): forgotten, watched again if it comes back.
                self.folder_wds.discard(wd)
                self.folders = {f: w for f, w in self.folders.items() if w != wd}
        elif wd in self.files:
            if mask & IGNORED:
                key = self.files.pop(wd)
                self.keys.pop(key, None)
            else:
                woken.files.add(self.files[wd])

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
