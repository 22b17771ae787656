"""Settings changed while the collector runs: on SIGHUP, and when the `--config` file changes.

A Kubernetes ConfigMap mounted as a folder changes by a symlink swap, so the file is watched
by its stat (device, inode, size, mtime through the links), checked every few seconds. The
settings are read again from the same sources as at start (file, environment, flags). A
setting that cannot be used refuses the whole reload with one line, and the running
settings stay. Only what the agent can change in place is taken (RELOADABLE): file
selection, multi-line rules, parsing, redaction, the read quantum and rate limit; the
others need a restart, and a reload that changes them says so and keeps the running values.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence

from collector.config import Config, parse
from logferry.settings import SettingError

log = logging.getLogger("collector.reload")

RELOADABLE = (
    *("include", "exclude", "multiline", "multiline_timeout"),
    *("parser", "parse_max_chars", "parse_max_depth", "parse_max_fields"),
    *("redact", "redact_builtin"),
    *("rate_limit", "read_quantum"),
)
CHECK_EVERY = 2.0
"""Seconds between looks at the config file."""


class Reloader:
    def __init__(
        self,
        argv: Sequence[str] | None,
        path: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = argv
        self.path = path
        self.clock = clock
        self.asked = False
        """Set by the SIGHUP handler."""
        self.stamp = self.file_stamp()
        self.next_check = clock() + CHECK_EVERY

    def file_stamp(self) -> tuple[int, ...] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def due(self) -> bool:
        """Whether a reload was asked for or the file changed (cheap: one stat every 2 s)."""
        if self.asked:
            self.asked = False
            self.stamp = self.file_stamp()
            return True
        now = self.clock()
        if self.path is None or now < self.next_check:
            return False
        self.next_check = now + CHECK_EVERY
        stamp = self.file_stamp()
        if stamp is None or stamp == self.stamp:
            return False
        self.stamp = stamp
        return True

    def read(self, running: Config) -> Config | None:
        """The running settings with the reloadable ones as now given; None when refused."""
        try:
            wanted = parse(self.argv)
        except SettingError as exc:
            log.error("config reload refused, the running settings stay: %s", exc)
            return None
        fixed = [
            f.name
            for f in dataclasses.fields(Config)
            if f.name not in RELOADABLE and getattr(wanted, f.name) != getattr(running, f.name)
        ]
        if fixed:
            log.warning("config reload: %s take effect only at a restart", ", ".join(fixed))
        changes = {
            name: getattr(wanted, name)
            for name in RELOADABLE
            if getattr(wanted, name) != getattr(running, name)
        }
        if not changes:
            log.info("config reload: nothing that can change in place changed")
            return None
        log.info("config reload: %s changed", ", ".join(sorted(changes)))
        return dataclasses.replace(running, **changes)
