"""Raw lines -> record bytes in one step, for the lines that need no joining.

Most lines are complete, ASCII, and written by the runtime in its exact layout. For them
decoding to a `Line`, joining and encoding through a dict is wasted work: the Docker
json-file line already holds the text JSON-escaped, and a CRI line needs only its text
escaped. These functions return None for anything else, and the caller then takes the
general path (decode -> join -> encode), which handles every case. Both paths produce
the same record.

The chunk paths take a whole read at once: one regex pass checks every line and cuts out
its fields, and the records are built by C-level map/zip, so no Python code runs per
line. They give up on the first line they cannot take, and the per-line paths then go
through that read line by line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from itertools import accumulate, repeat
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


ChunkPath = Callable[[bytes, int, bytes, int, Levelled | None], list[bytes] | None]


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
JSON_TEXT = rb'[^"\\\x00-\x1f]*+(?:' + ESCAPE + rb'[^"\\\x00-\x1f]*+)*?'
"""JSON string content; the outer loop is lazy so the line's closing `\n` is left over."""
DOCKER_LINES = re.compile(
    rb'^\{"log":"('
    + JSON_TEXT
    + rb')\\n","stream":"(stdout|stderr)","time":"('
    + STAMP
    + rb')"\}$',
    re.MULTILINE,
).findall
DOCKER_FRAME = len(b'{"log":"\\n","stream":"stdout","time":""}\n')
"""A Docker line's bytes besides its text and time."""
CRI_LINES = re.compile(
    rb"^(" + STAMP + rb") (stdout|stderr) F ([^\x00-\x08\x0a-\x1f]*)$", re.MULTILINE
).findall
"""Tabs are let in (stack traces are full of them) and escaped with the rest."""
CRI_FRAME = len(b" stdout F \n")
DAY = itemgetter(slice(0, 10))


def records(
    template: bytes,
    times: tuple[bytes, ...],
    texts: tuple[bytes, ...],
    streams: tuple[bytes, ...],
    lengths: Iterable[int],
    offset: int,
    data: bytes,
    levelled: Levelled | None,
) -> list[bytes] | None:
    """Fill the template for every line; `lengths` are the matched lines' sizes.

    Matches are whole lines, so they cover all of `data` only if every line matched.
    """
    starts = list(accumulate(lengths, initial=offset))
    if starts.pop() != offset + len(data) + 1:
        return None
    if not all(real_date(day.decode()) for day in set(map(DAY, times))):
        return None
    if levelled is None:
        return list(map(template.__mod__, zip(times, texts, streams, starts, starts, strict=True)))
    # With levels, one Python step a line: the level, and the general path for the lines
    # that need more (a JSON object to parse).
    out: list[bytes] = []
    with_level, level_of, general = levelled
    for time, text, stream, start in zip(times, texts, streams, starts, strict=True):
        level = level_of(text)
        if level is None:
            out.append(template % (time, text, stream, start, start))
        elif level == GENERAL:
            at = start - offset
            end = data.find(b"\n", at)
            out += general(data[at : end if end >= 0 else len(data)], start)
        else:
            out.append(with_level % (time, text, stream, start, start, level.encode()))
    return out


Columns = tuple[tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...]]


def columns(lines: Callable[[bytes], list[tuple[bytes, bytes, bytes]]], data: bytes) -> Columns:
    """The three fields of every line the pattern takes, field by field; empty if none."""
    found = lines(data) if data.isascii() else []
    if not found:
        return (), (), ()
    first, second, third = zip(*found, strict=True)
    return first, second, third


def docker_chunk(
    data: bytes, offset: int, template: bytes, limit: int, levelled: Levelled | None = None
) -> list[bytes] | None:
    """The records of every line of `data` (complete lines, newline-separated), or None.

    `limit` bounds a line's escaped text, so that no record needs cutting to fit.
    """
    texts, streams, times = columns(DOCKER_LINES, data)
    if not texts or max(map(len, texts)) > limit:
        return None
    lengths = map(add, map(add, map(len, texts), map(len, times)), repeat(DOCKER_FRAME))
    return records(template, times, texts, streams, lengths, offset, data, levelled)


def cri_chunk(
    data: bytes, offset: int, template: bytes, limit: int, levelled: Levelled | None = None
) -> list[bytes] | None:
    """As docker_chunk, for CRI lines."""
    times, streams, texts = columns(CRI_LINES, data)
    if not times:
        return None
    lengths = list(map(add, map(add, map(len, texts), map(len, times)), repeat(CRI_FRAME)))
    if b'"' in data or b"\\" in data or b"\t" in data:
        # ASCII without control bytes but tabs needs only these escapes to be a JSON string.
        joined = b"\n".join(texts).replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        texts = tuple(joined.replace(b"\t", b"\\t").split(b"\n"))
    if max(map(len, texts)) > limit:
        return None
    return records(template, times, texts, streams, lengths, offset, data, levelled)


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
