"""Reassembling records: runtime splits (16 KiB pieces) first, then multi-line groups.

Both happen per stream of one container, so stdout and stderr never mix; a record runs on
from a file into its rotation successor, never into the file of the container's next run.
A record keeps the offset and time of its first line. While a record is held back
(waiting for its next piece or continuation line), `held_from()` tells the agent how far the
file's checkpoint may safely advance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from collector.decode import EMPTY, INVALID_UTF8, REPLACED, Line, mend
from collector.metrics import METRICS
from collector.multiline import MultilineRule


class Record(NamedTuple):
    source: Any
    """The file the first line came from (the joiner does not look inside it)."""
    offset: int
    time: str
    stream: str
    text: str
    tags: tuple[str, ...]


PARSE_ERROR = ("parse_error",)
NOTHING: dict[Any, int] = {}
"""No other files (never written to: `Held.later` copies what it takes)."""
log = logging.getLogger("collector.join")


def one_run(source: Any) -> str:
    """For sources that tell no runs apart: every line is from one run of the container."""
    return ""


def tags_of(multiline: bool, truncated: bool, invalid: bool) -> tuple[str, ...]:
    """Tags in one order, whichever path made the record; cut and mended records counted."""
    tags: tuple[str, ...] = ("multiline",) if multiline else ()
    if truncated:
        METRICS.truncated.inc()
        tags += ("truncated",)
    if invalid:
        METRICS.invalid_utf8.inc()
        tags += ("invalid_utf8",)
    return tags


def utf8_size(text: str) -> int:
    """Bytes of `text` in a record: what --max-record-bytes counts. Counted only for text
    that is not ASCII (a flag Python keeps), where a character takes up to four."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def utf8_head(text: str, size: int) -> str:
    """The longest head of `text` of at most `size` bytes, whole characters only."""
    if text.isascii():
        return text[:size]
    return text.encode("utf-8", "surrogatepass")[:size].decode("utf-8", "ignore")


def cut_bytes(text: str) -> int:
    """The bytes a cut-off piece of text held (pieces being mended count their escapes)."""
    return len(text.encode("utf-8", "surrogateescape"))


class Held:
    """A record under construction on one stream."""

    __slots__ = (
        "first",
        "invalid",
        "later",
        "lines",
        "mend",
        "offset",
        "previous",
        "since",
        "size",
        "source",
        "time",
        "truncated",
    )

    def __init__(self, source: Any, offset: int, time: str, text: str, since: float) -> None:
        self.source = source
        self.offset = offset
        self.time = time
        self.lines = [text]
        self.first = text
        self.previous = text
        self.size = utf8_size(text)
        self.truncated = False
        self.since = since
        self.mend = False
        """A piece held bytes that were not UTF-8 on their own (a character cut in two)."""
        self.invalid = False
        """Text that was not UTF-8 was replaced (tag invalid_utf8)."""
        self.later: dict[Any, int] = {}
        """Files other than `source` the record took lines from (it ran across a rotation),
        with the offset of the first: their checkpoints must not pass it while it is held."""

    def took(self, source: Any, offset: int, later: dict[Any, int]) -> None:
        """A line from `source` at `offset` (and what it took from other files) joined in."""
        if source is not self.source and source not in self.later:
            self.later[source] = offset
        for other, start in later.items():
            if other is not self.source and other not in self.later:
                self.later[other] = start


