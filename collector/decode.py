"""Container runtime log lines -> (time, stream, partial, text).

Two formats reach the collector: Docker's json-file (one JSON object a line) and the CRI
format written by containerd and CRI-O (`<time> <stream> <tags> <text>`). A line whose frame
fits neither is never dropped: it becomes a `Line` carrying the raw text and an `error`,
which the encoder turns into a `parse_error` tag. Text that is not UTF-8 (invalid bytes,
Docker's `\\ud800` lone surrogate escapes) does not break the frame: it is replaced by
U+FFFD and the record keeps the runtime's time and stream (tag `invalid_utf8`).

A line cut by the tail (longer than it keeps) comes as its head and its last bytes:
`decode_docker` finds the time and stream in those last bytes, the text in the head.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

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
    cut: bool = False
    """The physical line was longer than the tail keeps: `text` is its beginning only."""


STREAMS = frozenset(("stdout", "stderr"))
INVALID_UTF8 = "invalid UTF-8"
"""CRI text that is not UTF-8, kept as surrogate escapes: the joiner decodes the pieces of a
split line together (containerd cuts inside characters) and judges the whole."""
REPLACED = "invalid UTF-8 replaced"
"""Docker text that held invalid UTF-8 or lone surrogate escapes, already replaced."""
EMPTY = "empty line"
"""A physical line without a byte: counted by the joiner, not shipped."""
UTC_STAMP = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d{1,9})?Z"
).fullmatch
CALENDAR: set[str] = set()
"""Dates (YYYY-MM-DD) already checked against the calendar: a day changes once a day."""


ZONED_STAMP = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?([+-])([01]\d|2[0-3]):([0-5]\d)", re.ASCII
).fullmatch
"""RFC 3339 with a numeric offset: fromisoformat alone also reads `,5`, week dates and an
offset given twice, and timedelta takes hours past 23."""


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


def malformed(raw: bytes, why: str, stream: str = "stdout") -> Line:
    """A line kept whole as its text; `stream` when the line told it, else stdout."""
    return Line("", stream, False, raw_text(raw), why)


EMPTY_LINE = Line("", "stdout", False, "", EMPTY)

BOM = b"\xef\xbb\xbf"
CRASH_HEAD = re.compile(b"(?:\x00|" + re.escape(BOM) + b")*")
"""However many NULs and marks: skipped in one pass, then one decode."""


def after_crash(raw: bytes, decode: Decoder, fine: str) -> Line | None:
    """A line that is none as it stands, read past the NULs a crash left before it (a file
    grown whose data never reached the disk) or an editor's byte-order mark: neither format
    begins with either. None when that gives no line either (error `fine` allowed): it is
    kept whole as the parse error it is. Asked only of lines that failed, at no cost to the
    others."""
    if raw[0] != 0 and raw[0] != BOM[0]:
        return None
    past = CRASH_HEAD.sub(b"", raw, count=1)
    if not past or len(past) == len(raw):
        return None
    line = decode(past)
    return line if line.error is None or line.error is fine else None


ESCAPES = re.compile(
    rb"(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})|\\.",
    re.DOTALL,
)
"""JSON escapes one at a time (so `\\\\` is never read as the start of one): a surrogate
pair, a lone surrogate (group 2), or any other."""


def repair(raw: bytes) -> bytes:
    """JSON bytes with invalid UTF-8 and lone surrogate escapes replaced by U+FFFD."""
    fixed = raw.decode("utf-8", "replace").encode()
    if b"\\" in fixed:
        fixed = ESCAPES.sub(lambda m: b"\\ufffd" if m.group(2) else m.group(0), fixed)
    return fixed


def load_json(raw: bytes) -> tuple[object, bool] | None:
    """The JSON value of `raw`, and whether text had to be replaced to read it; None when
    its frame is broken."""
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError:
        fixed = repair(raw)
    if fixed == raw:
        return None
    try:
        return orjson.loads(fixed), True
    except orjson.JSONDecodeError:
        return None


def docker_frame(obj: object) -> tuple[str, str] | str:
    """(time, stream) of a Docker line's object, or why it is not one."""
    if type(obj) is not dict:
        return "not a JSON object"
    stream = obj.get("stream")
    time = obj.get("time")
    if type(stream) is not str or type(time) is not str:
        return "log, stream or time missing or not a string"
    if stream not in STREAMS:
        return f"unknown stream {stream[:20]!r}"
    stamp = utc(time)
    if not stamp:
        return "invalid time"
    return stamp, stream


