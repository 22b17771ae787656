"""Raw lines -> record bytes in one step, for the lines that need no joining.

Most lines are complete, ASCII, and written by the runtime in its exact layout. For them
decoding to a `Line`, joining and encoding through a dict is wasted work: the Docker
json-file line already holds the text JSON-escaped, and a CRI line needs only its text
escaped. These functions return None for anything else, and the caller then takes the
general path (decode -> join -> encode), which handles every case. Both paths produce
the same record.

The chunk paths take a whole read at once: one regex pass checks every line and cuts out
its fields; text that is valid UTF-8 (its non-ASCII lines checked together, or one by one)
in the runtime's own escapes is copied into the record as it is. Without levels the records
are built by C-level map/zip, so no Python code runs per line, and the path gives up on the
first line it cannot take. With levels (a `Levelled`), the same regex pass marks the lines
whose text cannot name a level (an access log's address, a stack frame's tab, punctuation
or non-ASCII first; see NO_LEVEL_*): runs of them are filled by the same C-level map, and
only the other lines take a Python step each. A line the pattern does not take (a 16 KiB
piece, control bytes, text over the limit, bytes that are not UTF-8) goes the general path
on its own, in its place, and so do the lines after a runtime piece until the joiner holds
no piece any more; a JSON object to parse skips only decoding and joining.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, filterfalse, repeat
from operator import add, itemgetter
from typing import NamedTuple

import orjson

from collector.decode import real_date
from collector.process import GENERAL

DOCKER_HEAD = b'{"log":"'
STREAM_KEY = b'","stream":"'
TIME_KEY = b'","time":"'

STAMP = (
    rb"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    rb"(?:\.\d{1,9})?Z"
)
UTC_STAMP = re.compile(STAMP).fullmatch


SECONDS: dict[bytes, bool] = {}
"""`YYYY-MM-DDThh:mm:ss` prefixes already judged: a runtime writes many lines a second."""


def utc_time(stamp: bytes) -> bool:
    """A stamp Elasticsearch's date_nanos takes as it is; others go the general path."""
    known = SECONDS.get(stamp[:19])
    if known is None:
        known = UTC_STAMP(stamp[:19] + b"Z") is not None and real_date(stamp[:10].decode())
        if len(SECONDS) > 4096:
            SECONDS.clear()
        SECONDS[stamp[:19]] = known
    if not known or stamp[-1:] != b"Z":
        return False
    size = len(stamp)
    return size == 20 or (22 <= size <= 30 and stamp[19:20] == b"." and stamp[20:-1].isdigit())


CONTROL = re.compile(rb"[\x00-\x1f]").search
VALID_ESCAPES = re.compile(
    rb'\\(?:["\\/bfnrt]|u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))'
).sub

FastPath = Callable[[bytes, int, bytes], bytes | None]


class Levelled(NamedTuple):
    """What the chunk paths need when records carry a `log.level` (collector.process)."""

    template: bytes
    """The record template with a sixth hole, the level."""
    level: Callable[[bytes], str | None]
    """A line's JSON-escaped text -> its level, None, or GENERAL."""
    general: Callable[[bytes, int], list[bytes]]
    """A line the fast path leaves (raw, offset) -> its record by the general path."""
    held: Callable[[], object]
    """Truthy while the joiner holds a runtime piece: the lines after it go general too."""
    parsed: Callable[[bytes, bytes, bytes, int], list[bytes]]
    """A whole runtime line whose text needs parsing (time, JSON-escaped text, stream,
    offset) -> its record, as the general path makes it but without decoding and joining."""
    levelless: Callable[[bytes], bool] = lambda _data: False
    """Whether, in this read (whole lines as the runtime wrote them), `level` gives None for
    every line the pattern marks as naming no level (Processor.levelless); False: every
    line is asked."""
    secrets: Sequence[int] = ()
    """Offsets in the read of redaction keywords (Processor.secrets): the lines holding
    them take the general path, which redacts."""


class Chunked(NamedTuple):
    """A read's records and its lines: counting them again costs five instructions a byte."""

    values: list[bytes]
    lines: int


ChunkPath = Callable[[bytes, int, bytes, int, Levelled | None], Chunked | None]


