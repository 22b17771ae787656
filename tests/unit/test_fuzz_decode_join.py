"""Bad input through decode, join and the fast path: nothing raises, nothing goes missing.

Hypothesis feeds random bytes, invalid UTF-8, NUL bytes, truncated and mistyped JSON and
near-valid runtime lines (plus a few 5 MB lines) through `collector.decode` and
`collector.join.Joiner`. Every input line must come out accounted for: as a `parse_error`
record of its own, or inside exactly one record, as a model of the joining rules built from
ARCHITECTURE.md and the multiline rules' own `continues()` predicts. Lines that the fast
path (`collector.fastpath`) takes must give the same record, as valid JSON, as the general
path; and the agent's own hot loop over a real file must give the general path's records.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collector import fastpath
from collector.decode import (
    DECODERS,
    EMPTY,
    INVALID_UTF8,
    REPLACED,
    Line,
    decode_cri,
    decode_docker,
    detect,
    json_prefix,
)
from collector.encode import Encoder
from collector.join import PARSE_ERROR, Joiner, Record, utf8_head, utf8_size
from collector.multiline import rule_for
from harness.nodewriter import docker_json
from tests.unit.logfiles import ListSink, agent, drain

STREAMS = ("stdout", "stderr")
META = {"container.id": "c" * 64, "kubernetes.namespace": "shop", "host.name": "node-a"}
ENCODER = Encoder("/var/log/pods/shop_p_u/app/0.log", "0123456789abcdef", META)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- lines ------------------------------------------------------------------------------------

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=40
) | st.sampled_from(
    [
        "",
        "at com.x.Y.z(Y.java:1)",
        "\tat com.x.Y.z(Y.java:1)",
        "Caused by: java.io.IOException: x",
        "java.lang.IllegalStateException: boom",
        "\t... 3 more",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: bad",
        "During handling of the above exception, another exception occurred:",
        "panic: oh no",
        "goroutine 1 [running]:",
        "main.main()",
        "\t/app/main.go:12 +0x1d",
        "grüße 日本 🚀",
        "nul \x00 byte",
        "ends with \\",
        "<html> & 'quotes' \"double\"",
    ]
)
stamps = st.sampled_from(
    [
        "2026-11-27T02:20:49.123456789Z",
        "2026-11-27T02:20:49Z",
        "2026-11-27T02:20:49.5+01:00",
        "2016-10-06T00:17:09.669794202-07:00",
        "2026-11-27T02:20:49",
        "yesterday",
        "",
        "2026-11-27T02:20:49.Z",
        "2026-13-45T99:99:99Z",
        "xxxxxxxxxxTxxxxxxxxZ",
        '2026-11-27T02:20:4"9Z',
    ]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=5,
)


@st.composite
def docker_lines(draw: st.DrawFn) -> bytes:
    log: Any = draw(texts)
    if draw(st.booleans()):
        log += "\n"
    body: dict[str, Any] = {
        "log": log,
        "stream": draw(st.sampled_from(STREAMS) | texts),
        "time": draw(stamps),
    }
    for key in draw(st.sets(st.sampled_from(["log", "stream", "time"]), max_size=2)):
        if draw(st.booleans()):
            del body[key]
        else:
            body[key] = draw(json_values)
    if draw(st.booleans()):
        body[draw(texts)] = draw(json_values)
    raw = orjson.dumps(body)
    if draw(st.booleans()):
        # As Docker's Go encoder writes it: HTML-safe escapes.
        raw = raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    return raw


@st.composite
def cri_lines(draw: st.DrawFn) -> bytes:
    stream = draw(st.sampled_from([*STREAMS, "stdin", ""]))
    tag = draw(st.sampled_from(["F", "P", "F:x", "P:a:b", "X", "", "f"]))
    head = f"{draw(stamps)} {stream} {tag}"
    if draw(st.booleans()):
        return head.encode()
    return f"{head} {draw(texts)}".encode("utf-8", "surrogatepass")


@st.composite
def mangled(draw: st.DrawFn, lines: st.SearchStrategy[bytes]) -> bytes:
    """A line cut short, with bytes replaced or inserted: invalid UTF-8, NUL, broken escapes."""
    raw = bytearray(draw(lines))
    for _ in range(draw(st.integers(1, 3))):
        if not raw:
            break
        where = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["cut", "replace", "insert"]))
        junk = draw(
            st.sampled_from(
                [
                    *(b"\x00", b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\\", b"\\q"),
                    *(b"\\ud800", b"\\udc00", b"\\ud83d\\ude00", b"\x01", b'"'),
                ]
            )
            | st.binary(min_size=1, max_size=4)
        )
        if action == "cut":
            del raw[where:]
        elif action == "replace":
            raw[where : where + len(junk)] = junk
        else:
            raw[where:where] = junk
    return bytes(raw).replace(b"\n", b"")


ascii_texts = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.just("\t"))
good_stamps = st.sampled_from(
    ["2026-11-27T02:20:49.123456789Z", "2026-11-27T02:20:49Z", "2024-02-29T23:59:59.5Z"]
)


real_texts = (
    ascii_texts
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"))
    | st.sampled_from(["grüße 日本 🚀 INFO", "<b>&amp;</b> \u2028 \u2029", "Ωμέγα\tЖ 👍🏽"])
)
"""What programs print: any characters, often ASCII, now and then odd ones."""


@st.composite
def runtime_docker_lines(draw: st.DrawFn) -> bytes:
    """Complete lines as Docker writes them (its Go encoder's escapes, UTF-8 as it is): the
    ones the chunk path is for."""
    text, stream = draw(real_texts) + "\n", draw(st.sampled_from(STREAMS))
    return docker_json(text, stream, draw(good_stamps)).rstrip(b"\n")


@st.composite
def runtime_cri_lines(draw: st.DrawFn) -> bytes:
    stream = draw(st.sampled_from(STREAMS))
    return f"{draw(good_stamps)} {stream} F {draw(real_texts)}".encode()


def reads(runtime: st.SearchStrategy[bytes], odd: st.SearchStrategy[bytes]) -> st.SearchStrategy:
    """Reads of runtime lines, some with one odd line among them."""
    lines = st.lists(runtime, min_size=1, max_size=6)
    with_odd = st.tuples(lines, odd, st.integers(0, 6)).map(
        lambda t: [*t[0][: t[2]], t[1], *t[0][t[2] :]]
    )
    return lines | with_odd


def any_line(kind: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return (
        kind
        | mangled(kind)
        | st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))
        | st.just(b"")
    )


def split_16k(text: str, stream: str, size: int) -> list[bytes]:
    """A long message as Docker writes it, in `size`-byte pieces (tiny sizes keep it fast)."""
    data = text.encode()
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    out = []
    for n, piece in enumerate(pieces):
        log = piece.decode("utf-8", "replace") + ("\n" if n == len(pieces) - 1 else "")
        out.append(orjson.dumps({"log": log, "stream": stream, "time": "2026-11-27T02:20:49Z"}))
    return out


@st.composite
def docker_files(draw: st.DrawFn) -> list[bytes]:
    """Docker lines with runs of pieces (partial lines) among them."""
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 3)) == 0:
            lines += split_16k(draw(texts), draw(st.sampled_from(STREAMS)), draw(st.integers(1, 8)))
        else:
            lines.append(draw(any_line(docker_lines())))
    return lines


@st.composite
def cri_files(draw: st.DrawFn) -> list[bytes]:
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 3)) == 0:
            stream = draw(st.sampled_from(STREAMS))
            data = draw(texts).encode()
            size = draw(st.integers(1, 8))
            cuts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
            for n, cut in enumerate(cuts):
                tag = b"F" if n == len(cuts) - 1 else b"P"
                lines.append(b"2026-11-27T02:20:49Z " + stream.encode() + b" " + tag + b" " + cut)
        else:
            lines.append(draw(any_line(cri_lines())))
    return lines


# --- the model of joining ---------------------------------------------------------------------


@dataclass
class Logical:
    """A line after the runtime's pieces are put back together."""

    offset: int
    stream: str
    text: str = ""
    members: list[int] = field(default_factory=list)
    mend: bool = False
    """A piece was not UTF-8 on its own (containerd cut a character in two)."""
    invalid: bool = False
    """Text that was not UTF-8 was replaced (Docker) or is still not UTF-8 once whole."""

    def short(self, max_record: int) -> str:
        """What the multiline rule sees: the text cut at max_record bytes."""
        return utf8_head(self.text, max_record)


@dataclass
class Expected:
    offset: int
    stream: str
    text: str
    """Nothing cut: the record is this, or (tagged truncated) a prefix of it."""
    members: list[int]
    cut: bool = False
    """Some line of it is longer than max_record."""
    parse_error: bool = False
    lines: int = 1
    invalid: bool = False
    """Tagged invalid_utf8: some of its text was not UTF-8."""
    loose: bool = False
    """Cut while a character was being mended: only the cut and the size are checked."""


def whole(text: str) -> tuple[str, bool]:
    """Pieces' text (bytes that were not UTF-8 kept as surrogate escapes) decoded as one;
    True when it still is not UTF-8."""
    data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), True