def decode_docker(raw: bytes, rest: bytes | None = None) -> Line:
    """One line of a Docker json-file log, without its newline; with `rest`, the head of a
    line cut by the tail and its last bytes."""
    if rest is not None:
        return decode_docker_cut(raw, rest)
    if not raw:
        return EMPTY_LINE
    loaded = load_json(raw)
    if loaded is None:
        return after_crash(raw, decode_docker, REPLACED) or malformed(raw, "invalid JSON")
    obj, replaced = loaded
    frame = docker_frame(obj)
    if isinstance(frame, str):
        told = obj.get("stream") if type(obj) is dict else None
        return malformed(raw, frame, told if type(told) is str and told in STREAMS else "stdout")
    assert type(obj) is dict
    log = obj.get("log")
    if type(log) is not str:
        return malformed(raw, "log, stream or time missing or not a string")
    stamp, stream = frame
    if "\x00" in log:
        log = log.replace("\x00", "\ufffd")
    error = REPLACED if replaced else None
    if log.endswith("\n"):
        return Line(stamp, stream, False, log[:-1], error)
    return Line(stamp, stream, True, log, error)


DOCKER_HEAD = b'{"log":"'
STREAM_KEY = b'","stream":"'


def decode_docker_cut(head: bytes, rest: bytes) -> Line:
    """A Docker line longer than the tail keeps: time and stream from its last bytes, the
    beginning of its text from its head, cut inside an escape or character perhaps."""
    end = rest.find(STREAM_KEY)
    if not head.startswith(DOCKER_HEAD) or end < 0:
        return malformed(head, "over-long line without Docker's frame")._replace(cut=True)
    loaded = load_json(b"{" + rest[end + 2 :])
    frame = docker_frame(loaded[0]) if loaded is not None else "invalid JSON"
    if isinstance(frame, str):
        return malformed(head, frame)._replace(cut=True)
    stamp, stream = frame
    body = head[len(DOCKER_HEAD) :]
    if body.find(STREAM_KEY) >= 0:
        # The text ended within the head; what was cut is the rest of the frame (attrs).
        body = body[: body.find(STREAM_KEY)]
        partial = not ends_line(body)
    else:
        partial = not ends_line(rest[:end])
    read = json_prefix(body)
    if read is None:
        return malformed(head, "invalid JSON")._replace(cut=True)
    text, replaced = read
    if not partial and text.endswith("\n"):
        text = text[:-1]
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return Line(stamp, stream, partial, text, REPLACED if replaced else None, True)


def ends_line(escaped: bytes) -> bool:
    """JSON string content ending in the escape `\\n`, not in an escaped backslash and n."""
    if not escaped.endswith(b"\\n"):
        return False
    before = escaped[:-2]
    return (len(before) - len(before.rstrip(b"\\"))) % 2 == 0


def json_prefix(body: bytes) -> tuple[str, bool] | None:
    """The text of JSON string content cut anywhere (inside an escape or a character), and
    whether invalid UTF-8 or lone surrogates were replaced; None when it is broken before
    the cut (as the whole line then is)."""
    content = before_cut(body)
    try:
        text = orjson.loads(b'"' + content + b'"')
        replaced = False
    except orjson.JSONDecodeError:
        try:
            text = orjson.loads(b'"' + repair(content) + b'"')
        except orjson.JSONDecodeError:
            return None
        replaced = True
    assert type(text) is str
    return text, replaced


def before_cut(content: bytes) -> bytes:
    """JSON string content without the escape or character a cut fell inside, nor a high
    surrogate escape whose low half was cut off."""
    for _ in range(2):
        start = content.rfind(b"\\", max(0, len(content) - 6))
        if start < 0:
            break
        before = content[:start]
        if (len(before) - len(before.rstrip(b"\\"))) % 2:
            break  # the second half of an escaped backslash
        escape = content[start:]
        cut = len(escape) == 1 or (escape[:2] == b"\\u" and len(escape) < 6)
        high = len(escape) == 6 and escape[:3].lower() == b"\\ud" and escape[3:4] in b"89abAB"
        if not (cut or high):
            break
        content = before
    return whole_characters(content)


