"""The node agent's loop: scan, read, decode, join, encode, send, checkpoint.

One thread does the work so that no lock sits on the per-line path; librdkafka's own threads
compress and send. Files are grouped by the folder they live in (one container): within a
group the oldest file is read first, so a container's lines reach Kafka in the order they
were written even across rotation, and a record split across a rotation is still joined.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from collector.budget import Budget, FileReads
from collector.checkpoint import Checkpoints
from collector.config import Config
from collector.decode import DECODERS, Decoder, detect
from collector.discover import Discovery, Found
from collector.encode import Encoder
from collector.fastpath import FAST_PATHS, FastPaths, Levelled
from collector.gztail import GzipTail, started
from collector.join import Joiner, Record
from collector.metrics import METRICS
from collector.multiline import MultilineRule, rule_for
from collector.process import Processor
from collector.reload import Reloader
from collector.sink import Interrupted, Sink
from collector.structured import Limits, mode
from collector.tail import FINGERPRINT_BYTES, Chunk, Tail, plain
from logferry.probes import Health

if TYPE_CHECKING:
    # The kubernetes client is imported only where enrichment is configured.
    from collector.enrich import Enricher, PodInfo

log = logging.getLogger("collector.agent")

UNSEEN_MARGIN = 60.0
"""Seconds before the previous run's last save from which a .gz without a checkpoint is
taken as never seen: a file that old would have been seen and checkpointed by that run."""

READ_SIZE = 1024 * 1024
"""Bytes read from one file per turn: large reads keep syscalls and Python calls per line low."""


@dataclass(eq=False)
class File:
    tail: Tail
    path: str
    group: Group
    rotated: bool
    mtime: float
    seen: bool = True
    encoder: Encoder | None = None
    decode: Decoder | None = None
    fast: FastPaths | None = None
    acked: int = 0
    """End of the bytes whose records the sink acknowledged: what the checkpoint holds."""

    def committable(self) -> int:
        held = self.group.joiner.held_from(self)
        return self.tail.offset if held is None else min(held, self.tail.offset)


@dataclass(eq=False)
class Group:
    """The files of one container (one folder): current, rotated and unlinked-but-open."""

    folder: str
    joiner: Joiner
    meta: dict[str, Any]
    born: float = field(default_factory=time.monotonic)
    files: list[File] = field(default_factory=list)
    info: PodInfo | None = None
    """What the Kubernetes API said about this container, once it said anything."""
    seen_version: int = -1
    in_flight: int = 0
    failed: bool = False
    """A batch failed for good: checkpoints of this group stay where they are this run."""

    @property
    def key(self) -> str:
        return str(self.meta.get("container.id") or self.folder)


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
        self.enricher = enricher
        self.health = health or Health()
        self.checkpoints = Checkpoints(config.state_dir)
        self.discovery = Discovery(
            config.docker_root, config.log_root, config.include, config.exclude
        )
        self.files: dict[tuple[int, int], File] = {}
        self.groups: dict[str, Group] = {}
        self.finished: dict[tuple[int, int], tuple[int, float]] = {}
        """Files read to their end and let go, with their size and mtime then: not opened
        again. The mtime tells a new file on a reused inode that happens to be as long."""
        self.stopping = False
        self.waiting = 0
        self.next_bound = 0.0
        # What the brokers take by default (message.max.bytes), less a batch header; raised
        # with --kafka message.max.bytes=N where the brokers allow more.
        self.message_limit = int(config.kafka.get("message.max.bytes", 1_000_000)) - 512
        self.processor = Processor(
            Limits(config.parse_max_chars, config.parse_max_depth, config.parse_max_fields),
            config.redact,
            config.redact_builtin,
        )
        self.opened: set[tuple[int, int]] = set()
        """Every file opened in this run, for the --once summary."""
        self.scanned = False
        for name, root in (("docker_root", config.docker_root), ("log_root", config.log_root)):
            if not os.path.isdir(root):
                log.warning("%s %s is not a folder: no logs will be found there", name, root)

    # --- discovery -------------------------------------------------------------------------

    def scan(self) -> None:
        merged: dict[tuple[int, int], list[Found]] = {}
        for found in self.discovery.scan():
            merged.setdefault((found.dev, found.ino), []).append(found)
        if not self.scanned:
            self.scanned = True
            self.say_found(merged)
        for file in self.files.values():
            file.seen = False
        # Identities not on disk any more can come back only as new files (inode reuse).
        self.finished = {k: v for k, v in self.finished.items() if k in merged}
        waiting = behind = 0
        for identity, paths in merged.items():
            file = self.files.get(identity)
            if file is None:
                size = paths[0].size
                if size == 0 or self.finished.get(identity) == (size, paths[0].mtime):
                    continue
                if len(self.files) >= self.config.max_open_files:
                    waiting += 1
                    continue
                if self.excluded(paths):
                    continue
                file = self.open(identity, paths)
                if file is None:
                    continue
            file.seen = True
            file.rotated = all(p.rotated for p in paths)
            file.mtime = max(p.mtime for p in paths)
            file.path = preferred(paths).path
            if file.encoder is not None:
                file.encoder.rename(file.path)
            if file.tail.fingerprint:
                self.checkpoints.touch(file.tail.fingerprint)
            # A .gz's own size is not its content's.
            size = file.tail.size() if isinstance(file.tail, GzipTail) else paths[0].size
            behind += max(0, size - file.tail.offset)
        METRICS.behind.set(behind)
        if waiting and waiting != self.waiting:
            log.warning("max_open_files=%d reached: %d files wait", len(self.files), waiting)
        self.waiting = waiting
        METRICS.files_waiting.set(waiting)
        for group in self.groups.values():
            group.files.sort(key=age)
        self.bound_deleted()
        METRICS.files_open.set(len(self.files))

    def say_found(self, merged: dict[tuple[int, int], list[Found]]) -> None:
        """What the first scan found, so a wrong root or glob shows at start."""
        folders = {os.path.dirname(preferred(paths).real) for paths in merged.values()}
        log.info("found %d log files of %d containers", len(merged), len(folders))
        if not merged and (self.config.include or self.config.exclude):
            log.warning(
                "no log file passes include %s and exclude %s yet",
                self.config.include,
                self.config.exclude,
            )

    def open(self, identity: tuple[int, int], paths: list[Found]) -> File | None:
        best = preferred(paths)
        folder = os.path.dirname(best.real)
        kind = GzipTail if best.gzipped else Tail
        try:
            tail = kind.open(best.path, folder, self.config.max_record_bytes + 64 * 1024)
        except OSError as exc:
            log.warning("cannot open %s: %s", best.path, exc)
            return None
        if (tail.dev, tail.ino) != identity:
            # Replaced between the scan and the open: the next scan sees the new file.
            tail.close()
            return None
        if isinstance(tail, GzipTail) and not self.unfinished(tail, best):
            tail.close()
            return None
        group = self.groups.get(folder)
        meta: dict[str, Any] = {}
        for p in paths:
            meta.update(p.meta)
        if group is None:
            rule = self.multiline_rule(meta)
            joiner = Joiner(
                rule,
                self.config.max_record_bytes,
                self.config.multiline_timeout,
                self.config.partial_timeout,
            )
            group = self.groups[folder] = Group(folder, joiner, meta)
        else:
            group.meta.update(meta)
        file = File(tail, best.path, group, best.rotated, best.mtime)
        group.files.append(file)
        self.files[identity] = file
        self.opened.add(identity)
        log.debug("opened %s", best.path)
        return file

    def unfinished(self, tail: GzipTail, found: Found) -> bool:
        """Whether a .gz holds what was never read of a file: then it is read.

        That is the rest of a file begun before a restart and not read to its end, or a
        whole file written after the previous run last saved its checkpoints (kubelet
        rotated it twice while the collector was away). Older files without a checkpoint
        are history from before the collector knew them; a .gz whose original is still
        there or still open is read through the original.
        """
        if os.path.exists(found.path.removesuffix(".gz")):
            return False
        identified = tail.identify()
        if identified and any(
            # A container's newer files wait, open but not yet identified, while an
            # older one is read: identified here, or the .gz would be a second reader.
            f.tail.folder == tail.folder
            and f.tail.identify()
            and f.tail.fingerprint == tail.fingerprint
            for f in self.files.values()
        ):
            return False
        resume = self.checkpoints.get(tail.fingerprint) if tail.fingerprint else None
        stopped = self.checkpoints.saved_at
        if resume is None and identified and stopped is not None:
            begun = started(tail.first_bytes(FINGERPRINT_BYTES))
            if begun is not None and begun >= stopped - UNSEEN_MARGIN:
                resume = 0
        # The gzip trailer holds the content's length modulo 2**32.
        if resume is None or resume % 2**32 == tail.isize:
            self.finished[(found.dev, found.ino)] = (found.size, found.mtime)
            return False
        METRICS.gzip_files_read.inc()
        log.info("reading the rest of %s from %d", found.path, resume)
        return True

    def excluded(self, paths: list[Found]) -> bool:
        """Excluded by annotation: such files are not even opened."""
        if self.enricher is None:
            return False
        meta: dict[str, Any] = {}
        for p in paths:
            meta.update(p.meta)
        info = self.enricher.lookup(meta)
        return info is not None and info.excluded

    def metadata(self, group: Group, now: float) -> bool:
        """Take what the API knows of the group's pod; False while its records should wait."""
        enricher = self.enricher
        if enricher is None:
            return True
        if group.seen_version != enricher.version:
            group.seen_version = enricher.version
            info = enricher.lookup(group.meta)
            # A pod purged after its grace keeps the metadata its files already had.
            if info is not None and info != group.info:
                self.apply(group, info)
        if group.info is None:
            return now - group.born >= self.config.metadata_wait
        return not group.info.excluded

    def apply(self, group: Group, info: PodInfo) -> None:
        group.info = info
        group.joiner.rule = self.group_rule(group)
        for file in group.files:
            if file.encoder is not None:
                file.encoder.mode = self.parser_mode(group)
                file.encoder.update(self.record_meta(group), missing=False)

    def group_rule(self, group: Group) -> MultilineRule | None:
        """The group's multi-line rule: its pod's annotation when valid, else the node's."""
        rule = self.multiline_rule(group.meta)
        wanted = group.info.multiline if group.info is not None else None
        if wanted:
            try:
                rule = rule_for(wanted)
            except ValueError as exc:
                log.warning("pod annotation ignored for %s: %s", group.folder, exc)
        return rule

    def maybe_reload(self) -> None:
        """Settings read again when asked (SIGHUP) or when the config file changed."""
        if self.reloader is not None and self.reloader.due():
            changed = self.reloader.read(self.config)
            if changed is not None:
                self.reconfigure(changed)

    def reconfigure(self, config: Config) -> None:
        """New settings (collector.reload) applied in place: files stay open where they are.

        Files the new include/exclude no longer select are let go (reason `excluded`); their
        checkpoints stay, so selecting them again later resumes where reading stopped.
        """
        self.config = config
        self.discovery.include, self.discovery.exclude = config.include, config.exclude
        self.processor = Processor(
            Limits(config.parse_max_chars, config.parse_max_depth, config.parse_max_fields),
            config.redact,
            config.redact_builtin,
        )
        for group in self.groups.values():
            group.joiner.rule = self.group_rule(group)
            group.joiner.timeout = config.multiline_timeout
            for file in group.files:
                if file.encoder is not None:
                    file.encoder.processor = self.processor
                    file.encoder.mode = self.parser_mode(group)
        for file in list(self.files.values()):
            if not self.discovery.wanted(file.path):
                self.let_go(file, "excluded", "no longer selected by include/exclude")

    def parser_mode(self, group: Group) -> str:
        """The container's parser: its pod's annotation when valid, else the node's."""
        wanted = group.info.parser if group.info is not None else None
        if wanted is not None:
            try:
                return mode(wanted)
            except ValueError as exc:
                log.warning("pod annotation ignored for %s: parser %s", group.folder, exc)
        return self.config.parser

    def record_meta(self, group: Group) -> dict[str, Any]:
        meta = dict(group.meta)
        if group.info is not None:
            meta.update(group.info.fields)
        meta["host.name"] = self.config.node_name
        return meta

    def multiline_rule(self, meta: dict[str, Any]) -> MultilineRule | None:
        name = "/".join(
            str(meta.get(k, ""))
            for k in ("kubernetes.namespace", "kubernetes.pod.name", "kubernetes.container.name")
        )
        for glob, rule in self.config.multiline:
            if fnmatch.fnmatchcase(name, glob):
                return rule
        return None

    def identify(self, file: File) -> bool:
        """Once the first line is complete: format, checkpoint, encoder."""
        tail = file.tail
        if not tail.identify():
            return False
        assert tail.fingerprint is not None
        kind = detect(tail.first_bytes(512))
        file.decode = DECODERS[kind]
        file.fast = FAST_PATHS[kind]
        resume = self.checkpoints.get(tail.fingerprint)
        if resume is not None and resume <= tail.size():
            tail.seek(resume)
            file.acked = resume
            log.debug("resuming %s at %d", file.path, resume)
        meta = self.record_meta(file.group)
        meta.setdefault("container.runtime", "docker" if kind == "docker" else "cri")
        file.encoder = Encoder(
            file.path, tail.fingerprint, meta, self.processor, self.parser_mode(file.group)
        )
        if self.enricher is not None and file.group.info is None:
            file.encoder.update(meta, missing=True)
        return True

    # --- reading ---------------------------------------------------------------------------

    def turn(self) -> bool:
        """Read one chunk from each readable file; True when anything was read."""
        worked = False
        now = time.monotonic()
        for group in list(self.groups.values()):
            if not self.metadata(group, now):
                if group.info is not None and group.info.excluded:
                    self.exclude(group)
                continue
            for file in list(group.files):
                if file.encoder is None and not self.identify(file):
                    break
                if file.tail.truncated():
                    log.info("%s was truncated; reading it from the start", file.path)
                    file.tail.restart()
                    file.encoder = None
                    file.acked = 0
                    if not self.identify(file):
                        break
                # One chunk per container a turn, from its oldest file with complete lines:
                # newer files wait until the older ones are read to their end.
                chunk = self.reads.read(file.tail, READ_SIZE)
                if chunk is not None:
                    self.process(file, chunk, now)
                    worked = True
                    break
                if self.releasable(file):
                    self.release(file)
                elif isinstance(file.tail, GzipTail) and file.tail.problem is not None:
                    self.let_go(file, "unreadable", file.tail.problem)
            if group.joiner.holding():
                out: list[Record] = []
                behind = any(f.tail.unread() for f in group.files)
                group.joiner.expire(now, out, behind=behind)
                if out:
                    self.send(group, self.encode(out))
            if not group.files and not group.joiner.holding() and group.in_flight == 0:
                del self.groups[group.folder]
        return worked

    def process(self, file: File, chunk: Chunk, now: float) -> None:
        """The hot loop: a read goes the fast paths when it can, else decode -> join -> encode."""
        joiner = file.group.joiner
        joiner.now = now
        assert file.encoder is not None
        assert file.fast is not None
        template = file.encoder.template
        fast = file.fast if joiner.rule is None else None
        # Records the fast paths build are never cut: longer lines go the general path. The
        # template's holes take a time, a stream and two offsets: under 128 bytes.
        limit = min(self.config.max_record_bytes, self.message_limit - len(template) - 128)
        values = None
        if chunk.rest is not None:
            # One line longer than the tail keeps: its head and its last bytes.
            assert file.decode is not None
            out: list[Record] = []
            joiner.push(file, chunk.offset, file.decode(chunk.data, chunk.rest), out)
            values = self.encode(out)
            METRICS.lines_read.inc()
        elif fast is not None and not joiner.pieces and self.processor.clean(chunk.data):
            values = fast.chunk(chunk.data, chunk.offset, template, limit, self.levelled(file))
            if values is not None:
                METRICS.lines_read.inc(chunk.data.count(b"\n") + 1)
        if values is None:
            values = self.by_line(file, chunk, fast, limit)
        METRICS.bytes_read.inc(chunk.end - chunk.offset)
        self.send(file.group, values)

    def by_line(self, file: File, chunk: Chunk, fast: FastPaths | None, limit: int) -> list[bytes]:
        """Line by line: the per-line fast paths, else decode -> join -> encode."""
        joiner = file.group.joiner
        push = joiner.push
        pieces = joiner.pieces
        decode = file.decode
        assert decode is not None
        assert file.encoder is not None
        template = file.encoder.template
        lines = chunk.data.split(b"\n")
        # The one-line fast paths give no level: with a processor every line goes general.
        one = None
        if fast is not None and file.encoder.processor is None:
            one = fast.plain if plain(chunk.data) else fast.line
        values: list[bytes] = []
        out: list[Record] = []
        offset = chunk.offset
        for raw in lines:
            # Held pieces of a split line must see every following line of their stream.
            value = one(raw, offset, template) if one and not pieces and len(raw) <= limit else None
            if value is not None:
                values.append(value)
            else:
                push(file, offset, decode(raw), out)
                if out:
                    values += self.encode(out)
                    out.clear()
            offset += len(raw) + 1
        METRICS.lines_read.inc(len(lines))
        return values

    def levelled(self, file: File) -> Levelled | None:
        """What the chunk paths need to give records their level and leave JSON lines."""
        encoder = file.encoder
        assert encoder is not None
        if encoder.processor is None:
            return None
        level, parser = encoder.processor.fast_level, encoder.mode
        decode = file.decode
        assert decode is not None

        def general(raw: bytes, offset: int) -> list[bytes]:
            out: list[Record] = []
            file.group.joiner.push(file, offset, decode(raw), out)
            return self.encode(out)

        def parsed(time: bytes, escaped: bytes, stream: bytes, offset: int) -> list[bytes]:
            # The joiner's record of a whole line when it holds nothing and has no rule.
            text = orjson.loads(b'"' + escaped + b'"')
            return self.encode([Record(file, offset, time.decode(), stream.decode(), text, ())])

        return Levelled(
            encoder.level_template,
            lambda text: level(text, parser),
            general,
            lambda: file.group.joiner.pieces,
            parsed,
            lambda data: encoder.processor.levelless(data, parser),
        )

    def encode(self, records: list[Record]) -> list[bytes]:
        errors = sum(1 for r in records if "parse_error" in r.tags)
        if errors:
            METRICS.parse_errors.inc(errors)
        values = [r.source.encoder.encode(r) for r in records]
        limit = self.message_limit
        for n, value in enumerate(values):
            if len(value) > limit:
                values[n] = self.fit(records[n], len(value) - limit)
        return values

    def fit(self, record: Record, over: int) -> bytes:
        """Cut a record's text until its message fits what Kafka accepts; tag it truncated.

        Only joined records can grow this large (a runtime line is at most 16 KiB), so the
        fast path never needs this. Removing k characters removes at least k bytes, so a
        few rounds suffice even for text that escapes to more bytes than it has characters.
        """
        tags = record.tags
        if "truncated" not in tags:
            METRICS.truncated.inc()
            tags = (*tags, "truncated")
        text = record.text
        while True:
            text = text[: max(0, len(text) - over - 64)]
            value = record.source.encoder.encode(record._replace(text=text, tags=tags))
            over = len(value) - self.message_limit
            if over <= 0 or not text:
                return value

    def send(self, group: Group, values: list[bytes]) -> None:
        if self.enricher is not None and group.info is None and values:
            METRICS.metadata_missing.inc(len(values))
        marks = [(f, f.committable()) for f in group.files]
        if not values and group.in_flight:
            return
        group.in_flight += 1
        size = sum(map(len, values))
        self.budget.take(size)

        def done(ok: bool) -> None:
            self.budget.give(size)
            group.in_flight -= 1
            if not ok:
                group.failed = True
            if group.failed:
                return
            for f, mark in marks:
                if mark > f.acked:
                    f.acked = mark

        self.sink.send(group.key, values, done)

    def releasable(self, file: File) -> bool:
        """A file no path reaches any more, or a rotated one, read to its end and delivered."""
        if file.seen and not file.rotated:
            return False
        tail = file.tail
        return (
            tail.size() == tail.offset == file.acked and file.group.joiner.held_from(file) is None
        )

    def release(self, file: File) -> None:
        self.save_file(file)
        identity = (file.tail.dev, file.tail.ino)
        st = os.fstat(file.tail.fd)
        self.finished[identity] = (st.st_size, st.st_mtime)
        del self.files[identity]
        file.group.files.remove(file)
        self.reads.forget(file.tail)
        file.tail.close()
        log.debug("released %s", file.path)

    def let_go(self, file: File, reason: str, why: str) -> None:
        """Close a file before its end; what it held unread is counted and said once."""
        unread = max(0, file.tail.size() - file.tail.offset)
        METRICS.files_let_go.labels(reason).inc()
        METRICS.unread_bytes_let_go.labels(reason).inc(unread)
        level = logging.INFO if reason == "excluded" else logging.WARNING
        log.log(level, "let go of %s with %d bytes unread: %s", file.path, unread, why)
        self.release(file)

    def exclude(self, group: Group) -> None:
        """A pod or container excluded after its files were opened: they are closed.

        What is written until then is skipped for good (the checkpoint moves to the end),
        so lifting the exclusion later does not ship what was excluded; what joining held
        of it is dropped.
        """
        for file in list(group.files):
            if file.encoder is not None:
                file.acked = file.tail.size()
            self.let_go(file, "excluded", "its pod or container is excluded")
        group.joiner.pieces.clear()
        group.joiner.groups.clear()
        if group.in_flight == 0:
            del self.groups[group.folder]

    def bound_deleted(self) -> None:
        """Files deleted on disk but still open keep their space: past the bounds (count and
        bytes), the oldest are let go, so a broker away for long cannot fill the node's disk."""
        deleted: list[tuple[float, int, File]] = []
        for file in self.files.values():
            try:
                st = os.fstat(file.tail.fd)
            except OSError:
                continue
            if st.st_nlink == 0:
                deleted.append((st.st_mtime, st.st_size, file))
        deleted.sort(key=lambda d: d[0])
        total = sum(d[1] for d in deleted)
        files, limit = self.config.max_deleted_files, self.config.max_deleted_bytes
        while deleted and (len(deleted) > files or total > limit):
            _, size, file = deleted.pop(0)
            total -= size
            why = f"deleted files held open exceed max_deleted_files={files} or "
            self.let_go(file, "deleted_limit", why + f"max_deleted_bytes={limit}")
        METRICS.deleted_open_files.set(len(deleted))
        METRICS.deleted_open_bytes.set(total)

    # --- checkpoints and the loop -----------------------------------------------------------

    def save_file(self, file: File) -> None:
        if file.tail.fingerprint is not None and file.encoder is not None:
            self.checkpoints.set(file.tail.fingerprint, file.acked, file.path)

    def save(self) -> None:
        for file in self.files.values():
            self.save_file(file)
        self.checkpoints.save()

    def idle(self) -> bool:
        """Everything found has been read to its current end and delivered."""
        for f in self.files.values():
            if f.encoder is None:
                if f.tail.identify():
                    return False
            elif f.tail.unread() and not self.reads.waiting_at_end(f.tail):
                return False
        return all(g.in_flight == 0 for g in self.groups.values())

    def flush_held(self) -> None:
        for group in self.groups.values():
            out: list[Record] = []
            # A runtime piece's rest may be a moment away: outside --once it stays unsent,
            # its bytes before the checkpoint, and is joined after a restart.
            group.joiner.expire(time.monotonic(), out, force=True, pieces=self.config.once)
            if out:
                self.send(group, self.encode(out))

    def paused(self) -> bool:
        """While the sink has no room: still alive, and asked whether to give up."""
        now = self.health.beat = time.monotonic()
        # Deleted files pile up while the broker is away: that is when their bound matters.
        if now >= self.next_bound:
            self.next_bound = now + self.config.scan_interval
            self.bound_deleted()
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
        for file in self.files.values():
            file.tail.close()
        return 0


def preferred(paths: list[Found]) -> Found:
    """The name shown in log.file.path: the real file over a symlink, pods over containers."""
    return min(paths, key=lambda p: (p.path != p.real, "/containers/" in p.path, p.path))


def age(file: File) -> tuple[int, float, str]:
    """Oldest first: rotated files hold lines written before the current one.

    kubelet compresses every rotated file but the newest, so a .gz is older than any
    rotated file left plain; a .gz's mtime is when it was compressed, its name tells when
    it was rotated. A file no path reaches any more keeps the kind and mtime it was last
    seen with: a current file renamed and unlinked between two scans is still older than
    the new current one, yet newer than a rotated file left unread.
    """
    if isinstance(file.tail, GzipTail):
        return (1, 0.0, file.path)
    return (2 if file.rotated else 3, file.mtime, file.path)