def model(decoded: list[Line], rule_name: str | None, max_record: int) -> dict[int, Expected]:
    """What the joiner must give for `decoded` (offset = index), all flushed at the end.

    A line that is not UTF-8 (`INVALID_UTF8`) may be a piece of a character cut by the 16 KiB
    split: as a piece, or as the last piece of a held line, it is joined, and only the whole
    line is judged; still not UTF-8, it is a record like any other, tagged invalid_utf8, as
    is a Docker line whose text was replaced (`REPLACED`). Empty lines make no record. Any
    other error is a parse_error record of its own line.
    """
    rule = rule_for(rule_name) if rule_name else None
    out: dict[int, Expected] = {}
    pieces: dict[str, Logical] = {}
    groups: dict[str, list[Logical]] = {}

    def emit(group: list[Logical]) -> None:
        first = group[0]
        out[first.offset] = Expected(
            first.offset,
            first.stream,
            "\n".join(g.text for g in group),
            [m for g in group for m in g.members],
            cut=any(utf8_size(g.text) > max_record for g in group),
            lines=len(group),
            invalid=any(g.invalid for g in group),
        )

    def logical(line: Logical) -> None:
        if line.mend:
            line.text, bad = whole(line.text)
            line.invalid |= bad
        if rule is None:
            emit([line])
            return
        held = groups.get(line.stream)
        if held is not None:
            first, previous = held[0].short(max_record), held[-1].short(max_record)
            if rule.continues(first, previous, line.short(max_record)):
                held.append(line)
                return
            emit(groups.pop(line.stream))
        groups[line.stream] = [line]

    for n, line in enumerate(decoded):
        bad_utf8 = line.error is INVALID_UTF8
        if line.error is EMPTY:
            continue
        if line.error is not None and not bad_utf8 and line.error is not REPLACED:
            out[n] = Expected(n, line.stream, line.text, [n], parse_error=True)
            continue
        held = pieces.pop(line.stream, None) or Logical(n, line.stream)
        held.text += line.text
        held.members.append(n)
        held.mend |= bad_utf8
        held.invalid |= line.error is REPLACED
        if line.partial:
            pieces[line.stream] = held
        else:
            logical(held)
    for stream in list(pieces):
        logical(pieces.pop(stream))
    for stream in list(groups):
        emit(groups.pop(stream))
    return out