def decode_cri(raw: bytes, rest: bytes | None = None) -> Line:
    """One line of a CRI log (containerd, CRI-O), without its newline; with `rest`, the
    head of a line cut by the tail (its frame is all at the start)."""
    if rest is not None:
        return decode_cri(raw)._replace(cut=True)
    if not raw:
        return EMPTY_LINE
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return after_crash(raw, decode_cri, INVALID_UTF8) or malformed(
            raw, "CRI line without stream and tag"
        )
    time_b, stream_b, tags = parts[0], parts[1], parts[2]
    body = parts[3] if len(parts) == 4 else b""
    if stream_b != b"stdout" and stream_b != b"stderr":
        return malformed(raw, "CRI line with an unknown stream")
    # Tags are `:`-separated (e.g. `P` or `F:x`); only P/F are defined today.
    first_tag = tags.split(b":", 1)[0]
    stream = stream_b.decode()
    if first_tag != b"F" and first_tag != b"P":
        return malformed(raw, "CRI line without a P or F tag", stream)
    stamp = utc(time_b.decode("ascii", "replace"))
    if not stamp:
        return after_crash(raw, decode_cri, INVALID_UTF8) or malformed(
            raw, "CRI line with an invalid timestamp", stream
        )
    error = None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # containerd cuts long lines at byte 16384, so a piece may end or begin inside a
        # character: the bytes are kept (as surrogate escapes) for the joiner to mend.
        text = body.decode("utf-8", "surrogateescape")
        error = INVALID_UTF8
    if "\x00" in text:
        # As in Docker's text: the line keeps its time, stream and tag.
        text = text.replace("\x00", "\ufffd")
    return Line(stamp, stream, first_tag == b"P", text, error)


def mend(text: str, cut: bool = False) -> tuple[str, bool]:
    """Text decoded with surrogate escapes, decoded again whole; True if still not UTF-8.

    A `cut` text (truncated at max_record_bytes) may end inside a character: that last
    character is dropped, not judged.
    """
    data = text.encode("utf-8", "surrogateescape")
    if cut:
        data = whole_characters(data)
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), True


def whole_characters(data: bytes) -> bytes:
    """`data` without a last UTF-8 character that was cut short."""
    start = len(data) - 1
    while start >= max(0, len(data) - 3) and 0x80 <= data[start] < 0xC0:
        start -= 1
    if start < 0:
        return data
    lead = data[start]
    size = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if lead >= 0xF0 else 1
    return data[:start] if len(data) - start < size else data


LEADING = b" \t\r\n\x00"
"""Before a first line's format shows: blanks, and the NULs a crash leaves (a file grown
whose data never reached the disk)."""


def detect(first_line: bytes, docker_named: bool = False) -> str:
    """The format of a file, "docker" or "cri": Docker's where Docker named the file
    (discover.docker_named), else by its first line (kubelet's /var/log/pods links to
    Docker's files under dockershim), read past NULs and a byte-order mark. One bad first
    line would otherwise make every later line of a Docker file a parse error."""
    if docker_named:
        return "docker"
    head = first_line.lstrip(LEADING).removeprefix(BOM).lstrip(LEADING)
    return "docker" if head[:1] == b"{" else "cri"


class Decoder(Protocol):
    def __call__(self, raw: bytes, rest: bytes | None = None) -> Line: ...


DECODERS: dict[str, Decoder] = {"docker": decode_docker, "cri": decode_cri}


def utc(stamp: str) -> str:
    """RFC 3339 to UTC `...Z`, keeping the fractional digits (nanoseconds) as written.

    The runtimes write UTC already, so the common case is one character test; a numeric
    offset is shifted by whole seconds, leaving the fraction untouched. Returns "" when the
    stamp is not RFC 3339.
    """
    if UTC_STAMP(stamp) is not None:
        return stamp if real_date(stamp[:10]) else ""
    zoned = ZONED_STAMP(stamp)
    if zoned is None:
        return ""
    head, fraction, sign, hours, minutes = zoned.groups()
    try:
        moment = datetime.fromisoformat(head)
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        # Shifted past year 1 or 9999: OverflowError, not ValueError.
        moment = moment - offset if sign == "+" else moment + offset
    except (ValueError, OverflowError):
        return ""
    # Not strftime: glibc's %Y writes year 500 as "500".
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}{fraction or ''}Z"
    )