def docker_plain(raw: bytes, offset: int, template: bytes) -> bytes | None:
    """For a line known to be ASCII without control bytes (see tail.plain)."""
    # `","stream":"` cannot occur inside a JSON string (a quote there is escaped), so the
    # first match ends the log text.
    if raw[:8] != DOCKER_HEAD or raw[-2:] != b'"}' or b"\\u0000" in raw:
        return None
    end = raw.find(STREAM_KEY, 8)
    if end < 0 or raw[end + 18 : end + 28] != TIME_KEY:
        return None
    stream = raw[end + 12 : end + 18]
    if stream != b"stdout" and stream != b"stderr":
        return None
    # A complete line ends in an escaped newline; a run of backslashes is left to the
    # general path, which can tell `\\n` (backslash, n) from `\n`.
    if raw[end - 2 : end] != b"\\n" or raw[end - 3 : end - 2] == b"\\":
        return None
    time = raw[end + 28 : -2]
    if not utc_time(time):
        return None
    text = raw[8 : end - 2]
    # Copied as it is, the text must already be valid JSON: only escapes orjson accepts
    # (none left once the valid ones, read pairwise, are removed; surrogate escapes go the
    # general path).
    if b"\\" in text and b"\\" in VALID_ESCAPES(b"", text):
        return None
    return template % (time, text, stream, offset, offset)


def cri_plain(raw: bytes, offset: int, template: bytes) -> bytes | None:
    """For a line known to be ASCII without control bytes (see tail.plain)."""
    parts = raw.split(b" ", 3)
    if len(parts) != 4 or parts[2] != b"F":
        return None
    time, stream = parts[0], parts[1]
    if (stream != b"stdout" and stream != b"stderr") or not utc_time(time):
        return None
    return template % (time, orjson.dumps(parts[3].decode())[1:-1], stream, offset, offset)


def checked(fast: FastPath) -> FastPath:
    """The same fast path for lines of a read that was not plain: checked one by one."""

    def check(raw: bytes, offset: int, template: bytes) -> bytes | None:
        if not raw.isascii() or CONTROL(raw) is not None:
            return None
        return fast(raw, offset, template)

    return check


docker = checked(docker_plain)
cri = checked(cri_plain)

ESCAPE = rb'\\(?:["\\/bfnrt]|u(?!0000)(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))'
"""One escape orjson reads back as it is: not NUL (a parse error), not half a surrogate."""
UNESCAPED = rb"[\x20\x21\x23-\x5b\x5d-\xff]"
"""A byte JSON text holds as it is: not `"`, `\\`, nor a control byte. Spelled as the bytes
it takes, not as `[^...]`: the regex engine tests a negated class a step slower a byte,
and the texts are most of what it reads (-12 instructions a byte)."""
JSON_TEXT = UNESCAPED + rb"*+(?:" + ESCAPE + UNESCAPED + rb"*+)*?"
"""JSON string content; the outer loop is lazy so the line's closing `\n` is left over."""
CRI_TEXT = rb"[\x09\x20-\xff]*"
"""Tabs are let in (stack traces are full of them) and escaped with the rest."""