def join_all(decoded: list[Line], rule_name: str | None, max_record: int) -> list[Record]:
    joiner = Joiner(rule_for(rule_name) if rule_name else None, max_record, timeout=3600.0)
    out: list[Record] = []
    for n, line in enumerate(decoded):
        joiner.push("file", n, line, out)
    joiner.expire(0.0, out, force=True)
    assert not joiner.holding()
    assert joiner.held_from("file") is None
    return out


def check_joined(decoded: list[Line], rule_name: str | None, max_record: int) -> None:
    records = join_all(decoded, rule_name, max_record)
    want = model(decoded, rule_name, max_record)
    by_offset = {r.offset: r for r in records}
    assert len(by_offset) == len(records), "two records start at the same line"
    assert sorted(by_offset) == sorted(want), "lines lost, doubled or grouped differently"
    covered = sorted(m for e in want.values() for m in e.members)
    assert covered == [n for n, line in enumerate(decoded) if line.error is not EMPTY]
    errors = sum(1 for e in want.values() if e.parse_error)
    assert sum(1 for r in records if "parse_error" in r.tags) == errors
    for offset, expected in want.items():
        record = by_offset[offset]
        assert record.stream == expected.stream
        if expected.parse_error:
            assert "parse_error" in record.tags
            assert expected.text.startswith(record.text)
            assert ("truncated" in record.tags) == (utf8_size(expected.text) > max_record)
            assert utf8_size(record.text) <= max_record
            continue
        assert record.time == decoded[offset].time
        if expected.cut or utf8_size(expected.text) > max_record:
            assert "truncated" in record.tags
            assert expected.text.startswith(record.text)
            # What was cut off is not judged: only what is kept can make the tag.
            assert ("invalid_utf8" in record.tags) <= expected.invalid
        else:
            assert "truncated" not in record.tags
            assert record.text == expected.text
            assert ("invalid_utf8" in record.tags) == expected.invalid
        assert utf8_size(record.text) <= max_record, (
            f"a record of {utf8_size(record.text)} bytes, max_record is {max_record}: "
            f"{record.text[-20:]!r}"
        )
        assert ("multiline" in record.tags) <= (expected.lines > 1)


