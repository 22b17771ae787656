"""What the forward listener holds while it reads a message: about the message's size on the
wire, whatever its mode and however many entries it carries, so --memory-limit, which is
charged that size, is what the process uses."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import msgpack
import pytest

from collector.config import parse
from collector.forward import ForwardServer
from tests.unit.test_forward import Client, LeanSink


@pytest.fixture
def lean() -> Iterator[tuple[ForwardServer, LeanSink]]:
    """A listener under a 1 MiB --memory-limit whose sink counts records and keeps none."""
    config = parse(["--sink", "stdout", "--node-name", "node-a", "--memory-limit", "1MiB"])
    sink = LeanSink()
    server = ForwardServer(config, sink, host="127.0.0.1", port=0)
    server.start()
    yield server, sink
    server.stop(1.0)


def forward_mode(tag: str, count: int, chunk: str) -> bytes:
    """`[tag, [[0, {}] * count], {"chunk": chunk}]`: 3 bytes an entry, the smallest event."""
    packer = msgpack.Packer()
    return b"".join(
        [
            packer.pack_array_header(3),
            packer.pack(tag),
            packer.pack_array_header(count),
            packer.pack([0, {}]) * count,
            packer.pack({"chunk": chunk}),
        ]
    )


def test_a_forward_mode_message_of_tiny_entries_holds_about_its_wire_size(lean):
    """A million entries in one Forward-mode message (3 MB, well under the 16 MiB frame
    limit): every record ships and the chunk is answered, and the listener never holds more
    than a few times the message's bytes. Unpacked whole, its entries took some 50 times
    that, unseen by the budget, which is charged the wire size."""
    server, sink = lean
    count = 1_000_000
    data = forward_mode("tiny", count, "dGlueQ==")
    size = len(data)
    client = Client(server.port)
    tracemalloc.start()
    try:
        client.sock.sendall(data)
        assert client.receive(120) == {"ack": "dGlueQ=="}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    client.close()
    assert sink.seen == count
    assert peak < 4 * size, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB message"
