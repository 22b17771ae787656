"""Container runtime log lines -> (time, stream, partial, text).

Two formats reach the collector: Docker's json-file (one JSON object a line) and the CRI
format written by containerd and CRI-O (`<time> <stream> <tags> <text>`). A line that fits
neither is never dropped: it becomes a `Line` carrying the raw text and an `error`, which the
encoder turns into a `parse_error` tag.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import NamedTuple

import orjson


class Line(NamedTuple):
    time: str
    """RFC 3339 in UTC with the runtime's fractional digits kept; "" when the line had none."""
    stream: str
    partial: bool
    """The runtime split this line; the text continues in the next line of the same stream."""
    text: str
    """Without the trailing newline."""
    error: str | None = None


STREAMS = frozenset(("stdout", "stderr"))
INVALID_UTF8 = "invalid UTF-8"
UTC_STAMP = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d{1,9})?Z"
).fullmatch
CALENDAR: set[str] = set()
"""Dates (YYYY-MM-DD) already checked against the calendar: a day changes once a day."""


def real_date(date: str) -> bool:
    """`date` exists (no 30 February); remembered, so the check costs a set lookup."""
    if date in CALENDAR:
        return True
    try:
        datetime.strptime(date, "%Y-%m-%d")
    except ValueError:
        return False
    if len(CALENDAR) > 1000:
        CALENDAR.clear()
    CALENDAR.add(date)
    return True


def raw_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


def malformed(raw: bytes, why: str) -> Line:
    return Line("", "stdout", False, raw_text(raw), why)


def decode_docker(raw: bytes) -> Line:
    """One line of a Docker json-file log, without its newline."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return malformed(raw, "invalid JSON")
    if type(obj) is not dict:
        return malformed(raw, "not a JSON object")
    log = obj.get("log")
    stream = obj.get("stream")
    time = obj.get("time")
    if type(log) is not str or type(stream) is not str or type(time) is not str:
        return malformed(raw, "log, stream or time missing or not a string")
    if stream not in STREAMS:
        return malformed(raw, f"unknown stream {stream[:20]!r}")
    stamp = utc(time)
    if not stamp:
        return malformed(raw, "invalid time")
    if "\x00" in log:
        log = log.replace("\x00", "\ufffd")
    if log.endswith("\n"):
        return Line(stamp, stream, False, log[:-1])
    return Line(stamp, stream, True, log)


def decode_cri(raw: bytes) -> Line:
    """One line of a CRI log (containerd, CRI-O), without its newline."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return malformed(raw, "CRI line without stream and tag")
    time_b, stream_b, tags = parts[0], parts[1], parts[2]
    body = parts[3] if len(parts) == 4 else b""
    if stream_b != b"stdout" and stream_b != b"stderr":
        return malformed(raw, "CRI line with an unknown stream")
    # Tags are `:`-separated (e.g. `P` or `F:x`); only P/F are defined today.
    first_tag = tags.split(b":", 1)[0]
    if first_tag != b"F" and first_tag != b"P":
        return malformed(raw, "CRI line without a P or F tag")
    stamp = utc(time_b.decode("ascii", "replace"))
    if not stamp:
        return malformed(raw, "CRI line with an invalid timestamp")
    error = None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # containerd cuts long lines at byte 16384, so a piece may end or begin inside a
        # character: the bytes are kept (as surrogate escapes) for the joiner to mend.
        text = body.decode("utf-8", "surrogateescape")
        error = INVALID_UTF8
    if "\x00" in text:
        return malformed(raw, "NUL byte in CRI line")
    return Line(stamp, stream_b.decode(), first_tag == b"P", text, error)


def mend(text: str, cut: bool = False) -> tuple[str, bool]:
    """Text decoded with surrogate escapes, decoded again whole; True if still not UTF-8.

    A `cut` text (truncated at max_record_bytes) may end inside a character, and is not
    judged: what cannot be decoded is replaced.
    """
    data = text.encode("utf-8", "surrogateescape")
    if cut:
        return data.decode("utf-8", "replace"), False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), True


def detect(first_line: bytes) -> str:
    """The format of a file from its first line: "docker" or "cri"."""
    return "docker" if first_line.lstrip()[:1] == b"{" else "cri"


DECODERS = {"docker": decode_docker, "cri": decode_cri}


def utc(stamp: str) -> str:
    """RFC 3339 to UTC `...Z`, keeping the fractional digits (nanoseconds) as written.

    The runtimes write UTC already, so the common case is one character test; a numeric
    offset is shifted by whole seconds, leaving the fraction untouched. Returns "" when the
    stamp is not RFC 3339.
    """
    if UTC_STAMP(stamp) is not None:
        return stamp if real_date(stamp[:10]) else ""
    if len(stamp) < 25 or stamp[10] != "T" or stamp[-3] != ":" or stamp[-6] not in "+-":
        return ""
    zone = stamp[-6:]
    head, _, fraction = stamp[:-6].partition(".")
    try:
        moment = datetime.fromisoformat(head)
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    except ValueError:
        return ""
    if not fraction.isdigit() and fraction:
        return ""
    moment = moment - offset if zone[0] == "+" else moment + offset
    suffix = f".{fraction}" if fraction else ""
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}{suffix}Z"