def check_decoded(line: Line, raw: bytes) -> None:
    assert isinstance(line, Line)
    assert line.stream in STREAMS
    assert isinstance(line.text, str)
    assert "\x00" not in line.text
    if line.error is EMPTY:
        assert raw == b""
        return
    if line.error is INVALID_UTF8:
        # Kept as surrogate escapes for the joiner to decode whole (a character may be cut).
        line.text.encode("utf-8", "surrogateescape")
        return
    line.text.encode("utf-8")  # no lone surrogates: the record must encode
    if line.error is not None and line.error is not REPLACED:
        assert isinstance(line.error, str)
        assert not line.partial
        return
    assert rfc3339(line.time), f"{line.time!r} is no RFC 3339 time: Elasticsearch refuses it"
    assert isinstance(line.partial, bool)


STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z")


def rfc3339(stamp: str) -> bool:
    if STAMP.fullmatch(stamp) is None:
        return False
    try:
        datetime.fromisoformat(stamp[:19])
    except ValueError:
        return False
    return True


# --- properties ---------------------------------------------------------------------------------


@FUZZ
@given(st.lists(any_line(docker_lines()), max_size=30))
@example([b'{"log":"x\\n","stream":"stdout","time":"2026-11-27T02:20:49.Z"}'])
def test_docker_decode_never_raises_and_keeps_the_raw_text_of_bad_lines(
    lines: list[bytes],
) -> None:
    for raw in lines:
        line = decode_docker(raw)
        check_decoded(line, raw)
        if line.error is REPLACED:
            # Time and stream kept; only text that was not UTF-8 is replaced.
            assert "\ufffd" in line.text or b"\\u" in raw or not raw.isascii()
        elif line.error is not None:
            assert line.text == raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


@FUZZ
@given(st.lists(any_line(cri_lines()), max_size=30))
@example([b"2026-13-45T99:99:99Z stdout F x"])
def test_cri_decode_never_raises_and_keeps_the_raw_text_of_bad_lines(lines: list[bytes]) -> None:
    for raw in lines:
        line = decode_cri(raw)
        check_decoded(line, raw)
        if line.error is INVALID_UTF8:
            # The text is kept as bytes (surrogate escapes) for the joiner to decode whole.
            assert raw.endswith(line.text.encode("utf-8", "surrogateescape"))
        elif line.error is not None:
            assert line.text == raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


@FUZZ
@given(
    st.one_of(docker_files().map(lambda x: ("docker", x)), cri_files().map(lambda x: ("cri", x))),
    st.sampled_from([None, "java", "python", "go", r"^\d{4}-"]),
    st.sampled_from([1024 * 1024, 64, 5]),
)
@example(("cri", [b"2026-11-27T02:20:49Z stdout P 000000"]), None, 5)
@example(
    ("cri", [b"2026-11-27T02:20:49Z stdout F abcde", b"2026-11-27T02:20:49Z stdout F \tat x"]),
    "java",
    5,
)
def test_every_line_ends_up_in_exactly_one_record(
    file: tuple[str, list[bytes]], rule: str | None, max_record: int
) -> None:
    kind, lines = file
    decoded = [DECODERS[kind](raw) for raw in lines]
    check_joined(decoded, rule, max_record)


@FUZZ
@given(
    # A NUL byte makes a CRI line malformed (tested elsewhere), wherever the cut falls.
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\x00")),
    st.integers(1, 9),
    st.sampled_from(STREAMS),
    st.sampled_from([None, "java"]),
)
@example("日本" * 3, 4, "stdout", None)
def test_a_cri_line_cut_at_any_byte_comes_back_whole(
    text: str, size: int, stream: str, rule: str | None
) -> None:
    """containerd cuts at a byte count, not at a character: the pieces are joined as bytes."""
    data = text.encode()
    cuts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    lines = [
        b"2026-11-27T02:20:49Z " + stream.encode() + (b" P " if n < len(cuts) - 1 else b" F ") + cut
        for n, cut in enumerate(cuts)
    ]
    records = join_all([decode_cri(raw) for raw in lines], rule, 2**20)
    assert [(r.offset, r.stream, r.text, r.tags) for r in records] == [(0, stream, text, ())]


