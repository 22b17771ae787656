"""Letters cut to fit a dead-letter topic's limit: the record shortened and marked, the
address and the reason whole. (Delivery itself is tested against the real Kafka in
tests/integration/test_pipeline_dead_letters.py.)"""

from __future__ import annotations

import base64

import orjson
import pytest
from confluent_kafka import Message

from pipeline.deadletter import Letter

REASON = "mapper_parsing_exception: failed to parse field [log.offset] of type [long]"


def letter(value: bytes, key: bytes | None = b"container-7") -> Letter:
    message = Message(topic="logs", partition=3, offset=123_456, key=key, value=value)
    return Letter(message, "logferry-shop-2026.11.27", REASON)


def test_a_letter_within_the_limit_is_the_whole_record() -> None:
    sent = letter(b'{"message":"x"}')
    assert orjson.loads(sent.body()) == {
        "error": REASON,
        "index": "logferry-shop-2026.11.27",
        "topic": "logs",
        "partition": 3,
        "offset": 123_456,
        "record": '{"message":"x"}',
    }


@pytest.mark.parametrize(
    "text",
    [
        "a" * 50_000,
        "é" * 30_000,
        '"\\' * 20_000,
        "\x01" * 20_000,
        "€" * 10_000 + "a",
    ],
)
@pytest.mark.parametrize("limit", [400, 1000, 20_000])
def test_a_letter_cut_to_a_limit_fits_it_and_keeps_everything_but_the_records_end(
    text: str, limit: int
) -> None:
    value = text.encode()
    sent = letter(value)
    sent.limit = limit
    body = sent.body()
    assert len(body) <= limit
    cut = orjson.loads(body)
    assert cut["record_cut"] is True
    assert cut["record_bytes"] == len(value)
    assert text.startswith(cut["record"])
    assert len(cut["record"]) > 0
    assert (cut["error"], cut["index"], cut["topic"], cut["partition"], cut["offset"]) == (
        REASON,
        "logferry-shop-2026.11.27",
        "logs",
        3,
        123_456,
    )
    assert sent.key == b"container-7"


def test_shrinking_halves_until_only_the_address_is_left() -> None:
    sent = letter(b"x" * 10_000)
    sizes = []
    while sent.shrink(len(sent.body())):
        sizes.append(len(sent.body()))
    assert sizes == sorted(sizes, reverse=True)
    assert orjson.loads(sent.body())["record"] == ""
    assert len(sent.body()) > sent.limit  # type: ignore[operator]


@pytest.mark.parametrize("limit", [200, 401, 1003, 4002])
def test_a_record_kept_as_base64_is_cut_to_bytes_it_still_decodes_to(limit: int) -> None:
    value = bytes(range(256)) * 40
    sent = letter(value)
    sent.limit = limit
    cut = orjson.loads(sent.body())
    assert cut["record_encoding"] == "base64"
    assert len(cut["record"]) % 4 == 0
    assert value.startswith(base64.b64decode(cut["record"], validate=True))


def test_headers_too_large_for_the_topic_are_dropped_once_the_record_is_cut_to_nothing() -> None:
    """The topic's limit counts the headers too: the record cut to nothing, the letter was
    refused for ever and nothing more was committed."""
    headers = [("trace", b"t" * 3000), ("span", b"s" * 3000)]
    message = Message(
        topic="logs", partition=3, offset=9, key=b"k", value=b"x" * 5000, headers=headers
    )
    sent = Letter(message, "logferry-shop-2026.11.27", REASON)

    def size() -> int:
        return len(sent.body()) + sum(len(k) + len(v or b"") for k, v in sent.headers)

    tries = 0
    while size() > 3000:
        # As DeadLetters.deliver: the letter's own size, which is all it can cut.
        assert sent.shrink(len(sent.body()))
        tries += 1
        assert tries < 40
    body = orjson.loads(sent.body())
    assert sent.headers == []
    assert body["headers_dropped"] == 2
    assert body["offset"] == 9
    assert body["record_bytes"] == 5000
    assert body["record"] == "x" * len(body["record"])