HEAD = rb"[\x20\x21\x23-\x5b\x5d-\x7e]"
"""An ASCII byte that is no escape: collector.levels.undated looks at five."""
UNDATED = (
    rb"\d(?:[\x20\x21\x23-\x2f\x3a-\x5b\x5d-\x7e]H{3}|\d(?:[\x20\x21\x23-\x2f\x3b-\x5b\x5d-\x7e]H{2}"
    rb"|\d(?:[\x20\x21\x23-\x2f\x3a-\x5b\x5d-\x7e]H|\d[\x20\x21\x23-\x2c\x2e\x30-\x5b\x5d-\x7e])))"
).replace(b"H", HEAD)
"""Five such bytes, a digit first, that start no date (`2026-`, `2026/`) or time (`10:`):
collector.levels.undated's lines (access logs). Spelled out position by position, which
the regex engine runs faster than lookaheads."""
NO_LEVEL_DOCKER = (
    UNDATED
    # Leading white space (a stack frame's tab) before anything but an object (`{` or an
    # escape that may spell one).
    + rb"|(?:[ ]|\\[tnr])++(?![{]|\\u)"
    # A first character that leads to no level: punctuation other than [ ( < {, an escaped
    # quote, backslash or slash, non-ASCII text.
    + rb'|[\x21\x23-\x27\x29-\x2f\x3a\x3b\x3d-\x40\x5d-\x60\x7c-\xff]|\\["\\/bf]'
)
"""The head of a JSON-escaped text for which Processor.fast_level gives None in the parser
modes `auto` and `none` (when the read holds no escape that may spell a secret's keyword).
Conservative: a text it misses is asked."""
NO_LEVEL_CRI = (
    UNDATED + rb"|[ \t]++(?![{])" + rb"|[\x21-\x27\x29-\x2f\x3a\x3b\x3d-\x40\x5c-\x60\x7c-\xff]"
)
"""As NO_LEVEL_DOCKER, for a CRI line's text before escaping."""
DOCKER_LINE = (
    rb'\{"log":"(' + JSON_TEXT + rb')\\n","stream":"(stdout|stderr)","time":"(' + STAMP + rb')"\}'
)
DOCKER_LINES = re.compile(rb"^" + DOCKER_LINE + rb"$", re.MULTILINE).findall
DOCKER_ANY = re.compile(
    rb'^(?:\{"log":"(?=('
    + NO_LEVEL_DOCKER
    + rb")?)"
    + DOCKER_LINE.removeprefix(rb'\{"log":"')
    + rb"|([^\n]*+))$",
    re.MULTILINE,
).findall
"""One row a line: (mark, text, stream, time, b"") for a runtime line, else (b"", b"", b"",
b"", line); the mark is not empty when the text names no level (NO_LEVEL_DOCKER)."""
DOCKER_FRAME = len(b'{"log":"\\n","stream":"stdout","time":""}\n')
"""A Docker line's bytes besides its text and time."""
CRI_LINE = rb"(" + STAMP + rb") (stdout|stderr) F (" + CRI_TEXT + rb")"
CRI_LINES = re.compile(rb"^" + CRI_LINE + rb"$", re.MULTILINE).findall
CRI_ANY = re.compile(
    rb"^(?:(" + STAMP + rb") (stdout|stderr) F (?=(" + NO_LEVEL_CRI + rb")?)"
    rb"(" + CRI_TEXT + rb")|([^\n]*+))$",
    re.MULTILINE,
).findall
"""As DOCKER_ANY: (time, stream, mark, text, b"") or (b"", b"", b"", b"", line)."""
CRI_FRAME = len(b" stdout F \n")
DAY = itemgetter(slice(0, 10))


def utf8(data: bytes) -> bool:
    """Valid UTF-8: the text is then copied into records as it is."""
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def utf8_texts(texts: Iterable[bytes]) -> bool:
    """Every text valid UTF-8. Only the texts that are not ASCII are decoded, joined by a
    newline (a character of its own: no two texts' bytes make one together). Decoding the
    whole read instead makes a string as wide as its widest character (four bytes each
    after one emoji) and decodes the ASCII after it byte by byte: most of a read's cost."""
    try:
        b"\n".join(filterfalse(bytes.isascii, texts)).decode()
    except UnicodeDecodeError:
        return False
    return True


HOLES = re.compile(rb"(%%|%[sd])").split

PIECES: dict[bytes, tuple[bytes, ...]] = {}
"""Per template (one a file), its text around the holes; cleared past PIECES_KEPT."""
PIECES_KEPT = 4096


def pieces(template: bytes) -> tuple[bytes, ...]:
    """The template's text before, between and after its five holes (`%%` read as `%`)."""
    known = PIECES.get(template)
    if known is None:
        parts = [b""]
        for n, token in enumerate(HOLES(template)):
            if n % 2 == 0:
                parts[-1] += token
            elif token == b"%%":
                parts[-1] += b"%"
            else:
                parts.append(b"")
        if len(parts) != 6:
            raise ValueError(f"a record template has five holes, not {len(parts) - 1}")
        known = tuple(parts)
        if len(PIECES) >= PIECES_KEPT:
            PIECES.clear()
        PIECES[template] = known
    return known