def general(raw: bytes, kind: str, offset: int) -> dict[str, Any]:
    """The general path's record of one line (a line that makes none: tagged "none")."""
    joiner = Joiner(None, 2**20, timeout=3600.0)
    out: list[Record] = []
    joiner.push(None, offset, DECODERS[kind](raw), out)
    joiner.expire(0.0, out, force=True)
    if not out:
        return {"tags": ["none"]}
    (record,) = out
    return orjson.loads(ENCODER.encode(record))


@FUZZ
@given(any_line(docker_lines()), st.integers(0, 2**40))
@example(b'{"log":"a\\q\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}', 0)
@example(b'{"log":"\\ud800\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}', 0)
@example(b'{"log":"tab\there\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}', 0)
def test_docker_fast_path_gives_valid_json_and_the_general_record(raw: bytes, offset: int) -> None:
    fast = fastpath.docker(raw, offset, ENCODER.template)
    if fast is not None:
        assert_general_records("docker", [raw], [fast], offset)


@FUZZ
@given(any_line(cri_lines()), st.integers(0, 2**40))
@example(b'2026-11-27T02:20:4"9Z stdout F x', 0)
@example(b"xxxxxxxxxxTxxxxxxxxZ stdout F x", 0)
def test_cri_fast_path_gives_valid_json_and_the_general_record(raw: bytes, offset: int) -> None:
    fast = fastpath.cri(raw, offset, ENCODER.template)
    if fast is not None:
        assert_general_records("cri", [raw], [fast], offset)


def assert_general_records(kind: str, lines: list[bytes], values: list[bytes], offset: int) -> None:
    """What a fast path made of `lines` (from `offset` on): valid JSON, each line's general
    record, and only for lines the general path takes whole and without complaint."""
    assert len(values) == len(lines)
    for raw, value in zip(lines, values, strict=True):
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            pytest.fail(f"the fast path made invalid JSON of {raw!r}: {exc}")
        want = general(raw, kind, offset)
        if want.get("tags") or DECODERS[kind](raw).partial:
            pytest.fail(f"the fast path shipped a line that needs the general path: {raw!r}")
        assert record == want
        offset += len(raw) + 1


def chunk_matches_the_general_path(kind: str, lines: list[bytes], offset: int) -> None:
    """A whole read through the chunk path: declined, or each line's general record."""
    lines = [raw.replace(b"\n", b"") for raw in lines]
    fast = fastpath.FAST_PATHS[kind].chunk(b"\n".join(lines), offset, ENCODER.template, 1 << 20)
    if fast is not None:
        assert fast.lines == len(lines)
        assert_general_records(kind, lines, fast.values, offset)


@FUZZ
@given(reads(runtime_docker_lines(), any_line(docker_lines())), st.integers(0, 2**40))
@example([b'{"log":"a\\\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}'], 0)
@example([b'{"log":"\\u0000\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}'], 0)
@example([b'{"log":"a\\n","stream":"stdout","time":"2026-02-30T02:20:49Z"}'], 0)
@example([b'{"log":"\\ud800\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}'], 0)
def test_docker_chunk_path_gives_the_general_records(lines: list[bytes], offset: int) -> None:
    chunk_matches_the_general_path("docker", lines, offset)


@FUZZ
@given(reads(runtime_cri_lines(), any_line(cri_lines())), st.integers(0, 2**40))
@example([b'2026-11-27T02:20:49Z stdout F a "quoted" \\ path', b"2026-11-27T02:20:49Z stderr F"], 0)
def test_cri_chunk_path_gives_the_general_records(lines: list[bytes], offset: int) -> None:
    chunk_matches_the_general_path("cri", lines, offset)


clean_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\t")
) | st.sampled_from(["grüße 日本 🚀 INFO", "<b>&amp;</b> \u2028 \u2029"])
"""Text without control bytes (tabs aside): what the runtimes write without a NUL or CR."""


@FUZZ
@given(st.lists(st.tuples(clean_texts, st.sampled_from(STREAMS)), min_size=1, max_size=6))
@example([("grüße 日本 🚀 <b>&</b> \u2028", "stdout")])
def test_the_chunk_path_takes_every_line_the_runtimes_write(lines: list[tuple[str, str]]) -> None:
    """UTF-8 text and every escape Docker's encoder writes, not only ASCII: a read of such
    lines is one regex pass, each line its general record."""
    stamp = "2026-11-27T02:20:49.123456789Z"
    docker = [docker_json(text + "\n", stream, stamp).rstrip(b"\n") for text, stream in lines]
    cri = [f"{stamp} {stream} F {text}".encode() for text, stream in lines]
    for kind, raws in (("docker", docker), ("cri", cri)):
        data = b"\n".join(raws)
        fast = fastpath.FAST_PATHS[kind].chunk(data, 0, ENCODER.template, 1 << 20)
        assert fast is not None, (kind, raws)
        assert fast.lines == len(raws)
        assert_general_records(kind, raws, fast.values, 0)


