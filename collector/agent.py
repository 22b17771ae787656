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
        next_scan = next_save = 0.0
        while not self.stopping:
            now = time.monotonic()
            self.health.beat = now
            if now >= next_scan:
                self.scan()
                self.health.ready = True
                next_scan = now + config.scan_interval
            self.maybe_reload()
            worked = self.turn()
            self.sink.poll(0 if worked else 0.05)
            if now >= next_save:
                self.save()
                next_save = now + config.checkpoint_interval
            if config.once and not worked and self.settled():
                break

    def settled(self) -> bool:
        """--once: all read; then what joining still holds is let go and delivered."""
        if not self.idle():
            return False
        self.flush_held()
        self.sink.flush(self.config.shutdown_grace)
        self.sink.poll(0)
        return self.idle()

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