def filled(
    template: bytes,
    times: Sequence[bytes],
    texts: Sequence[bytes],
    streams: Sequence[bytes],
    starts: Sequence[int],
) -> Iterator[bytes]:
    """`template % (time, text, stream, start, start)` for every line, built by joining the
    template's pieces around the fields: %-formatting parses the ~1 kB template again for
    each record and grows its result as it goes, which cost a seventh of a plain read."""
    head, after_time, after_text, after_stream, after_id, tail = pieces(template)
    # Every offset in decimal at once, in one formatting of the whole run.
    offsets = (b"%d\n" * len(starts) % tuple(starts)).split(b"\n")
    return map(
        b"".join,
        zip(
            repeat(head),
            times,
            repeat(after_time),
            texts,
            repeat(after_text),
            streams,
            repeat(after_stream),
            offsets,
            repeat(after_id),
            offsets,
            repeat(tail),
        ),
    )


def records(
    template: bytes,
    times: tuple[bytes, ...],
    texts: tuple[bytes, ...],
    streams: tuple[bytes, ...],
    lengths: Iterable[int],
    offset: int,
    data: bytes,
) -> list[bytes] | None:
    """Fill the template for every line; `lengths` are the matched lines' sizes.

    Matches are whole lines, so they cover all of `data` only if every line matched.
    """
    starts = list(accumulate(lengths, initial=offset))
    if starts.pop() != offset + len(data) + 1:
        return None
    if not all(real_date(day.decode()) for day in set(map(DAY, times))):
        return None
    return list(filled(template, times, texts, streams, starts))


class Rows(NamedTuple):
    """A read's lines, field by field (one entry a line): what DOCKER_ANY or CRI_ANY found."""

    times: tuple[bytes, ...]
    """b"" for a line the pattern does not take."""
    streams: tuple[bytes, ...]
    raw: tuple[bytes, ...]
    """The texts as the line holds them (for the line's size)."""
    texts: tuple[bytes, ...]
    """The texts as they go into a record (JSON-escaped)."""
    marks: tuple[bytes, ...]
    """Not empty for a text that names no level (NO_LEVEL_*)."""
    lines: tuple[bytes, ...]
    """The whole line, for a line the pattern does not take; else b""."""


def levelled_records(
    template: bytes,
    rows: Rows,
    frame: int,
    offset: int,
    data: bytes,
    limit: int,
    levelled: Levelled,
) -> list[bytes] | None:
    """Every line's record, with its level: the template's, or the general path's."""
    times, streams, raw, texts, marks, lines = rows
    days = set(map(DAY, times))
    days.discard(b"")
    if not all(real_date(day.decode()) for day in days):
        return None
    # A line's size: its text and time and the runtime's frame, or the whole line and its
    # newline for a line the pattern does not take.
    sizes = map(add, map(add, map(len, raw), map(len, times)), map(len, lines))
    starts = list(
        accumulate(map(add, sizes, map((1, frame).__getitem__, map(bool, times))), initial=offset)
    )
    if starts[-1] != offset + len(data) + 1:
        return None
    # Runs of lines that name no level are filled in one go: their marks say so, once the
    # texts are known to be valid UTF-8 and short enough a line; else every line is asked,
    # and its text validated alone.
    valid = data.isascii()
    bulk = levelled.levelless(data) and max(map(len, texts), default=0) <= limit
    if bulk and not valid:
        valid = bulk = utf8_texts(raw)
    levelless = bytes(map(bool, marks)) if bulk else bytes(len(times))
    general_lines = frozenset(bisect_right(starts, offset + at) - 1 for at in levelled.secrets)
    if general_lines:
        levelless = bytes(0 if n in general_lines else mark for n, mark in enumerate(levelless))
    with_level, level_of, general, held = levelled[:4]
    parsed = levelled.parsed
    fill = template.__mod__
    out: list[bytes] = []
    holding = False
    at = 0
    count = len(times)
    while at < count:
        if levelless[at] and not holding:
            end = levelless.find(0, at)
            if end < 0:
                end = count
            run = slice(at, end)
            out += filled(template, times[run], texts[run], streams[run], starts[run])
            at = end
            continue
        time, text, start = times[at], texts[at], starts[at]
        if time:
            if holding or len(text) > limit or at in general_lines or not (valid or utf8(raw[at])):
                level = GENERAL
                line = data[start - offset : starts[at + 1] - offset - 1]
            else:
                level = level_of(text)
                if level == GENERAL:
                    out += parsed(time, text, streams[at], start)
                    at += 1
                    continue
        else:
            line = lines[at]
            level = GENERAL
        if level is None:
            out.append(fill((time, text, streams[at], start, start)))
        elif level == GENERAL:
            out += general(line, start)
            holding = bool(held())
        else:
            out.append(with_level % (time, text, streams[at], start, start, level.encode()))
        at += 1
    return out


