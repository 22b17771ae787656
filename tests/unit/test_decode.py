from __future__ import annotations

import orjson
import pytest

from collector.decode import (
    BOM,
    EMPTY,
    REPLACED,
    Line,
    decode_cri,
    decode_docker,
    detect,
    utc,
)


def docker(log: str, stream: str = "stdout", time: str = "2026-11-27T02:20:49.123456789Z") -> bytes:
    return orjson.dumps({"log": log, "stream": stream, "time": time})


def test_docker_line_loses_its_newline_and_keeps_nanoseconds() -> None:
    assert decode_docker(docker("hello\n", "stderr")) == Line(
        "2026-11-27T02:20:49.123456789Z", "stderr", False, "hello"
    )


def test_docker_piece_without_newline_is_partial() -> None:
    line = decode_docker(docker("x" * 16384))
    assert line.partial
    assert line.text == "x" * 16384


def test_docker_keeps_non_ascii_text() -> None:
    assert decode_docker(docker("grüße 日本 🚀\n")).text == "grüße 日本 🚀"


def test_cri_full_and_partial_lines() -> None:
    full = decode_cri(b"2026-11-27T02:20:49.000000001Z stdout F hello world")
    assert full == Line("2026-11-27T02:20:49.000000001Z", "stdout", False, "hello world")
    partial = decode_cri(b"2026-11-27T02:20:49.000000001Z stderr P part one ")
    assert partial.partial
    assert partial.text == "part one "
    assert partial.stream == "stderr"


def test_cri_with_several_tags_uses_the_first() -> None:
    line = decode_cri(b"2026-11-27T02:20:49.5Z stdout P:x:y text")
    assert line.partial
    assert line.text == "text"
    assert line.error is None


def test_cri_empty_text() -> None:
    assert decode_cri(b"2026-11-27T02:20:49.5Z stdout F").text == ""
    assert decode_cri(b"2026-11-27T02:20:49.5Z stdout F ").text == ""


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2016-10-06T00:17:09.669794202-07:00", "2016-10-06T07:17:09.669794202Z"),
        ("2016-10-06T23:17:09.5+02:00", "2016-10-06T21:17:09.5Z"),
        ("2016-12-31T23:59:59.000000001-01:00", "2017-01-01T00:59:59.000000001Z"),
        ("2016-10-06T00:17:09+00:00", "2016-10-06T00:17:09Z"),
        ("2016-10-06T00:17:09.123Z", "2016-10-06T00:17:09.123Z"),
    ],
)
def test_zone_offsets_become_utc_with_the_fraction_kept(stamp: str, expected: str) -> None:
    assert utc(stamp) == expected
    assert decode_cri(f"{stamp} stdout F x".encode()).time == expected


@pytest.mark.parametrize(
    "stamp",
    [
        # shifted past the first or last day a datetime holds: OverflowError, which stopped
        # the collector at that line on every start
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
        # not RFC 3339, though fromisoformat reads them
        "2026-11-30T10:00:00+25:00",
        "2026-11-30T10:00:00+02:99",
        "2026-11-30T10:00:00,5+02:00",
        "2026-11-30T10:00:00+01:00+02:00",
        "2026-11-30 10:00:00.5+02:00",
        "2026-W48-1T10:00:00+02:00",
    ],
)
def test_a_stamp_that_is_no_time_makes_a_parse_error_not_a_crash(stamp: str) -> None:
    assert utc(stamp) == ""
    line = decode_cri(f"{stamp} stdout F x".encode())
    assert line.error
    docker = decode_docker(b'{"log":"x\\n","stream":"stdout","time":"%s"}' % stamp.encode())
    assert docker.error


def test_a_year_before_1000_keeps_four_digits() -> None:
    assert utc("0500-01-01T05:00:00.5+01:00") == "0500-01-01T04:00:00.5Z"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"log": "cut',
        b"[1, 2]",
        b'{"log": 5, "stream": "stdout", "time": "2026-11-27T02:20:49Z"}',
        b'{"log": "x\\n", "stream": "stdin", "time": "2026-11-27T02:20:49Z"}',
        b'{"log": "x\\n", "stream": "stdout", "time": "yesterday"}',
        b'{"log": "x\\n", "stream": "stdout"}',
        b'\xff\xfe{"log"',
        b"",
    ],
)
def test_malformed_docker_lines_keep_their_raw_text(raw: bytes) -> None:
    line = decode_docker(raw)
    assert line.error
    assert line.text == raw.decode("utf-8", "replace")


