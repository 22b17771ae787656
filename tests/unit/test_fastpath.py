"""The fast path and the general path must give the same record for every line."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import fastpath
from collector.decode import decode_cri, decode_docker
from collector.encode import Encoder
from collector.join import Record

META = {"container.id": "c" * 64, "kubernetes.namespace": "shop", "host.name": "node-a"}
ENCODER = Encoder("/var/log/pods/shop_p_u/app/0.log", "0123456789abcdef", META)


def general(raw: bytes, decode, offset: int) -> dict:
    line = decode(raw)
    return orjson.loads(ENCODER.encode(Record(None, offset, line.time, line.stream, line.text, ())))


def go_json_line(text: str, stream: str = "stdout") -> bytes:
    """A line as Docker's Go encoder writes it (HTML-safe escapes, UTF-8 kept)."""
    log = json.dumps(text + "\n", ensure_ascii=False)
    log = log.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'{{"log":{log},"stream":"{stream}","time":"2026-11-27T02:20:49.123456789Z"}}'.encode()


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "",
        'quote " and \\ backslash',
        "tab\there",
        "<html> & more",
        "%s %d",
    ],
)
def test_docker_fast_path_matches_the_general_path(text: str) -> None:
    raw = go_json_line(text, "stderr")
    fast = fastpath.docker(raw, 42, ENCODER.template)
    assert fast is not None
    assert orjson.loads(fast) == general(raw, decode_docker, 42)


@pytest.mark.parametrize(
    "raw",
    [
        go_json_line("grüße"),  # not ASCII: the general path validates UTF-8
        go_json_line("ends with \\"),
        go_json_line("nul \x00"),
        b'{"log":"partial","stream":"stdout","time":"2026-11-27T02:20:49Z"}',
        b'{"log":"x\\n","stream":"stdin","time":"2026-11-27T02:20:49Z"}',
        b'{"log":"x\\n","stream":"stdout","attrs":{"a":"b"},"time":"2026-11-27T02:20:49Z"}',
        b'{"log":"x\\n","stream":"stdout","time":"2026-11-27T02:20:49+01:00"}',
        b'{"log":"x\\\\n","stream":"stdout","time":"2026-11-27T02:20:49Z"}',
        b'{"log":"cut',
    ],
)
def test_docker_fast_path_declines_what_needs_the_general_path(raw: bytes) -> None:
    assert fastpath.docker(raw, 0, ENCODER.template) is None


@pytest.mark.parametrize("text", ["plain", "", 'quote " and \\ backslash', "%s", "  spaced  "])
def test_cri_fast_path_matches_the_general_path(text: str) -> None:
    raw = f"2026-11-27T02:20:49.000000001Z stdout F {text}".encode()
    fast = fastpath.cri(raw, 7, ENCODER.template)
    assert fast is not None
    assert orjson.loads(fast) == general(raw, decode_cri, 7)


@pytest.mark.parametrize(
    "raw",
    [
        b"2026-11-27T02:20:49Z stdout P part",
        b"2026-11-27T02:20:49Z stdout F:x tagged",
        b"2026-11-27T02:20:49-07:00 stdout F zoned",
        b"2026-11-27T02:20:49Z stdout F nul\x00",
        b"2026-11-27T02:20:49Z stdout F ctrl \x01 char",
        "2026-11-27T02:20:49Z stdout F ünïcode".encode(),
        b"2026-11-27T02:20:49Z stdout F",
    ],
)
def test_cri_fast_path_declines_what_needs_the_general_path(raw: bytes) -> None:
    assert fastpath.cri(raw, 0, ENCODER.template) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60), st.integers(0, 2**40))
def test_any_ascii_text_gives_the_same_record_both_ways(text: str, offset: int) -> None:
    docker_raw = go_json_line(text)
    fast = fastpath.docker(docker_raw, offset, ENCODER.template)
    if fast is not None:
        assert orjson.loads(fast) == general(docker_raw, decode_docker, offset)
    if "\n" not in text and "\r" not in text:
        cri_raw = f"2026-11-27T02:20:49.5Z stderr F {text}".encode()
        fast = fastpath.cri(cri_raw, offset, ENCODER.template)
        if fast is not None:
            assert orjson.loads(fast) == general(cri_raw, decode_cri, offset)


def test_metadata_missing_tag_and_odd_paths_survive_the_template() -> None:
    encoder = Encoder('/var/log/100%/a"b.log', "f", {"kubernetes.pod.name": "50%-off"})
    encoder.update(encoder.meta, missing=True)
    raw = b"2026-11-27T02:20:49Z stdout F hello"
    record = orjson.loads(fastpath.cri(raw, 0, encoder.template) or b"")
    assert record["tags"] == ["metadata_missing"]
    assert record["log"]["file"]["path"] == '/var/log/100%/a"b.log'
    assert record["kubernetes"]["pod"]["name"] == "50%-off"


def test_the_text_classes_take_exactly_the_bytes_a_text_holds_as_they_are() -> None:
    """JSON text: every byte but `"`, `\\` and control bytes; CRI text: those and `"`, `\\`,
    and a tab (stack traces). Spelled as positive classes for speed: no byte may differ."""
    for byte in range(256):
        one = bytes([byte])
        json_plain = byte >= 0x20 and one not in (b'"', b"\\")
        assert (re.fullmatch(fastpath.UNESCAPED, one) is not None) == json_plain, byte
        cri_plain = byte >= 0x20 or byte == 0x09
        assert (re.fullmatch(fastpath.CRI_TEXT, one) is not None) == cri_plain, byte
