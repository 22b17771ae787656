"""The forward protocol's framing on its own (collector.forward_framing): bytes in, messages
out, without a socket. Replies the client would get are kept in a list."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson
import pytest
from prometheus_client import REGISTRY

from collector.config import parse
from collector.forward import ForwardServer
from collector.forward_framing import Framing, Message, ProtocolError, Refused, TooLarge
from collector.sink import MAX_KEY_BYTES

KEY = "s3cret"


class NoSink:
    """Framing hands nothing to the sink: it is never called."""

    def send(self, *args: Any) -> None:
        raise AssertionError("framing does not send")

    offer = poll = flush = close = send


@pytest.fixture
def server() -> Iterator[ForwardServer]:
    config = parse(["--sink", "stdout", "--node-name", "node-a", "--forward-shared-key", KEY,
                    "--forward-max-frame-bytes", "64KiB"])  # fmt: skip
    made = ForwardServer(config, NoSink(), host="127.0.0.1", port=0)  # type: ignore[arg-type]
    yield made
    made.loop.close()


def framing(server: ForwardServer, replies: list[Any], shake: bool = False) -> Framing:
    made = Framing(server, replies.append)
    if shake:
        made.hello()
    return made


def records(message: Message) -> list[dict[str, Any]]:
    assert message.batches is not None
    return [orjson.loads(v) for batch in message.batches for v in batch]


def errors(reason: str) -> float:
    value = REGISTRY.get_sample_value("logferry_collector_forward_errors_total", {"reason": reason})
    return value or 0.0


def test_a_message_comes_out_once_its_last_byte_is_in(server: ForwardServer) -> None:
    frames = framing(server, [])
    data = msgpack.packb(["app", [[1764210000, {"message": "one"}]], {"chunk": "c1"}])
    for byte in data[:-1]:
        frames.feed(bytes([byte]))
        assert frames.next_message() is None
    assert frames.receiving()
    assert frames.buffered() == len(data) - 1
    frames.feed(data[-1:])
    message = frames.next_message()
    assert message is not None
    assert (message.key, message.chunk, message.size) == ("app", "c1", len(data))
    assert [r["message"] for r in records(message)] == ["one"]
    assert not frames.receiving()


def test_every_mode_gives_the_same_records(server: ForwardServer) -> None:
    events = [[1764210000, {"message": "a"}], [1764210001, {"message": "b"}]]
    packed = b"".join(msgpack.packb(e) for e in events)
    modes = [
        [["app", events]],
        [["app", *events[0]], ["app", *events[1]]],
        [["app", packed]],
        [["app", gzip.compress(packed), {"compressed": "gzip"}]],
    ]
    seen = []
    for mode in modes:
        frames = framing(server, [])
        for frame in mode:
            frames.feed(msgpack.packb(frame))
        got = []
        while (message := frames.next_message()) is not None:
            got += [(r["@timestamp"], r["message"], r["fluent"]) for r in records(message)]
        seen.append(got)
    assert seen[0] == [
        ("2025-11-27T02:20:00Z", "a", {"tag": "app"}),
        ("2025-11-27T02:20:01Z", "b", {"tag": "app"}),
    ]
    assert all(got == seen[0] for got in seen)


def test_a_chunk_sent_again_keeps_its_ids_and_other_messages_get_new_ones(
    server: ForwardServer,
) -> None:
    frames = framing(server, [])
    chunked = msgpack.packb(["app", [[1764210000, {"message": "x"}]], {"chunk": "same"}])
    plain = msgpack.packb(["app", [[1764210000, {"message": "x"}]]])
    ids = []
    for data in (chunked, chunked, plain, plain):
        frames.feed(data)
        message = frames.next_message()
        assert message is not None
        ids.append(records(message)[0]["event"]["id"])
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3


def test_a_message_over_the_frame_limit_is_refused_before_it_is_whole(
    server: ForwardServer,
) -> None:
    frames = framing(server, [])
    data = msgpack.packb(["big", [[1764210000, {"message": "x" * 70_000}]]])
    frames.feed(data[:66_000])
    with pytest.raises(TooLarge):
        frames.next_message()


def test_a_gzip_message_inflating_past_the_bound_is_skipped_and_its_chunk_answered(
    server: ForwardServer,
) -> None:
    replies: list[Any] = []
    frames = framing(server, replies)
    entries = msgpack.packb([1764210000, {"message": "z" * 1000}]) * 600
    before = errors("too_large")
    frames.feed(msgpack.packb(["bomb", gzip.compress(entries), {"compressed": "gzip",
                                                                   "chunk": "b1"}]))  # fmt: skip
    frames.feed(msgpack.packb(["next", [[1764210000, {"message": "after"}]]]))
    message = frames.next_message()
    assert message is not None
    assert message.key == "next", "the skipped message yields nothing; the next one is read"
    assert replies == [{"ack": "b1"}]
    assert errors("too_large") == before + 1


def test_the_handshake_answers_the_right_key_and_refuses_a_wrong_one(
    server: ForwardServer,
) -> None:
    replies: list[Any] = []
    frames = framing(server, replies, shake=True)
    ((helo, options),) = replies
    nonce = options["nonce"]
    assert helo == "HELO"

    def ping(key: str) -> bytes:
        digest = hashlib.sha512(b"salt" + b"client" + nonce + key.encode()).hexdigest()
        return msgpack.packb(["PING", "client", b"salt", digest, "", ""])

    frames.feed(ping(KEY))
    assert frames.next_message() is None
    assert replies[1][:2] == ["PONG", True]
    proof = hashlib.sha512(b"salt" + b"node-a" + nonce + KEY.encode()).hexdigest()
    assert replies[1][3:] == ["node-a", proof]

    wrong = framing(server, replies, shake=True)
    nonce = replies[2][1]["nonce"]
    wrong.feed(ping("guess"))
    with pytest.raises(Refused):
        wrong.next_message()
    assert replies[3] == ["PONG", False, "shared_key mismatch", "", ""]


def test_before_the_handshake_a_message_is_not_taken(server: ForwardServer) -> None:
    frames = framing(server, [], shake=True)
    frames.feed(msgpack.packb(["app", [[1764210000, {"message": "sneaky"}]]]))
    with pytest.raises(ProtocolError, match="PING"):
        frames.next_message()


@pytest.mark.parametrize(
    ("frame", "said"),
    [
        (["app", [], {}, "extra"], "a message of 4 items"),
        (["app", [], "options"], "the option is not a map"),
        (["app", [], {"chunk": 7}], "the chunk option is not a string"),
        (["app", b"", {"compressed": "zstd"}], "unknown compression"),
        ([7, []], "starting with a tag"),
    ],
)
def test_messages_outside_the_protocol_are_refused_with_the_reason(
    server: ForwardServer, frame: list[Any], said: str
) -> None:
    frames = framing(server, [])
    frames.feed(msgpack.packb(frame))
    with pytest.raises(ProtocolError, match=said):
        frames.next_message()


def test_a_long_tag_keys_its_records_by_its_digest(server: ForwardServer) -> None:
    frames = framing(server, [])
    tag = "t" * (MAX_KEY_BYTES + 1)
    frames.feed(msgpack.packb([tag, [[1764210000, {"message": "x"}]]]))
    message = frames.next_message()
    assert message is not None
    assert message.key.startswith("tag-")
    assert len(message.key) <= MAX_KEY_BYTES
    assert records(message)[0]["fluent"]["tag"] == tag