@pytest.mark.parametrize(
    "raw",
    [
        b"2026-11-27T02:20:49Z stdout",
        b"2026-11-27T02:20:49Z stdout X text",
        b"2026-11-27T02:20:49Z stdin F text",
        b"not-a-time stdout F text",
        b"just some text",
    ],
)
def test_malformed_cri_lines_are_reported_not_raised(raw: bytes) -> None:
    line = decode_cri(raw)
    assert line.error
    assert line.text == raw.decode("utf-8", "replace")


@pytest.mark.parametrize(
    "raw", [b"2026-11-27T02:20:49Z stderr X text", b"not-a-time stderr F text"]
)
def test_a_malformed_cri_line_that_tells_its_stream_keeps_it(raw: bytes) -> None:
    line = decode_cri(raw)
    assert line.error
    assert line.stream == "stderr"


@pytest.mark.parametrize(
    ("raw", "stream"),
    [
        (b'{"log":"x\\n","stream":"stderr"}', "stderr"),
        (b'{"log":"x\\n","stream":"stderr","time":"yesterday"}', "stderr"),
        (b'{"log":"x\\n","stream":["stderr"],"time":"2026-11-27T02:20:49Z"}', "stdout"),
        (b'{"log":"x\\n","stream":{},"time":"2026-11-27T02:20:49Z"}', "stdout"),
        (b'["stderr"]', "stdout"),
    ],
)
def test_a_malformed_docker_line_keeps_a_stream_it_told(raw: bytes, stream: str) -> None:
    line = decode_docker(raw)
    assert line.error
    assert line.stream == stream


def test_nul_in_docker_log_is_replaced_so_the_record_stays_valid() -> None:
    assert decode_docker(docker("a\x00b\n")).text == "a\ufffdb"


def test_nul_in_cri_text_is_replaced_and_the_line_keeps_its_frame() -> None:
    """Not a parse error: the line kept its time and stream, and a `P` piece its tag."""
    line = decode_cri(b"2026-11-27T02:20:49.5Z stderr P worker\x00 crashed")
    assert line == Line("2026-11-27T02:20:49.5Z", "stderr", True, "worker\ufffd crashed", None)


@pytest.mark.parametrize("head", [b"\x00" * 300, BOM, b"\x00" + BOM + b"\x00"])
def test_a_line_after_the_nuls_a_crash_left_or_a_byte_order_mark_is_read(head: bytes) -> None:
    assert decode_docker(head + docker("after\n")).text == "after"
    assert decode_cri(head + b"2026-11-27T02:20:49Z stderr F after") == Line(
        "2026-11-27T02:20:49Z", "stderr", False, "after", None
    )


@pytest.mark.parametrize("head", [BOM * 5000, (b"\x00" + BOM) * 3000])
def test_any_number_of_marks_and_nuls_before_a_line_is_read_past(head: bytes) -> None:
    assert decode_docker(head + docker("after\n")).text == "after"
    assert decode_cri(head + b"2026-11-27T02:20:49Z stderr F after").text == "after"
    assert decode_docker(head + b"x").text.endswith("x")
    assert decode_cri(head + b"x").error


@pytest.mark.parametrize("raw", [b"\xef", b"\xef\xbb", b"\x00", b"\xef\x00x"])
def test_what_only_begins_as_a_crash_left_it_is_a_parse_error(raw: bytes) -> None:
    assert decode_docker(raw).error
    assert decode_cri(raw).error


def test_format_detection() -> None:
    assert detect(docker("x\n")) == "docker"
    assert detect(b"2026-11-27T02:20:49Z stdout F x") == "cri"
    assert detect(b"\x00" * 100 + BOM + docker("x\n")) == "docker"
    assert detect(b"garbage", docker_named=True) == "docker"


def test_invalid_utf8_in_cri_text_is_kept_for_the_joiner_to_mend() -> None:
    line = decode_cri(b"2026-11-27T02:20:49Z stdout P caf\xc3")
    assert line.error == "invalid UTF-8"
    assert line.partial
    assert line.text.encode("utf-8", "surrogateescape") == b"caf\xc3"


