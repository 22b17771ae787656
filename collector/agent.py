"""The node agent's loop: scan, read, save checkpoints; stop cleanly.

One thread does the work so that no lock sits on the per-line path; librdkafka's own threads
compress and send. The work has three parts: which files are open and each one's life
(collector.files), what each container's pod says (collector.annotate), and reading files
into records sent to the sink (collector.reader). The agent runs them in turn, applies new
settings to all three, and delivers what is held when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from collector.annotate import Annotator
from collector.budget import Budget, FileReads
from collector.config import Config
from collector.files import File, Group, Identity, OpenFiles
from collector.reader import Reader
from collector.reload import Reloader
from collector.sink import Interrupted, Sink
from logferry.probes import Health

if TYPE_CHECKING:
    # The kubernetes client is imported only where enrichment is configured.
    from collector.enrich import Enricher

log = logging.getLogger("collector.agent")

IDLE_WAKE = 1.0
"""Longest sleep on inotify: the liveness beat, the sink's own callbacks and a reload asked
by signal or a changed config file are looked at this often while nothing is written."""


class Agent:
    def __init__(
        self,
        config: Config,
        sink: Sink,
        health: Health | None = None,
        enricher: Enricher | None = None,
        budget: Budget | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self.config = config
        self.reloader = reloader
        self.budget = Budget(config.memory_limit) if budget is None else budget
        self.reads = FileReads(self.budget)
        self.sink = sink
        self.health = health or Health()
        self.annotator = Annotator(config, enricher)
        self.open_files = OpenFiles(config, self.reads, self.annotator)
        self.reader = Reader(config, self.open_files, self.annotator, self.reads, self.budget, sink)
        self.stopping = False
        self.next_bound = 0.0
        self.next_scan = 0.0
        self.last_scan = 0.0

    @property
    def files(self) -> dict[Identity, File]:
        return self.open_files.files

    @property
    def groups(self) -> dict[str, Group]:
        return self.open_files.groups

    @property
    def opened(self) -> set[Identity]:
        """Every file opened in this run, for the --once summary."""
        return self.open_files.opened

    def scan(self) -> None:
        self.open_files.scan()

    def turn(self) -> bool:
        return self.reader.turn()

    def idle(self) -> bool:
        return self.reader.idle()

    def save(self) -> None:
        self.open_files.save()

    def flush_held(self) -> None:
        self.reader.flush_held()

    # --- settings ---------------------------------------------------------------------------

    def maybe_reload(self) -> None:
        """Settings read again when asked (SIGHUP) or when the config file changed."""
        if self.reloader is not None and self.reloader.due():
            changed = self.reloader.read(self.config)
            if changed is not None:
                self.reconfigure(changed)

    def reconfigure(self, config: Config) -> None:
        """New settings (collector.reload) applied in place: files stay open where they are."""
        self.config = self.reader.config = config
        self.annotator.reconfigure(config, list(self.groups.values()))
        self.open_files.reconfigure(config)
        self.open_files.schedule.reconfigure(config.read_quantum, config.rate_limit)

    # --- the loop ---------------------------------------------------------------------------

    def paused(self) -> bool:
        """While the sink has no room: still alive, and asked whether to give up."""
        now = self.health.beat = time.monotonic()
        # Deleted files pile up while the broker is away: that is when their bound matters.
        if now >= self.next_bound:
            self.next_bound = now + self.config.scan_interval
            self.open_files.bound_deleted()
        return self.stopping

    def run(self) -> int:
        self.sink.waiting = self.paused
        try:
            self.loop()
        except Interrupted:
            log.info("stopped while waiting for the sink; undelivered records will be read again")
        return self.shutdown()

    def loop(self) -> None:
        config = self.config
        wakeup = self.open_files.wakeup
        next_save = 0.0
        while not self.stopping:
            now = time.monotonic()
            self.health.beat = now
            if now >= self.next_scan:
                self.scan()
                self.health.ready = True
                self.last_scan = now
                # Files waiting for a slot under max_open_files are opened at a scan.
                polling = wakeup.polling or wakeup.folders_polled or self.open_files.waiting
                self.next_scan = now + (config.scan_interval if polling else config.rescan_interval)
            self.maybe_reload()
            worked = self.turn()
            self.wait(worked)
            if now >= next_save:
                self.save()
                next_save = now + config.checkpoint_interval
            if config.once and not worked and self.settled():
                self.say_unfinished()
                break

    def wait(self, worked: bool) -> None:
        """Until there is work: at once after a read that left more, a short wait while
        something needs time to pass, else asleep on inotify until a file is written or a
        folder changes.

        Events are taken after every turn, busy or not: a container that always has lines
        keeps the agent from sleeping, and the quiet ones' events must still bring them in.
        After a turn that read its files to their ends, the next waits wake_delay: on a node
        whose containers write all the time, going round at once reads a few lines a
        container a turn, and a turn's cost does not shrink with its lines.

        The sink's reports are served without waiting on them (poll(0)): librdkafka's poll
        returns at the first report, one a record, so waiting in it turned the loop once a
        record (0.13 cores at 10,000 lines/s where 0.08 do).
        """
        self.sink.poll(0)
        schedule = self.open_files.schedule
        if worked:
            if not schedule.ready and self.config.wake_delay and not self.config.once:
                time.sleep(self.config.wake_delay)
            self.woken(0)
            return
        # Containers told to come back next turn (waiting for metadata or memory) too.
        busy = (
            self.reader.restless
            or bool(schedule.ready)
            or any(g.in_flight for g in self.groups.values())
        )
        if self.open_files.wakeup.polling:
            time.sleep(self.config.poll_interval)
            return
        now = time.monotonic()
        timeout = self.config.poll_interval if busy else min(self.next_scan - now, IDLE_WAKE)
        due = schedule.next_due(now)
        if due is not None:
            timeout = min(timeout, due)
        if self.woken(timeout) and self.config.wake_delay:
            # A file written line by line sends an event a line: waking for each would read
            # a line a turn. Lines that come meanwhile are read in the same turn.
            time.sleep(self.config.wake_delay)

    def woken(self, timeout: float) -> bool:
        """Containers whose files were written are read next turn; a changed folder is
        scanned. True when a file was written."""
        wakeup = self.open_files.wakeup
        if wakeup.polling:
            return False
        woken = wakeup.wait(timeout)
        for identity in woken.files:
            file = self.files.get(identity)  # type: ignore[call-overload]
            if file is not None:
                self.open_files.schedule.mark(file.group.folder)
        if woken.rescan:
            self.next_scan = min(self.next_scan, self.last_scan + self.config.scan_interval)
        return bool(woken.files)

    def settled(self) -> bool:
        """--once: all read; then what joining still holds is let go and delivered."""
        if not self.idle():
            return False
        self.flush_held()
        self.sink.flush(self.config.shutdown_grace)
        self.sink.poll(0)
        return self.idle()

    def say_unfinished(self) -> None:
        """--once: bytes it did not read are said, not left to be found missing."""
        files, size = self.reader.unfinished()
        if files:
            log.warning(
                "%d files, %d bytes left unread: their last line has no newline yet; "
                "they are read once it is finished",
                files,
                size,
            )

    def shutdown(self) -> int:
        with contextlib.suppress(Interrupted):
            self.flush_held()
        left = self.sink.flush(self.config.shutdown_grace)
        if left:
            log.warning("%d records undelivered at stop; they will be read again", left)
        self.save()
        self.sink.close()
        self.open_files.close()
        return 0
