"""Reading and batching: which file is read next, its chunk made into records, sent.

Each turn gives every container with lines to read whose records may go (collector.annotate)
one read from `next_chunk`, in the order collector.schedule gives and of at most what it
allows (the quantum, less under a pod's rate limit): from its oldest file with complete
lines, so a container's lines reach the sink in the order they were written even across
rotation, and a record split across a rotation is still joined. A chunk takes the fast paths
when it can (collector.fastpath), else decode -> join -> encode; records too large for one
message are cut to fit. Each batch goes to the sink with the marks its files may advance
their checkpoints to once it is acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import orjson

from collector.annotate import Annotator
from collector.budget import Budget, FileReads
from collector.config import Config
from collector.fastpath import FastPaths, Levelled
from collector.files import File, Group, OpenFiles
from collector.gztail import GzipTail
from collector.join import Record
from collector.metrics import METRICS
from collector.process import scanned
from collector.route import Topics
from collector.schedule import READ_QUANTUM
from collector.sink import Sink
from collector.tail import Chunk, plain

# The agent's parts log under its name, as before they were parts: one name to filter on.
log = logging.getLogger("collector.agent")

FIT_ROUNDS = 32
"""Encodes of a record too large for one message while its text is cut to fit."""
FIT_SLACK = 64
"""Bytes below the message limit at which a cut record is taken as fitting well enough."""


class Reader:
    def __init__(
        self,
        config: Config,
        files: OpenFiles,
        annotator: Annotator,
        reads: FileReads,
        budget: Budget,
        sink: Sink,
    ) -> None:
        self.config = config
        self.files = files
        self.annotator = annotator
        self.reads = reads
        self.budget = budget
        self.sink = sink
        self.topics = Topics(config.topic, config.topic_fallback, config.node_name)
        # What the brokers take by default (message.max.bytes), less a batch header; raised
        # with --kafka message.max.bytes=N where the brokers allow more.
        self.message_limit = int(config.kafka.get("message.max.bytes", 1_000_000)) - 512
        self.restless = False
        """The last turn met a container that needs visits whether or not it is written."""

    # --- which file next --------------------------------------------------------------------

    def turn(self) -> bool:
        """Read one chunk from each container with lines to read; True when anything was read.

        collector.schedule says which containers, in which order, and how much of each.
        """
        worked = False
        now = time.monotonic()
        groups, schedule = self.files.groups, self.files.schedule
        self.restless = False
        for folder in schedule.turn(groups, lambda f: self.is_restless(groups[f]), now):
            group = groups[folder]
            if not self.annotator.metadata(group, now):
                if group.info is not None and group.info.excluded:
                    self.files.exclude(group)
                else:
                    # Waiting for its pod's metadata: looked at again until it may go.
                    schedule.mark(folder)
                continue
            limit = schedule.limit(folder, group.info.rate_limit if group.info else None)
            size = schedule.allowance(folder, group.pod, limit, now)
            found = self.next_chunk(group, size) if size else None
            if found is not None:
                file, chunk = found
                lines = 0
                if limit is not None and limit.lines:
                    lines = 1 if chunk.rest is not None else chunk.data.count(b"\n") + 1
                schedule.spent(
                    folder, group.pod, limit, now, chunk.end - chunk.offset, lines, file.tail.more
                )
                self.process(file, chunk, now)
                worked = True
            elif self.budget.exhausted():
                # Not read for want of memory: looked at again next turn.
                schedule.mark(folder)
            unread = sum(f.tail.unread() for f in group.files) if not size else 0
            if unread:
                schedule.throttled(folder, self.labels(group), unread)
            elif found is None or not found[0].tail.more:
                schedule.caught_up(folder)
            if group.joiner.holding():
                out: list[Record] = []
                behind = any(f.tail.unread() for f in group.files)
                group.joiner.expire(now, out, behind=behind)
                if out:
                    self.send(group, self.encode(out))
            if not group.files and not group.joiner.holding() and group.in_flight == 0:
                self.files.drop(group)
            else:
                # A container visited because it was told to still needs its timers looked
                # at while it has nothing new.
                self.is_restless(group)
        return worked

    def is_restless(self, group: Group) -> bool:
        """Whether the container needs a visit every turn, events or not: a record held for
        joining (its timeout), a rotated or unlinked file to finish and let go, a file
        inotify could not watch."""
        restless = (
            group.joiner.holding()
            or group.folder in self.files.polled
            or any(f.rotated or not f.seen for f in group.files)
        )
        self.restless = self.restless or restless
        return restless

    def labels(self, group: Group) -> tuple[str, str, str]:
        """Namespace, pod and container names of a throttled container's metric series."""
        meta = group.info.fields if group.info is not None else group.meta
        return (
            str(meta.get("kubernetes.namespace", "")),
            str(meta.get("kubernetes.pod.name", "")),
            str(meta.get("kubernetes.container.name") or group.folder),
        )

    def next_chunk(self, group: Group, size: int = READ_QUANTUM) -> tuple[File, Chunk] | None:
        """The container's next read: from its oldest file with complete lines.

        Newer files wait until the older ones' complete lines are read. A file with none yet
        holds nothing to keep in order, whether its last line or its first is unfinished (not
        yet identified): it is passed over, else a first line that never ends (a torn write,
        zeros a crash left) would stop the container for good; it is read once finished.
        Files found read to their end and delivered on the way are released, unreadable .gz
        files let go.
        """
        for file in list(group.files):
            if file.encoder is None and not self.files.identify(file):
                continue
            if file.tail.truncated() and not self.files.restart(file):
                continue
            chunk = self.reads.read(file.tail, size)
            if chunk is not None:
                return file, chunk
            if self.files.releasable(file):
                self.files.release(file)
            elif isinstance(file.tail, GzipTail) and file.tail.problem is not None:
                # Before a last line is looked for: a cut stream's torn end is no line.
                self.files.let_go(file, "unreadable", file.tail.problem)
            elif self.files.ended_unfinished(file):
                chunk = self.reads.finish(file.tail)
                if chunk is not None:
                    METRICS.unfinished_lines_ended.inc()
                    log.info("%s ended without a newline: its last line is sent", file.path)
                    return file, chunk
        return None

    # --- a chunk into records ---------------------------------------------------------------

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
        elif fast is not None and not joiner.pieces:
            # A line holding a redaction keyword goes the general path on its own, in its
            # place; the rest of the read stays on the chunk path.
            secrets = self.annotator.processor.secrets(chunk.data)
            levelled = self.levelled(file, secrets or ())
            if secrets is not None and (levelled is not None or not secrets):
                found = fast.chunk(chunk.data, chunk.offset, template, limit, levelled)
                if found is not None:
                    values = found.values
                    METRICS.lines_read.inc(found.lines)
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

    def levelled(self, file: File, secrets: Sequence[int] = ()) -> Levelled | None:
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
            record = Record(file, offset, time.decode(), stream.decode(), text, ())
            return self.encode([record], scanned(escaped))

        return Levelled(
            encoder.level_template,
            lambda text: level(text, parser),
            general,
            lambda: file.group.joiner.pieces,
            parsed,
            lambda data: encoder.processor.levelless(data, parser),
            secrets,
        )

    def encode(self, records: list[Record], scanned: bool = False) -> list[bytes]:
        """`scanned`: see Processor.apply."""
        errors = sum(1 for r in records if "parse_error" in r.tags)
        if errors:
            METRICS.parse_errors.inc(errors)
        values = [r.source.encoder.encode(r, scanned) for r in records]
        limit = self.message_limit
        for n, value in enumerate(values):
            if len(value) > limit:
                values[n] = self.fit(records[n], len(value) - limit)
        return values

    def fit(self, record: Record, over: int) -> bytes:
        """Cut a record's text until its message fits what Kafka accepts; tag it truncated.

        Only joined records can grow this large (a runtime line is at most 16 KiB), so the
        fast path never needs this. What a character of the text weighs in the record varies
        (UTF-8, JSON escapes; a parsed text is there twice, as message and event.original,
        and its fields a third time), so the longest head that fits is searched for between
        one that fits (at first none) and one that does not (at first the whole text): by
        interpolating their sizes, which lands on it at once when the weight is even, or by
        halving when that kept moving the same end. FIT_ROUNDS encodes at most; done within
        FIT_SLACK bytes of the limit.
        """
        tags = record.tags
        if "truncated" not in tags:
            METRICS.truncated.inc()
            tags = (*tags, "truncated")
        encode = record.source.encoder.encode
        limit = self.message_limit
        best = encode(record._replace(text="", tags=tags))
        text = record.text
        short, short_size = 0, len(best)
        long, long_size = len(text), limit + over
        last, streak = False, 0
        for _ in range(FIT_ROUNDS):
            if short_size > limit - FIT_SLACK or long - short <= 1:
                break
            if streak >= 2:
                keep = (short + long) // 2
            else:
                room = limit - FIT_SLACK // 2 - short_size
                keep = short + room * (long - short) // (long_size - short_size)
            keep = min(max(keep, short + 1), long - 1)
            value = encode(record._replace(text=text[:keep], tags=tags))
            fits = len(value) <= limit
            if fits:
                best, short, short_size = value, keep, len(value)
            else:
                long, long_size = keep, len(value)
            streak = streak + 1 if fits == last else 1
            last = fits
        return best

    # --- to the sink and back ---------------------------------------------------------------

    def send(self, group: Group, values: list[bytes]) -> None:
        """One batch of the container's records; once acknowledged, its files' checkpoints
        may advance to where they stood when it was sent."""
        if self.annotator.enricher is not None and group.info is None and values:
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

        self.sink.send(group.key, values, done, self.topics.of(group, len(values)))

    def flush_held(self) -> None:
        """What joining holds is sent now: at stop, and when --once has read everything."""
        for group in self.files.groups.values():
            out: list[Record] = []
            # A runtime piece's rest may be a moment away: outside --once it stays unsent,
            # its bytes before the checkpoint, and is joined after a restart.
            group.joiner.expire(time.monotonic(), out, force=True, pieces=self.config.once)
            if out:
                self.send(group, self.encode(out))

    def idle(self) -> bool:
        """Everything found has been read to its current end and delivered (and no file
        waits for a slot under max_open_files)."""
        if self.files.waiting:
            return False
        for f in self.files.files.values():
            if f.encoder is None:
                if f.tail.identify():
                    return False
            elif f.tail.unread() and not self.reads.waiting_at_end(f.tail):
                return False
        return all(g.in_flight == 0 for g in self.files.groups.values())

    def unfinished(self) -> tuple[int, int]:
        """Files, and their bytes, left unread because their last line has no newline yet.

        Asked once everything else is read (`idle`): then all a file holds past its last
        line handed out is that started line (the whole file while its first is unfinished),
        the runtime's to finish. Bytes of it already read and held count as unread: they
        were not shipped.
        """
        files = size = 0
        for f in self.files.files.values():
            left = f.tail.size() - f.tail.offset
            if left > 0:
                files += 1
                size += left
        return files, size