# --- lines cut by the tail: head and last bytes -----------------------------------------------

END = b'","stream":"stderr","time":"2026-11-27T02:20:49Z"}'


@pytest.mark.parametrize(
    ("head", "rest", "text", "partial"),
    [
        (b'{"log":"abc', b"xyz\\n" + END, "abc", False),
        # An escaped backslash then n: the text goes on in the next piece.
        (b'{"log":"abc', b"xyz\\\\n" + END, "abc", True),
        (b'{"log":"abc', b"xyz" + END, "abc", True),
        # Cut inside an escape, a surrogate pair, a character.
        (b'{"log":"ab\\u00', b"\\n" + END, "ab", False),
        (b'{"log":"ab\\ud83d\\ude0', b"\\n" + END, "ab", False),
        (b'{"log":"ab\\ud83d', b"\\n" + END, "ab", False),
        (b'{"log":"ab\xc3', b"\\n" + END, "ab", False),
        (b'{"log":"ab\\', b"\\n" + END, "ab", False),
        # Docker's attrs (labels, env) come between stream and time, with keys of any name.
        (
            b'{"log":"abc',
            b'\\n","stream":"stderr","attrs":{"stream":"stdout"},"time":"2026-11-27T02:20:49Z"}',
            "abc",
            False,
        ),
    ],
)
def test_a_cut_docker_line_keeps_its_time_stream_and_readable_head(
    head: bytes, rest: bytes, text: str, partial: bool
) -> None:
    line = decode_docker(head, rest)
    assert line == Line("2026-11-27T02:20:49Z", "stderr", partial, text, None, True)


def test_a_cut_docker_line_with_a_lone_surrogate_in_its_head_is_replaced_not_an_error() -> None:
    line = decode_docker(b'{"log":"a\\ud800bc', b"\\n" + END)
    assert (line.time, line.stream, line.text, line.error) == (
        "2026-11-27T02:20:49Z",
        "stderr",
        "a\ufffdbc",
        REPLACED,
    )


@pytest.mark.parametrize(
    ("head", "rest"),
    [
        (b'{"log":"abc', b"no frame at the end"),
        (b'{"log":"abc', b'\\n","stream":"stdin","time":"2026-11-27T02:20:49Z"}'),
        (b'{"log":"abc', b'\\n","stream":"stdout","time":"yesterday"}'),
        (b'{"notlog":"abc', b"\\n" + END),
        (b'{"log":"a"bc', b"\\n" + END),
    ],
    ids=["no-frame", "stream", "time", "head", "broken-head"],
)
def test_a_cut_docker_line_without_its_frame_is_a_cut_parse_error(head: bytes, rest: bytes) -> None:
    line = decode_docker(head, rest)
    assert line.error is not None
    assert line.error is not REPLACED
    assert line.cut
    assert line.text == head.decode()


def test_a_cut_cri_line_is_decoded_from_its_head() -> None:
    line = decode_cri(b"2026-11-27T02:20:49Z stderr P abc", b"whatever")
    assert line == Line("2026-11-27T02:20:49Z", "stderr", True, "abc", None, True)


def test_invalid_utf8_and_lone_surrogates_in_docker_text_are_replaced() -> None:
    for raw, text in [
        (b'{"log":"a\\ud800b\\n","stream":"stderr","time":"2026-11-27T02:20:49Z"}', "a\ufffdb"),
        (b'{"log":"a\\udc00\\n","stream":"stderr","time":"2026-11-27T02:20:49Z"}', "a\ufffd"),
        (b'{"log":"a\\\\ud800\\n","stream":"stderr","time":"2026-11-27T02:20:49Z"}', "a\\ud800"),
        (b'{"log":"a\xff\\n","stream":"stderr","time":"2026-11-27T02:20:49Z"}', "a\ufffd"),
    ]:
        line = decode_docker(raw)
        assert (line.time, line.stream, line.partial, line.text) == (
            "2026-11-27T02:20:49Z",
            "stderr",
            False,
            text,
        )
        assert line.error is (REPLACED if "\ufffd" in text else None)


def test_empty_lines_are_marked_empty() -> None:
    assert decode_docker(b"").error is EMPTY
    assert decode_cri(b"").error is EMPTY