def expected_records(
    lines: list[bytes], kind: str, rule: str | None, max_record: int = 1024 * 1024
) -> list[dict[str, Any]]:
    """The general path alone over a file's lines: decode, join, encode."""
    offsets = []
    at = 0
    for raw in lines:
        offsets.append(at)
        at += len(raw) + 1
    joiner = Joiner(rule_for(rule) if rule else None, max_record, timeout=3600.0)
    out: list[Record] = []
    for raw, offset in zip(lines, offsets, strict=True):
        joiner.push("file", offset, DECODERS[kind](raw), out)
    joiner.expire(0.0, out, force=True)
    return [
        {
            "offset": r.offset,
            "stream": r.stream,
            "message": r.text,
            "tags": list(r.tags),
            # A line without the runtime's time gets the time it was read.
            "time": None if "parse_error" in r.tags else r.time,
        }
        for r in out
    ]


def agent_records(lines: list[bytes], rule: str | None, *extra: str) -> list[dict[str, Any]]:
    """The agent's hot loop (fast paths where it can) over a real file of `lines`."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "log" / "pods" / "shop_cart-1_uid-1" / "app"
        folder.mkdir(parents=True)
        (folder / "0.log").write_bytes(b"".join(raw + b"\n" for raw in lines))
        sink = ListSink()
        # --once: what is held at the end is shipped, as the general path's expire(force).
        # The text as it is (no parsing, no redaction): that is what the model predicts;
        # tests/unit/test_processing_paths.py holds the processed records to the general path.
        flags = ("--once", "--kubernetes", "off", "--parser", "none", "--redact-builtin", "no")
        flags += extra
        flags += (f"--multiline=*={rule}",) if rule else ()
        loop = agent(root, sink, *flags)
        drain(loop)
        loop.flush_held()
    return [
        {
            "offset": r["log"]["offset"],
            "stream": r["stream"],
            "message": r["message"],
            "tags": r.get("tags", []),
            "time": None if "parse_error" in r.get("tags", []) else r["@timestamp"],
        }
        for r in sink.records
    ]


def by_offset(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: r["offset"])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.one_of(
        docker_files().map(lambda x: ("docker", x)),
        cri_files().map(lambda x: ("cri", x)),
        # Mostly runtime lines: whole reads go the chunk path.
        reads(runtime_docker_lines(), any_line(docker_lines())).map(lambda x: ("docker", x)),
        reads(runtime_cri_lines(), any_line(cri_lines())).map(lambda x: ("cri", x)),
    ),
    st.sampled_from([None, "java", "python"]),
)
@example(("docker", [b'{"log":"a\\q\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}']), None)
def test_the_agent_loop_gives_the_general_path_records(
    file: tuple[str, list[bytes]], rule: str | None
) -> None:
    """The hot loop (fast path where it can) over a real file, against decode+join+encode."""
    kind, lines = file
    if not lines or not lines[0]:
        return
    if detect(lines[0][:512]) != kind:
        return
    want = expected_records(lines, kind, rule)
    assert by_offset(agent_records(lines, rule)) == by_offset(want)


@st.composite
def long_lines(draw: st.DrawFn, kind: str) -> bytes:
    """A line longer than the tail keeps (at --max-record-bytes 1000), perhaps with text
    that is not UTF-8 or a broken escape near its start (what is read past is never looked
    at: a line broken only there is the general path's parse_error, the tail's good cut)."""
    unit = draw(texts.filter(bool))
    size = draw(st.integers(70_000, 140_000))
    text = (unit * (size // len(unit) + 1))[:size]
    junk = draw(
        st.sampled_from([b"", b"\xff", b"\xed\xa0\x80", b"\\ud800", b"\\udc00x", b'"', b"\\q"])
    )
    stream = draw(st.sampled_from(STREAMS))
    if kind == "docker":
        end = "\n" if draw(st.booleans()) else ""
        raw = orjson.dumps({"log": text + end, "stream": stream, "time": draw(good_stamps)})
        at = draw(st.integers(8, 500))
        return raw[:at] + junk + raw[at:]
    tag = draw(st.sampled_from(["F", "P"]))
    head = f"{draw(good_stamps)} {stream} {tag} ".encode()
    return head + junk + text.encode()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.sampled_from(["docker", "cri"]).flatmap(
        lambda kind: st.tuples(
            st.just(kind),
            st.lists(
                long_lines(kind)
                | (runtime_docker_lines() if kind == "docker" else runtime_cri_lines())
                | st.just(b""),
                min_size=1,
                max_size=5,
            ),
        )
    )
)
@example(("docker", [b'{"log":"a\\ud800b\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}']))
@example(("docker", [b'{"log":"ok\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}', b""]))
@example(
    ("cri", [b"2026-11-27T02:20:49Z stdout F caf\xe9", b"", b"2026-11-27T02:20:49Z stdout F x"])
)
def test_the_agent_gives_the_general_records_for_long_empty_and_invalid_lines(
    file: tuple[str, list[bytes]],
) -> None:
    """Lines cut by the tail (read past, never held whole), lines that are not UTF-8 and
    empty lines: the same records, tags and times as decode+join+encode of whole lines."""
    kind, lines = file
    if not lines[0] or detect(lines[0][:512]) != kind:
        return
    want = expected_records(lines, kind, None, 1000)
    assert by_offset(agent_records(lines, None, "--max-record-bytes", "1000")) == by_offset(want)


# --- 5 MB lines -------------------------------------------------------------------------------

BIG = 5 * 1024 * 1024


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps({"log": "x" * BIG + "\n", "stream": "stdout", "time": "2026-11-27T02:20:49Z"}),
        orjson.dumps({"log": "x" * BIG + "\n", "stream": "stdout", "time": "2026-11-27T02:20:49Z"})[
            : BIG // 2
        ],
        b"2026-11-27T02:20:49Z stdout F " + b"y" * BIG,
        b"2026-11-27T02:20:49Z stdout F " + "日本".encode() * (BIG // 6),
        bytes(range(256)) * (BIG // 256),
        b"\x00" * BIG,
    ],
    ids=["docker", "docker-truncated-json", "cri", "cri-utf8", "bytes", "nul"],
)
def test_five_megabyte_lines_are_cut_at_max_record_not_dropped(raw: bytes) -> None:
    kind = detect(raw[:512])
    line = DECODERS[kind](raw)
    check_decoded(line, raw)
    (record,) = join_all([line], None, 2**20)
    if line.error is not None:
        assert record.tags == (*PARSE_ERROR, "truncated")
    else:
        assert record.tags == ("truncated",)
        assert 2**20 - 4 < utf8_size(record.text) <= 2**20
    assert orjson.loads(ENCODER.encode(record))["message"] == record.text
    fast = fastpath.FAST_PATHS[kind].line(raw, 0, ENCODER.template)
    if fast is not None:
        # The agent takes a line this long the general path (it needs cutting).
        assert orjson.loads(fast)["message"] == line.text


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps({"log": "é" * BIG, "stream": "stderr", "time": "2026-11-27T02:20:49Z"}),
        b"2026-11-27T02:20:49Z stdout P " + b"z" * BIG,
    ],
    ids=["docker", "cri"],
)
def test_a_five_megabyte_piece_that_never_ends_is_cut_too(raw: bytes) -> None:
    """A partial line whose end never comes (the runtime died) is let go by the timeout."""
    line = DECODERS[detect(raw[:512])](raw)
    assert line.partial
    (record,) = join_all([line], None, 2**20)
    assert len(record.text) <= 2**20
    assert record.tags == ("truncated",)


# --- found by fuzzing: the smallest cases ------------------------------------------------------


def test_cri_pieces_cut_inside_a_utf8_character_are_joined() -> None:
    """containerd cuts a long line every 16384 bytes, wherever a UTF-8 character sits; the
    pieces must be joined as bytes, not each decoded (they are then two parse errors)."""
    message = "日本" * 5_000
    data = message.encode()
    assert len(data[:16384].decode("utf-8", "ignore").encode()) < 16384, "cut inside a character"
    pieces = [
        b"2026-11-27T02:20:49Z stdout P " + data[:16384],
        b"2026-11-27T02:20:49Z stdout F " + data[16384:],
    ]
    records = join_all([decode_cri(raw) for raw in pieces], None, 2**20)
    assert [(r.text, r.tags) for r in records] == [(message, ())]


@pytest.mark.parametrize(
    "stamp", ["2026-11-27T02:20:49.Z", "2026-13-45T99:99:99Z", "xxxxxxxxxxTxxxxxxxxZ"]
)
@pytest.mark.parametrize("kind", ["docker", "cri"])
def test_a_time_that_is_not_rfc3339_makes_a_parse_error(kind: str, stamp: str) -> None:
    """Elasticsearch refuses such a @timestamp: the record would end in the dead-letter topic
    instead of being indexed with its parse_error tag."""
    if kind == "docker":
        raw = orjson.dumps({"log": "x\n", "stream": "stdout", "time": stamp})
    else:
        raw = f"{stamp} stdout F x".encode()
    line = DECODERS[kind](raw)
    assert line.error is not None or rfc3339(line.time), line
    assert fastpath.FAST_PATHS[kind].line(raw, 0, ENCODER.template) is None


def test_a_piece_let_go_by_the_timeout_is_cut_at_max_record() -> None:
    """A partial line whose rest never comes is flushed by the timeout, uncut and untagged."""
    (record,) = join_all([decode_cri(b"2026-11-27T02:20:49Z stdout P 0123456789")], None, 5)
    assert (record.text, record.tags) == ("01234", ("truncated",))


@pytest.mark.parametrize(
    ("message", "max_record"),
    [("日" * 6000, 5462), ("00\U00010000", 6)],
    ids=["cut-at-max-record", "fits"],
)
def test_a_character_split_by_the_runtime_is_not_counted_byte_by_byte(
    message: str, max_record: int
) -> None:
    """Near max_record, a character that containerd cut in two counts one per byte (its
    surrogate escapes): the record is cut too early, or cut inside the character and then
    tagged parse_error with a U+FFFD, although its text is good UTF-8."""
    data = message.encode()
    size = 16384 if len(data) > 16384 else 3
    cuts = [data[i : i + size] for i in range(0, len(data), size)]
    lines = [
        decode_cri(b"2026-11-27T02:20:49Z stdout " + (b"P " if n < len(cuts) - 1 else b"F ") + c)
        for n, c in enumerate(cuts)
    ]
    (record,) = join_all(lines, None, max_record)
    assert "parse_error" not in record.tags
    assert message.startswith(record.text)
    assert min(utf8_size(message), max_record) - 4 < utf8_size(record.text)
    assert utf8_size(record.text) <= max_record


def test_a_cut_multiline_record_stays_within_max_record() -> None:
    """A first line of exactly max_record characters, then a continuation: the record gets a
    trailing newline, one character over max_record."""
    lines = [
        decode_cri(b"2026-11-27T02:20:49Z stdout F abcde"),
        decode_cri(b"2026-11-27T02:20:49Z stdout F \tat x.y(Z.java:1)"),
    ]
    (record,) = join_all(lines, "java", 5)
    assert len(record.text) <= 5, repr(record.text)


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("docker", b'{"log":"a\\q\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}'),
        ("docker", b'{"log":"\\ud800\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}'),
        ("docker", b'{"log":"tab\there\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}'),
        ("cri", b'2026-11-27T02:20:4"9Z stdout F x'),
    ],
    ids=["invalid-escape", "lone-surrogate", "raw-control-char", "quote-in-time"],
)
def test_the_fast_path_never_ships_invalid_json(kind: str, raw: bytes) -> None:
    """The general path makes these parse_error records; the fast path copies the bytes into
    the record, which then is no JSON (the pipeline dead-letters it as undecodable)."""
    fast = fastpath.FAST_PATHS[kind].line(raw, 0, ENCODER.template)
    if fast is not None:
        orjson.loads(fast)


def escaped(char: str, pair: bool) -> bytes:
    """One character as Docker's encoder may write it in a JSON string."""
    if char in "<>&":
        return f"\\u{ord(char):04x}".encode()
    if pair and ord(char) > 0xFFFF:
        high, low = divmod(ord(char) - 0x10000, 0x400)
        return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}".encode()
    return orjson.dumps(char)[1:-1]


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.characters(blacklist_categories=("Cs",))
            | st.sampled_from(["\\", '"', "\n", "\x01", "<", "é", "日", "😀"]),
            st.booleans(),
        ),
        max_size=30,
    ),
    st.data(),
)
def test_a_docker_text_cut_at_any_byte_reads_as_its_whole_characters(
    chars: list[tuple[str, bool]], data: st.DataObject
) -> None:
    """The head of a line the tail cut ends anywhere: inside an escape, a surrogate pair or
    a UTF-8 character. What is read is every character before the cut, and nothing is
    taken for text that is not UTF-8."""
    pieces = [escaped(char, pair) for char, pair in chars]
    body = b"".join(pieces)
    at = data.draw(st.integers(0, len(body)))
    ends = list(accumulate(map(len, pieces)))
    want = "".join(char for char, _ in chars[: sum(1 for end in ends if end <= at)])
    got = json_prefix(body[:at])
    assert got == (want, False)