class Joiner:
    """Runtime pieces and multi-line groups of one container.

    A line the runtime split waits for its last piece for `partial_timeout`, not for the
    multi-line `timeout`: Docker and containerd write the rest at once, so a short timeout
    only cut records the runtime was still writing (the file rotated between two pieces and
    the new file was found a scan later, or the reader was behind on a loaded machine), and
    the rest became a second record. The long bound is for CRI-O, whose conmon writes a `P`
    line for output without a newline and never an `F` when the container exits. An agent
    that stops leaves held pieces to the next run (they are before its checkpoint); only a
    `--once` run ships them at its end. Multi-line groups end at a line that does not
    continue them or at `timeout`. Both timeouts count only while the agent is not behind
    on the container's files: a reader that fell behind does not cut what it has yet to
    read. A line from another run of the container (`instance` differs: it was restarted)
    ends what the previous run held, on every stream, at once: a dead container writes nothing
    more, and neither the rest of its line nor its next trace line can come after it.
    """

    def __init__(
        self,
        rule: MultilineRule | None,
        max_record: int,
        timeout: float,
        partial_timeout: float = 60.0,
        instance: Callable[[Any], str] = one_run,
    ) -> None:
        self.rule = rule
        self.max_record = max_record
        self.timeout = timeout
        self.partial_timeout = partial_timeout
        self.instance = instance
        """The run of the container a source is from (asked only when a line comes from
        another file than the last: the rare line after a rotation or a restart)."""
        self.source: Any = None
        """The source of the last line pushed."""
        self.now = 0.0
        """Set by the agent once per chunk: the clock for flush timeouts, read once not per line."""
        self.behind = 0.0
        """When the agent was last behind on the container's files: timeouts start after."""
        self.pieces: dict[str, Held] = {}
        """Runtime-split lines waiting for their last piece."""
        self.groups: dict[str, Held] = {}
        """Multi-line records waiting for a line that does not continue them."""

    def push(self, source: Any, offset: int, line: Line, out: list[Record]) -> None:
        stream = line.stream
        error = line.error
        if error is not None and error is not INVALID_UTF8 and error is not REPLACED:
            if error is EMPTY:
                METRICS.empty_lines.inc()
                return
            text, tags = line.text, PARSE_ERROR
            if line.cut or utf8_size(text) > self.max_record:
                text, tags = self.cut(text), (*PARSE_ERROR, *tags_of(False, True, False))
            out.append(Record(source, offset, line.time, stream, text, tags))
            return
        if source is not self.source:
            self.source = source
            self.runs_end(source, out)
        held = self.pieces.get(stream)
        if held is None:
            if line.partial:
                held = self.pieces[stream] = Held(source, offset, line.time, "", self.now)
                held.lines.clear()
                held.mend = error is INVALID_UTF8
                held.invalid = error is REPLACED
                self.append(held, line.text, "")
                held.truncated |= line.cut
                return
            text, time, truncated = line.text, line.time, line.cut
            invalid, later = error is REPLACED, NOTHING
            if error is INVALID_UTF8:
                text, invalid = mend(text, truncated)
        else:
            if source is not held.source:
                held.took(source, offset, NOTHING)
            held.mend |= error is INVALID_UTF8
            held.invalid |= error is REPLACED
            self.append(held, line.text, "")
            held.truncated |= line.cut
            if line.partial:
                return
            del self.pieces[stream]
            source, offset, time, later = held.source, held.offset, held.time, held.later
            text, truncated, invalid = self.complete(held)
        self.emit(source, offset, time, stream, text, truncated, invalid, out, later)

    def runs_end(self, source: Any, out: list[Record]) -> None:
        """A line from `source`, another file than the last line's: what another run of the
        container held, on any stream, is shipped as it is (that run writes no more)."""
        run = self.instance(source)
        for stream, held in list(self.pieces.items()):
            if self.instance(held.source) != run:
                del self.pieces[stream]
                self.let_go(held, stream, out)
        for stream, held in list(self.groups.items()):
            if self.instance(held.source) != run:
                del self.groups[stream]
                out.append(self.finish(held, stream))

    def let_go(self, held: Held, stream: str, out: list[Record]) -> None:
        """A runtime-split line shipped without the pieces it still waited for."""
        text, truncated, invalid = self.complete(held)
        self.emit(
            held.source, held.offset, held.time, stream, text, truncated, invalid, out, held.later
        )

    def complete(self, held: Held) -> tuple[str, bool, bool]:
        """A runtime-split line's text, whether it was cut, and whether it was not UTF-8."""
        text = "".join(held.lines)
        invalid = held.invalid
        if held.mend:
            text, bad = mend(text, held.truncated)
            invalid |= bad
        return text, held.truncated, invalid

    def cut(self, text: str) -> str:
        size = utf8_size(text)
        if size <= self.max_record:
            return text
        head = utf8_head(text, self.max_record)
        METRICS.truncated_bytes.inc(size - utf8_size(head))
        return head

    def emit(
        self,
        source: Any,
        offset: int,
        time: str,
        stream: str,
        text: str,
        truncated: bool,
        invalid: bool,
        out: list[Record],
        later: dict[Any, int] = NOTHING,
    ) -> None:
        """`later`: files other than `source` a runtime-split line took pieces from."""
        # len() first: a text of fewer characters than a quarter of the limit fits, whatever
        # they are, and that is nearly every line.
        if len(text) * 4 > self.max_record and utf8_size(text) > self.max_record:
            text = self.cut(text)
            truncated = True
        if self.rule is None:
            out.append(
                Record(source, offset, time, stream, text, tags_of(False, truncated, invalid))
            )
            return
        held = self.groups.get(stream)
        if held is not None:
            if self.rule.continues(held.first, held.previous, text):
                # A call only for the rare record that runs across a rotation.
                if source is not held.source or later:
                    held.took(source, offset, later)
                self.append(held, text, "\n")
                held.previous = text
                held.truncated |= truncated
                held.invalid |= invalid
                held.since = self.now
                return
            out.append(self.finish(held, stream))
        held = self.groups[stream] = Held(source, offset, time, text, self.now)
        held.truncated = truncated
        held.invalid = invalid
        held.later = dict(later)

    def append(self, held: Held, text: str, separator: str) -> None:
        if held.truncated:
            METRICS.truncated_bytes.inc(cut_bytes(text))
            return
        # Pieces with a cut character hold it as one escape per byte until they are decoded
        # whole: counted in characters, up to 4 bytes a character are allowed for, and the
        # cut made after decoding. Other text is counted in bytes, as the limit is.
        mend = held.mend
        limit = self.max_record * 4 if mend else self.max_record
        room = limit - held.size - len(separator)
        if room < 0 or (room == 0 and text):
            held.truncated = True
            METRICS.truncated_bytes.inc(cut_bytes(text))
            return
        size = len(text) if mend else utf8_size(text)
        if size > room:
            head = text[:room] if mend else utf8_head(text, room)
            METRICS.truncated_bytes.inc(cut_bytes(text) - cut_bytes(head))
            text = head
            size = len(head) if mend else utf8_size(head)
            held.truncated = True
        if separator:
            held.lines.append(separator)
        held.lines.append(text)
        held.size += len(separator) + size

    def finish(self, held: Held, stream: str) -> Record:
        tags = tags_of(len(held.lines) > 1, held.truncated, held.invalid)
        return Record(held.source, held.offset, held.time, stream, "".join(held.lines), tags)

    def expire(
        self,
        now: float,
        out: list[Record],
        force: bool = False,
        behind: bool = False,
        pieces: bool = True,
    ) -> None:
        """Let go of records that waited their timeout (all of them with `force`, the end of
        a run; runtime pieces then only with `pieces`). While the agent is `behind` (bytes of
        the container not read yet, where the next line may well be), no time counts."""
        if behind:
            self.behind = now
        start = self.behind

        def waited(held: Held, timeout: float) -> bool:
            return not behind and now - max(held.since, start) >= timeout

        for stream, held in list(self.pieces.items()):
            if (force and pieces) or waited(held, self.partial_timeout):
                del self.pieces[stream]
                if not force:
                    METRICS.partial_timeouts.inc()
                    log.warning(
                        "%s: a line split by the runtime waited %.0f s for its last piece; "
                        "shipped without it (offset %d)",
                        # The source is the agent's file; its path is all the log needs.
                        getattr(held.source, "path", held.source),
                        self.partial_timeout,
                        held.offset,
                    )
                self.now = now
                self.let_go(held, stream, out)
        for stream, held in list(self.groups.items()):
            if force or waited(held, self.timeout):
                del self.groups[stream]
                out.append(self.finish(held, stream))

    def held_from(self, source: Any) -> int | None:
        """The first offset in `source` of a record still held back, or None: a record
        begun in an older file holds back the lines it took from this one too."""
        starts = [
            h.offset if h.source is source else h.later[source]
            for held in (self.pieces, self.groups)
            for h in held.values()
            if h.source is source or source in h.later
        ]
        return min(starts) if starts else None

    def hand_over(self, source: Any, other: Any) -> None:
        """What is held from `source` is `other`'s from now on: `source`'s content was
        truncated away, its held records keep the old content's ids, and the next line of
        `source` is another run's to them, which ends them (`runs_end`)."""
        for held in (*self.pieces.values(), *self.groups.values()):
            if held.source is source:
                held.source = other
            if source in held.later:
                held.later[other] = held.later.pop(source)
        if self.source is source:
            self.source = other

    def holding(self) -> bool:
        return bool(self.pieces or self.groups)
