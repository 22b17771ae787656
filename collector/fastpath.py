"""Raw line -> record bytes in one step, for the lines that need no joining.

Most lines are complete, ASCII, and written by the runtime in its exact layout. For them
decoding to a `Line`, joining and encoding through a dict is wasted work: the Docker
json-file line already holds the text JSON-escaped, and a CRI line needs only its text
escaped. These functions return None for anything else, and the caller then takes the
general path (decode -> join -> encode), which handles every case. Both paths produce
the same record.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from collector.decode import real_date

DOCKER_HEAD = b'{"log":"'
STREAM_KEY = b'","stream":"'
TIME_KEY = b'","time":"'

UTC_STAMP = re.compile(
    rb"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    rb"(?:\.\d{1,9})?Z"
).fullmatch


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

FAST_PATHS: dict[str, FastPath] = {"docker": docker, "cri": cri}
"""Per format, for any line."""
PLAIN_FAST_PATHS: dict[str, FastPath] = {"docker": docker_plain, "cri": cri_plain}
"""Per format, for the lines of a plain read (tail.plain)."""
