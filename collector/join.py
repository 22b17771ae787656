"""Reassembling records: runtime splits (16 KiB pieces) first, then multi-line groups.

Both happen per stream of one file (a file is one container), so stdout and stderr never
mix. A record keeps the offset and time of its first line. While a record is held back
(waiting for its next piece or continuation line), `held_from()` tells the agent how far the
file's checkpoint may safely advance.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from collector.decode import INVALID_UTF8, Line, mend
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


class Held:
    """A record under construction on one stream."""

    __slots__ = (
        "first",
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
        self.size = len(text)
        self.truncated = False
        self.since = since
        self.mend = False
        """A piece held bytes that were not UTF-8 on their own (a character cut in two)."""


class Joiner:
    def __init__(self, rule: MultilineRule | None, max_record: int, timeout: float) -> None:
        self.rule = rule
        self.max_record = max_record
        self.timeout = timeout
        self.now = 0.0
        """Set by the agent once per chunk: the clock for flush timeouts, read once not per line."""
        self.pieces: dict[str, Held] = {}
        """Runtime-split lines waiting for their last piece."""
        self.groups: dict[str, Held] = {}
        """Multi-line records waiting for a line that does not continue them."""

    def push(self, source: Any, offset: int, line: Line, out: list[Record]) -> None:
        stream = line.stream
        held = self.pieces.get(stream)
        error = line.error
        if error is not None and (error is not INVALID_UTF8 or (held is None and not line.partial)):
            text = mend(line.text)[0] if error is INVALID_UTF8 else line.text
            out.append(Record(source, offset, line.time, stream, text, PARSE_ERROR))
            return
        if held is None:
            if line.partial:
                held = self.pieces[stream] = Held(source, offset, line.time, "", self.now)
                held.lines.clear()
                held.mend = error is not None
                self.append(held, line.text, "")
                return
            text = line.text
            time = line.time
            truncated = False
        else:
            held.mend |= error is not None
            self.append(held, line.text, "")
            if line.partial:
                return
            del self.pieces[stream]
            source, offset, time = held.source, held.offset, held.time
            text, truncated = "".join(held.lines), held.truncated
            if held.mend:
                text, still_bad = mend(text, truncated)
                if still_bad:
                    tags = ("parse_error", "truncated") if truncated else PARSE_ERROR
                    out.append(Record(source, offset, time, stream, text[: self.max_record], tags))
                    return
        if len(text) > self.max_record:
            text = text[: self.max_record]
            truncated = True
        if self.rule is None:
            tags = ("truncated",) if truncated else ()
            out.append(Record(source, offset, time, stream, text, tags))
            return
        self.group(source, offset, time, stream, text, truncated, out)

    def group(
        self,
        source: Any,
        offset: int,
        time: str,
        stream: str,
        text: str,
        truncated: bool,
        out: list[Record],
    ) -> None:
        held = self.groups.get(stream)
        if held is not None:
            assert self.rule is not None
            if self.rule.continues(held.first, held.previous, text):
                self.append(held, text, "\n")
                held.previous = text
                held.truncated |= truncated
                held.since = self.now
                return
            out.append(self.finish(held, stream))
        held = self.groups[stream] = Held(source, offset, time, text, self.now)
        held.truncated = truncated

    def append(self, held: Held, text: str, separator: str) -> None:
        if held.truncated:
            return
        # Pieces with a cut character hold it as one escape per byte until they are decoded
        # whole: up to 4 bytes a character are allowed for, and the cut made after decoding.
        limit = self.max_record * 4 if held.mend else self.max_record
        room = limit - held.size - len(separator)
        if room < 0 or (room == 0 and text):
            held.truncated = True
            return
        if len(text) > room:
            text = text[:room]
            held.truncated = True
        if separator:
            held.lines.append(separator)
        held.lines.append(text)
        held.size += len(separator) + len(text)

    def finish(self, held: Held, stream: str) -> Record:
        tags: tuple[str, ...] = ()
        if len(held.lines) > 1:
            tags = ("multiline",)
        if held.truncated:
            tags += ("truncated",)
        return Record(held.source, held.offset, held.time, stream, "".join(held.lines), tags)

    def expire(self, now: float, out: list[Record], force: bool = False) -> None:
        """Let go of records that waited longer than the timeout (all of them with `force`)."""
        for stream, held in list(self.pieces.items()):
            if force or now - held.since >= self.timeout:
                del self.pieces[stream]
                text = "".join(held.lines)
                tags: tuple[str, ...] = ("truncated",) if held.truncated else ()
                if held.mend:
                    text, still_bad = mend(text, held.truncated)
                    if still_bad:
                        tags = (*tags, "parse_error")
                    if len(text) > self.max_record:
                        text = text[: self.max_record]
                        tags = tags if "truncated" in tags else (*tags, "truncated")
                if self.rule is None or "parse_error" in tags:
                    out.append(Record(held.source, held.offset, held.time, stream, text, tags))
                else:
                    self.now = now
                    self.group(
                        held.source, held.offset, held.time, stream, text, held.truncated, out
                    )
        for stream, held in list(self.groups.items()):
            if force or now - held.since >= self.timeout:
                del self.groups[stream]
                out.append(self.finish(held, stream))

    def held_from(self, source: Any) -> int | None:
        """The first offset in `source` of a record still held back, or None."""
        starts = [h.offset for h in self.pieces.values() if h.source is source]
        starts += [h.offset for h in self.groups.values() if h.source is source]
        return min(starts) if starts else None

    def holding(self) -> bool:
        return bool(self.pieces or self.groups)