Columns = tuple[tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...]]


def columns(
    lines: Callable[[bytes], list[tuple[bytes, bytes, bytes]]], data: bytes, text: int
) -> Columns:
    """The three fields of every line the pattern takes, field by field; empty if none or
    if a line's `text` (the field at that index) is not UTF-8."""
    found = lines(data)
    if not found:
        return (), (), ()
    fields = first, second, third = tuple(zip(*found, strict=True))
    if not (data.isascii() or utf8_texts(fields[text])):
        return (), (), ()
    return first, second, third


def chunked(values: list[bytes] | None, lines: int) -> Chunked | None:
    return None if values is None else Chunked(values, lines)


def docker_chunk(
    data: bytes, offset: int, template: bytes, limit: int, levelled: Levelled | None = None
) -> Chunked | None:
    """The records of every line of `data` (complete lines, newline-separated), or None.

    `limit` bounds a line's escaped text, so that no record needs cutting to fit.
    """
    if levelled is not None:
        marks, texts, streams, times, lines = zip(*DOCKER_ANY(data), strict=True)
        rows = Rows(times, streams, texts, texts, marks, lines)
        found = levelled_records(template, rows, DOCKER_FRAME, offset, data, limit, levelled)
        return chunked(found, len(times))
    texts, streams, times = columns(DOCKER_LINES, data, 0)
    if not texts or max(map(len, texts)) > limit:
        return None
    lengths = map(add, map(add, map(len, texts), map(len, times)), repeat(DOCKER_FRAME))
    return chunked(records(template, times, texts, streams, lengths, offset, data), len(texts))


def cri_escaped(texts: tuple[bytes, ...], data: bytes) -> tuple[bytes, ...]:
    """CRI texts (UTF-8 without control bytes but tabs) as JSON string content."""
    if b'"' not in data and b"\\" not in data and b"\t" not in data:
        return texts
    joined = b"\n".join(texts).replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return tuple(joined.replace(b"\t", b"\\t").split(b"\n"))


def cri_chunk(
    data: bytes, offset: int, template: bytes, limit: int, levelled: Levelled | None = None
) -> Chunked | None:
    """As docker_chunk, for CRI lines."""
    if levelled is not None:
        times, streams, marks, raw, lines = zip(*CRI_ANY(data), strict=True)
        rows = Rows(times, streams, raw, cri_escaped(raw, data), marks, lines)
        found = levelled_records(template, rows, CRI_FRAME, offset, data, limit, levelled)
        return chunked(found, len(times))
    times, streams, texts = columns(CRI_LINES, data, 2)
    if not times:
        return None
    lengths = list(map(add, map(add, map(len, texts), map(len, times)), repeat(CRI_FRAME)))
    texts = cri_escaped(texts, data)
    if max(map(len, texts)) > limit:
        return None
    return chunked(records(template, times, texts, streams, lengths, offset, data), len(texts))


class FastPaths(NamedTuple):
    chunk: ChunkPath
    """A whole read."""
    plain: FastPath
    """One line of a read that is ASCII without control bytes (tail.plain)."""
    line: FastPath
    """Any one line."""


FAST_PATHS: dict[str, FastPaths] = {
    "docker": FastPaths(docker_chunk, docker_plain, docker),
    "cri": FastPaths(cri_chunk, cri_plain, cri),
}
"""Per format."""
