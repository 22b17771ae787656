"""A forward connection's acknowledgement and backpressure on their own
(collector.forward_delivery): a connection on a recording transport instead of a socket, a
sink that holds its batches until the test settles them, and the listener's loop turned by
hand, so every step is seen in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from prometheus_client import REGISTRY

from collector.config import parse
from collector.forward import Connection, ForwardServer
from collector.forward_delivery import IN_FLIGHT_BYTES
from collector.forward_framing import STEP_BYTES
from collector.sink import Done


class HeldSink:
    """Takes every batch offered and keeps its `done` until `settle`."""

    def __init__(self) -> None:
        self.held: list[tuple[int, Done]] = []

    def offer(
        self, key: bytes, values: list[bytes], sent: int, done: Done, topic: str | None = None
    ) -> int:
        self.held.append((len(values) - sent, done))
        return len(values)

    def settle(self, ok: bool = True, batches: int | None = None) -> None:
        count = len(self.held) if batches is None else batches
        settling, self.held = self.held[:count], self.held[count:]
        for _, done in settling:
            done(ok)

    def records(self) -> int:
        return sum(n for n, _ in self.held)

    def poll(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> int:
        return 0

    def close(self) -> None:
        return None


class Wire(asyncio.Transport):
    """What the connection writes, and whether it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.replies = msgpack.Unpacker(raw=False)
        self.reads = True
        self.shut = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.replies.feed(bytes(data))

    def pause_reading(self) -> None:
        self.reads = False

    def resume_reading(self) -> None:
        self.reads = True

    def close(self) -> None:
        self.shut = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def answers(self) -> list[Any]:
        return list(self.replies)


@pytest.fixture
def sink() -> HeldSink:
    return HeldSink()


@pytest.fixture
def server(sink: HeldSink) -> Iterator[ForwardServer]:
    config = parse(["--sink", "stdout", "--node-name", "node-a", "--memory-limit", "64MiB"])
    made = ForwardServer(config, sink, host="127.0.0.1", port=0)  # type: ignore[arg-type]
    yield made
    made.loop.close()


def connect(server: ForwardServer) -> tuple[Connection, Wire]:
    conn, wire = Connection(server), Wire()
    conn.connection_made(wire)
    return conn, wire


def turn(server: ForwardServer) -> None:
    """Runs what the sink's reports scheduled on the listener's loop."""
    server.loop.call_soon(server.loop.stop)
    server.loop.run_forever()


def chunk(name: str, events: int, size: int = 1000) -> bytes:
    return msgpack.packb(["app", [[1764210000, {"message": "x" * size}]] * events,
                          {"chunk": name}])  # fmt: skip


def errors(reason: str) -> float:
    value = REGISTRY.get_sample_value("logferry_collector_forward_errors_total", {"reason": reason})
    return value or 0.0


def test_a_chunk_is_answered_once_its_last_batch_is_delivered(
    server: ForwardServer, sink: HeldSink
) -> None:
    conn, wire = connect(server)
    events = 2 * STEP_BYTES // 1000 + 10
    conn.data_received(chunk("c1", events))
    assert len(sink.held) >= 3, "a message of over two steps goes in as many batches"
    assert sink.records() == events
    sink.settle(batches=len(sink.held) - 1)
    turn(server)
    assert wire.answers() == []
    sink.settle()
    turn(server)
    assert wire.answers() == [{"ack": "c1"}]
    assert conn.delivery.in_flight == 0
    assert server.pending == 0


def test_reading_pauses_past_the_records_in_flight_and_resumes_at_half(
    server: ForwardServer, sink: HeldSink
) -> None:
    conn, wire = connect(server)
    per_chunk = 1000
    chunks = 2 * IN_FLIGHT_BYTES // (per_chunk * 1000)
    conn.data_received(b"".join(chunk(f"c{n}", per_chunk) for n in range(chunks)))
    assert conn.paused
    assert not wire.reads
    assert conn.delivery.in_flight > IN_FLIGHT_BYTES
    assert sink.records() < chunks * per_chunk, "the rest waits unread"
    while True:
        before = len(sink.held)
        sink.settle(batches=1)
        turn(server)
        if len(sink.held) >= before:
            break
        assert conn.paused, "paused while its records in flight are above half the bound"
        assert conn.delivery.in_flight > IN_FLIGHT_BYTES // 2
    while sink.held:
        sink.settle()
        turn(server)
    assert [a["ack"] for a in wire.answers()] == [f"c{n}" for n in range(chunks)]
    assert not conn.paused
    assert wire.reads


def test_a_failed_delivery_cuts_the_connection_unanswered(
    server: ForwardServer, sink: HeldSink
) -> None:
    conn, wire = connect(server)
    before = errors("delivery")
    conn.data_received(chunk("c1", 10))
    sink.settle(ok=False)
    turn(server)
    assert wire.shut
    assert conn.closed
    assert wire.answers() == []
    assert errors("delivery") == before + 1


def test_what_a_connection_holds_is_charged_to_the_budget_and_given_back(
    server: ForwardServer, sink: HeldSink
) -> None:
    conn, _ = connect(server)
    data = chunk("c1", 100)
    conn.data_received(data[:500])
    assert server.budget.used == 500, "half a message"
    conn.data_received(data[500:])
    assert server.budget.used == conn.delivery.in_flight > 100 * 1000
    sink.settle()
    turn(server)
    assert server.budget.used == 0


def test_an_exhausted_budget_stops_reading_until_it_has_room(
    server: ForwardServer, sink: HeldSink
) -> None:
    conn, wire = connect(server)
    room = server.budget.room()
    server.budget.take(room)
    conn.data_received(chunk("c1", 10))
    assert conn.delivery.starved
    assert not wire.reads
    assert conn in server.hungry
    assert sink.held == [], "nothing handed on while the budget is exhausted"
    server.budget.give(room)
    server.feed()
    assert wire.reads
    sink.settle()
    turn(server)
    assert wire.answers() == [{"ack": "c1"}]
