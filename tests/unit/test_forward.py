"""The Fluentd forward listener: the real fluent-logger client, and a msgpack client for the
modes fluent-logger does not send, against a listener on 127.0.0.1 with a sink in the test."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from fluent import asynchandler, asyncsender, handler, sender
from prometheus_client import REGISTRY

from collector.budget import PAUSES
from collector.config import parse
from collector.enrich import Enricher
from collector.forward import ForwardServer
from collector.metrics import METRICS
from harness.k8s_api import KubeAPI, cid, namespace, pod
from harness.wait import until

REPO = Path(__file__).resolve().parents[2]
NODE = "node-a"


class FakeSink:
    """Keeps what it is sent; `hold` keeps the deliveries pending until `release`."""

    def __init__(self, hold: bool = False, ok: bool = True) -> None:
        self.hold = hold
        self.ok = ok
        self.cond = threading.Condition()
        self.batches: list[tuple[str, list[dict[str, Any]]]] = []
        self.topics: list[str | None] = []
        """Per batch, the topic it was sent to."""
        self.held: list[Callable[[bool], None]] = []

    def send(
        self,
        key: str,
        values: list[bytes],
        done: Callable[[bool], None],
        topic: str | None = None,
    ) -> None:
        with self.cond:
            self.keep(key, values, topic)
            if self.hold:
                self.held.append(done)
            self.cond.notify_all()
        if not self.hold:
            done(self.ok)

    def keep(self, key: str, values: list[bytes], topic: str | None) -> None:
        """Remembers the batch and its topic (under `cond`)."""
        self.batches.append((key, [orjson.loads(v) for v in values]))
        self.topics.append(topic)

    def offer(
        self,
        key: bytes,
        values: list[bytes],
        sent: int,
        done: Callable[[bool], None],
        topic: str | None = None,
    ) -> int:
        self.send(key.decode("utf-8", "surrogateescape"), values[sent:], done, topic)
        return len(values)

    def release(self) -> None:
        with self.cond:
            held, self.held = self.held, []
        for done in held:
            done(True)

    def records(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self.cond:
            self.cond.wait_for(lambda: self.count() >= count, timeout)
            got = [r for _, batch in self.batches for r in batch]
        assert len(got) >= count, got
        return got

    def count(self) -> int:
        return sum(len(batch) for _, batch in self.batches)

    def poll(self, timeout: float) -> None:
        time.sleep(timeout)

    def flush(self, timeout: float) -> int:
        return 0

    def close(self) -> None:
        pass


class Client:
    """A forward protocol client written from the spec, one msgpack object at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.replies = msgpack.Unpacker(raw=False)

    def send(self, *message: Any) -> None:
        self.sock.sendall(msgpack.packb(list(message)))

    def receive(self, timeout: float = 5.0) -> Any:
        self.sock.settimeout(timeout)
        while True:
            for reply in self.replies:
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the listener")
            self.replies.feed(data)

    def nothing_within(self, seconds: float) -> bool:
        try:
            self.receive(seconds)
        except TimeoutError:
            return True
        return False

    def cut_off(self, timeout: float = 5.0) -> bool:
        """True once the listener closed the connection (unread replies skipped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def event_time(seconds: int, nanos: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", seconds, nanos))


def packed(*entries: Any) -> bytes:
    return b"".join(msgpack.packb(list(e)) for e in entries)


def errors(reason: str) -> float:
    value = REGISTRY.get_sample_value("logferry_collector_forward_errors_total", {"reason": reason})
    return value or 0.0


@pytest.fixture
def listen() -> Iterator[Callable[..., tuple[ForwardServer, FakeSink]]]:
    """Starts listeners on an ephemeral port with the given flags; stops them after the test."""
    started: list[ForwardServer] = []

    def start(
        *flags: str, sink: FakeSink | None = None, enricher: Enricher | None = None
    ) -> tuple[ForwardServer, FakeSink]:
        config = parse(["--sink", "stdout", "--node-name", NODE, *flags])
        sink = sink or FakeSink()
        server = ForwardServer(config, sink, enricher, host="127.0.0.1", port=0)
        server.start()
        started.append(server)
        return server, sink

    yield start
    for server in started:
        server.stop(1.0)


# --- the real fluent-logger client ---------------------------------------------------------


def test_fluent_sender_events_become_contract_records(listen):
    server, sink = listen()
    with sender.FluentSender("app", port=server.port, nanosecond_precision=True) as s:
        assert s.emit("web", {"message": "GET /orders 200\n", "user": "alice", "latency": 12})
        assert s.emit_with_time("web", sender.EventTime(1764210000, 5), {"log": "from log"})
        assert s.emit_with_time("web", 1764210001, {"message": "whole seconds"})
    first, second, third = sink.records(3)
    assert first["message"] == "GET /orders 200"
    assert first["fluent"] == {"tag": "app.web", "record": {"user": "alice", "latency": 12}}
    assert first["input"] == {"type": "forward"}
    assert first["host"] == {"name": NODE}
    assert len(first["@timestamp"]) == len("2025-11-27T02:20:00.123456789Z")
    assert second["@timestamp"] == "2025-11-27T02:20:00.000000005Z"
    assert second["message"] == "from log"
    assert "record" not in second["fluent"]
    assert third["@timestamp"] == "2025-11-27T02:20:01Z"
    ids = {r["event"]["id"] for r in (first, second, third)}
    assert len(ids) == 3
    assert {key for key, _ in sink.batches} == {"app.web"}


def test_async_sender_delivers_every_event_in_order(listen):
    server, sink = listen()
    s = asyncsender.FluentSender("bulk", port=server.port, nanosecond_precision=True)
    for n in range(500):
        s.emit(None, {"message": f"line {n}", "n": n})
    s.close()
    records = sink.records(500)
    assert [r["fluent"]["record"]["n"] for r in records] == list(range(500))


@pytest.mark.parametrize("module", [handler, asynchandler])
def test_logging_handler(listen, module):
    server, sink = listen()
    log_handler = module.FluentHandler("py.app", port=server.port, nanosecond_precision=True)
    log_handler.setFormatter(handler.FluentRecordFormatter())
    logger = logging.getLogger(f"forward-test-{module.__name__}")
    logger.propagate = False
    logger.addHandler(log_handler)
    try:
        logger.warning("disk at %d%%", 91)
        logger.error({"message": "payment failed", "order": "A-17"})
    finally:
        logger.removeHandler(log_handler)
        log_handler.close()
    plain, structured = sink.records(2)
    assert plain["message"] == "disk at 91%"
    assert plain["fluent"]["tag"] == "py.app"
    assert plain["fluent"]["record"]["sys_name"] == logger.name
    assert structured["message"] == "payment failed"
    assert structured["fluent"]["record"]["order"] == "A-17"


# --- modes fluent-logger does not send -----------------------------------------------------


def test_forward_packed_and_compressed_modes(listen):
    server, sink = listen()
    client = Client(server.port)
    client.send("fwd", [[1764210000, {"message": "a"}], [event_time(1764210000, 7), {"log": "b"}]])
    client.send("packed", packed([1764210002, {"message": "c"}], [1764210003, {"message": "d"}]))
    # A forwarder appends one gzip member per flush: two members, one message.
    members = gzip.compress(packed([1764210004, {"message": "e"}])) + gzip.compress(
        packed([event_time(1764210005, 1), {"message": "f", "k": "v"}])
    )
    client.send("gz", members, {"compressed": "gzip", "size": 2})
    records = sink.records(6)
    assert [r["message"] for r in records] == list("abcdef")
    assert [key for key, _ in sink.batches] == ["fwd", "packed", "gz"]
    assert records[1]["@timestamp"] == "2025-11-27T02:20:00.000000007Z"
    assert records[5]["@timestamp"] == "2025-11-27T02:20:05.000000001Z"
    assert records[5]["fluent"]["record"] == {"k": "v"}
    client.close()


def test_chunk_is_acknowledged_only_once_the_sink_delivered_it(listen):
    server, sink = listen(sink=FakeSink(hold=True))
    client = Client(server.port)
    client.send(
        "acked", packed([1764210000, {"message": "x"}]), {"chunk": "Y2h1bmstMQ==", "size": 1}
    )
    client.send("acked", 1764210000, {"message": "y"}, {"chunk": "Y2h1bmstMg=="})
    sink.records(2)
    assert client.nothing_within(0.5)
    sink.release()
    assert {client.receive()["ack"], client.receive()["ack"]} == {"Y2h1bmstMQ==", "Y2h1bmstMg=="}
    client.close()


def test_a_chunk_sent_again_keeps_its_record_ids(listen):
    server, sink = listen()
    client = Client(server.port)
    entries = [[1764210000, {"message": "same"}], [1764210000, {"message": "same"}]]
    for _ in range(2):
        client.send("again", entries, {"chunk": "c2FtZQ=="})
        assert client.receive() == {"ack": "c2FtZQ=="}
    client.send("again", entries)
    first, second, third, fourth, *unchunked = sink.records(6)
    assert first["event"]["id"] == third["event"]["id"] != second["event"]["id"]
    assert second["event"]["id"] == fourth["event"]["id"]
    assert len({r["event"]["id"] for r in unchunked} | {first["event"]["id"]}) == 3
    client.close()


def test_a_connection_is_not_read_while_its_records_are_undelivered(listen):
    server, sink = listen(sink=FakeSink(hold=True))
    client = Client(server.port)
    big = {"message": "x" * 1000}
    for n in range(100):
        client.send("bulk", [[1764210000, big]] * 100, {"chunk": f"c{n}"})
    (conn,) = server.connections
    until(lambda: conn.paused)
    held = sink.count()
    assert held < 100 * 100
    time.sleep(0.3)
    assert sink.count() == held
    acks = 0
    while acks < 100:
        sink.release()
        with contextlib.suppress(TimeoutError):
            while client.receive(0.05):
                acks += 1
    assert sink.count() == 100 * 100
    client.close()


def test_failed_delivery_sends_no_ack_and_closes_so_the_client_resends(listen):
    server, _sink = listen(sink=FakeSink(ok=False))
    client = Client(server.port)
    before = errors("delivery")
    client.send("lost", [[1764210000, {"message": "x"}]], {"chunk": "bG9zdA=="})
    with pytest.raises(ConnectionError):
        client.receive()
    assert errors("delivery") == before + 1


def test_garbage_cuts_off_that_client_only(listen):
    server, sink = listen()
    good, bad = Client(server.port), Client(server.port)
    good.send("good", 1764210000, {"message": "before"})
    sink.records(1)
    before = errors("malformed")
    bad.sock.sendall(b"\xc1not msgpack at all")
    assert bad.cut_off()
    until(lambda: errors("malformed") == before + 1)
    for n in range(50):
        good.send("good", 1764210000, {"message": f"after {n}"})
    assert len(sink.records(51)) == 51
    good.close()


@pytest.mark.parametrize(
    "message",
    [
        {"not": "an array"},
        ["tag"],
        ["tag", b"\x92\xce", {}],
        ["tag", b"\x1f\x8b garbage", {"compressed": "gzip"}],
        ["tag", b"", {"compressed": "zstd"}],
        ["tag", 1764210000, {}, "not an option map"],
        ["tag", 1764210000, {}, {}, "one too many"],
    ],
)
def test_valid_msgpack_that_is_not_the_protocol_is_cut_off(listen, message):
    server, sink = listen()
    client = Client(server.port)
    before = errors("malformed")
    client.sock.sendall(msgpack.packb(message))
    assert client.cut_off()
    until(lambda: errors("malformed") == before + 1)
    assert sink.count() == 0


def test_text_that_is_not_utf8_and_odd_keys_still_ship(listen):
    server, sink = listen()
    client = Client(server.port)
    # Without the bin type (old clients), bytes go as str: here not UTF-8.
    old = ["old", 1764210000, {"message": b"caf\xe9", "n": 1}]
    client.sock.sendall(msgpack.packb(old, use_bin_type=False))
    odd = {"message": "x", 7: "int key", b"\xfe": "bin key", "raw": b"\xff", "t": event_time(1, 2)}
    client.send("odd", 1764210000, odd)
    first, second = sink.records(2)
    assert first["message"] == "caf\ufffd"
    assert first["fluent"] == {"tag": "old", "record": {"n": 1}}
    assert second["fluent"]["record"] == {
        "7": "int key",
        "\\xfe": "bin key",
        "raw": "\ufffd",
        "t": "1970-01-01T00:00:01.000000002Z",
    }
    client.close()


def test_frame_over_the_limit_is_cut_off(listen):
    server, sink = listen("--forward-max-frame-bytes", "4096")
    client = Client(server.port)
    before = errors("too_large")
    client.send("big", 1764210000, {"message": "x" * 100_000})
    assert client.cut_off()
    assert errors("too_large") == before + 1
    # Many small entries, not all sent yet: the unpacker holds no big buffer, and the
    # message is too large all the same.
    client = Client(server.port)
    many = msgpack.packb(["many", [[1764210000, {"m": n}] for n in range(2000)]])
    client.sock.sendall(many[:-1])
    assert client.cut_off()
    assert errors("too_large") == before + 2
    assert sink.count() == 0


def test_a_gzip_message_over_the_inflate_bound_is_skipped_and_its_chunk_answered(listen):
    """Read whole, it can be told apart from the next: counted, logged and acknowledged, so
    the client does not send it again for ever, and its connection goes on."""
    server, sink = listen("--forward-max-frame-bytes", "4096")
    bomb = gzip.compress(packed([1764210000, {"message": "z" * 200_000}]))
    assert len(bomb) < 4096
    before = errors("too_large")
    client = Client(server.port)
    client.send("bomb", bomb, {"compressed": "gzip", "chunk": "Ym9tYg=="})
    assert client.receive() == {"ack": "Ym9tYg=="}
    client.send("bomb", bomb, {"compressed": "gzip"})
    client.send("fine", [[1764210000, {"message": "after"}]], {"chunk": "ZmluZQ=="})
    assert client.receive() == {"ack": "ZmluZQ=="}
    assert errors("too_large") == before + 2
    assert [r["message"] for r in sink.records(1)] == ["after"]
    client.close()


def test_oversized_records_are_cut_and_tagged(listen):
    server, sink = listen("--max-record-bytes", "2000")
    client = Client(server.port)
    client.send("huge", 1764210000, {"message": "é" * 5000, "extra": "y" * 5000})
    (record,) = sink.records(1)
    assert record["tags"] == ["truncated"]
    assert set(record["message"]) == {"é"}
    assert len(orjson.dumps(record)) <= 2000
    client.close()


def test_the_record_cap_follows_the_producers_message_max_bytes(listen):
    """What librdkafka takes (key, value and envelope under message.max.bytes) bounds a
    record below max_record_bytes; a long tag is clipped in a cut record and as the key."""
    server, sink = listen("--kafka", "message.max.bytes=20000")
    client = Client(server.port)
    client.send("small", 1764210000, {"message": "x" * 19_990})
    tag = "t" * 50_000
    client.send(tag, 1764210000, {"message": "y" * 30_000})
    first, second = sink.records(2)
    assert first["tags"] == ["truncated"]
    assert second["tags"] == ["truncated"]
    assert second["fluent"]["tag"] == tag[: len(second["fluent"]["tag"])]
    assert second["message"].startswith("y")
    for (key, _), record in zip(sink.batches, (first, second), strict=True):
        assert len(key.encode()) + len(orjson.dumps(record)) <= 20_000 - 36
    assert sink.batches[0][0] == "small"
    client.close()


def test_connections_past_the_limit_are_refused(listen):
    server, sink = listen("--forward-max-connections", "2")
    first, second = Client(server.port), Client(server.port)
    first.send("a", 1764210000, {"message": "1"})
    second.send("a", 1764210000, {"message": "2"})
    sink.records(2)
    before = errors("refused")
    third = Client(server.port)
    assert third.cut_off()
    assert errors("refused") == before + 1
    first.close()
    until(lambda: len(server.connections) == 1)
    fourth = Client(server.port)
    fourth.send("a", 1764210000, {"message": "4"})
    assert len(sink.records(3)) == 3


def test_silent_connections_are_closed_after_the_idle_timeout(listen):
    server, sink = listen("--forward-idle-timeout", "0.3")
    client = Client(server.port)
    client.send("a", 1764210000, {"message": "1"})
    sink.records(1)
    started = time.monotonic()
    assert client.cut_off()
    assert 0.3 <= time.monotonic() - started < 3


def test_udp_heartbeat_is_answered(listen):
    server, _ = listen()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"\0", ("127.0.0.1", server.port))
        assert udp.recvfrom(16)[0] == b"\0"


# --- shared-key handshake ------------------------------------------------------------------


def ping(helo: Any, key: str, hostname: str = "client-host") -> tuple[list[Any], bytes, bytes]:
    assert helo[0] == "HELO"
    nonce = helo[1]["nonce"]
    salt = os.urandom(16)
    digest = hashlib.sha512(salt + hostname.encode() + nonce + key.encode()).hexdigest()
    return ["PING", hostname, salt, digest, "", ""], salt, nonce


def test_handshake_with_the_right_key(listen):
    server, sink = listen("--forward-shared-key", "s3cret")
    client = Client(server.port)
    message, salt, nonce = ping(client.receive(), "s3cret")
    client.send(*message)
    pong = client.receive()
    assert pong[:4] == ["PONG", True, "", NODE]
    assert pong[4] == hashlib.sha512(salt + NODE.encode() + nonce + b"s3cret").hexdigest()
    client.send("secure", 1764210000, {"message": "in"}, {"chunk": "c2Vj"})
    assert client.receive() == {"ack": "c2Vj"}
    assert sink.records(1)[0]["message"] == "in"


def test_handshake_with_a_wrong_key_or_none_is_cut_off(listen):
    server, sink = listen("--forward-shared-key", "s3cret")
    before = errors("auth")
    client = Client(server.port)
    message, _, _ = ping(client.receive(), "guess")
    client.send(*message)
    assert client.receive()[:3] == ["PONG", False, "shared_key mismatch"]
    assert client.cut_off()
    assert errors("auth") == before + 1
    skipper = Client(server.port)
    skipper.receive()
    skipper.send("sneaky", 1764210000, {"message": "no handshake"})
    assert skipper.cut_off()
    assert sink.count() == 0


# --- settings, pod metadata, the command line ------------------------------------------------


def test_the_object_for_other_fields_is_a_setting(listen):
    server, sink = listen("--forward-object", "app.fields")
    client = Client(server.port)
    client.send("t", 1764210000, {"message": "m", "a": 1})
    (record,) = sink.records(1)
    assert record["app"] == {"fields": {"a": 1}}
    assert record["fluent"] == {"tag": "t"}
    client.close()


def test_peer_pod_metadata_from_the_pod_cache(listen, tmp_path):
    with KubeAPI(bookmark_every=0.2) as api:
        api.add(namespace("shop", labels={"team": "checkout"}))
        api.up()
        enricher = Enricher(NODE, kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"))
        enricher.start()
        try:
            until(lambda: enricher.synced)
            server, sink = listen(enricher=enricher)
            client = Client(server.port)
            client.send("early", 1764210000, {"message": "before the pod is known"})
            (early,) = sink.records(1)
            assert "kubernetes" not in early
            web = pod("web-1", "shop", labels={"app": "web"}, ip="127.0.0.1")
            api.add(web)
            api.add(pod("host-a", "kube-system", ip="10.0.0.9"))
            api.add(pod("host-b", "kube-system", ip="10.0.0.9"))
            until(lambda: enricher.lookup({"container.id": cid(web)}))
            client.send("late", 1764210000, {"message": "from the pod"})
            _, late = sink.records(2)
            assert late["kubernetes"]["pod"]["name"] == "web-1"
            assert late["kubernetes"]["labels"] == {"app": "web"}
            assert late["kubernetes"]["namespace_labels"]["team"] == "checkout"
            assert late["container"]["id"] == cid(web)
            assert late["host"] == {"name": NODE}
            assert sink.batches[-1][0] == cid(web)
            assert server.peers is not None
            assert "10.0.0.9" not in server.peers.by_ip
            client.close()
        finally:
            enricher.stop()


def test_forwarded_records_are_routed_by_their_peer_pods_namespace(listen, tmp_path):
    """Without its pod, a peer's records have no namespace: the fallback topic, counted."""
    missing = METRICS.topic_fallbacks.labels("missing")
    with KubeAPI(bookmark_every=0.2) as api:
        api.add(namespace("shop"))
        api.up()
        enricher = Enricher(NODE, kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"))
        enricher.start()
        try:
            until(lambda: enricher.synced)
            server, sink = listen(
                "--topic", "logs.{kubernetes.namespace}", "--topic-fallback", "logs.unrouted",
                enricher=enricher,
            )  # fmt: skip
            client = Client(server.port)
            before = missing._value.get()
            client.send("early", 1764210000, {"message": "before the pod is known"})
            sink.records(1)
            assert sink.topics == ["logs.unrouted"]
            assert missing._value.get() - before == 1
            web = pod("web-1", "shop", ip="127.0.0.1")
            api.add(web)
            until(lambda: enricher.lookup({"container.id": cid(web)}))
            client.send("late", 1764210000, {"message": "from the pod"})
            sink.records(2)
            assert sink.topics == ["logs.unrouted", "logs.shop"]
            assert missing._value.get() - before == 1
            client.close()
        finally:
            enricher.stop()


def test_a_plain_topic_takes_every_forwarded_record(listen):
    server, sink = listen("--topic", "app-logs")
    client = Client(server.port)
    client.send("any", 1764210000, {"message": "hello"})
    sink.records(1)
    assert sink.topics == ["app-logs"]
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_command_line_listens_and_delivers_before_it_stops(tmp_path):
    port = free_port()
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "collector", "--sink", f"file:{out}",
            "--forward-port", str(port), "--forward-host", "127.0.0.1",
            "--docker-root", str(tmp_path / "docker"), "--log-root", str(tmp_path / "log"),
            "--state-dir", str(tmp_path / "state"), "--metrics-port", "0",
            "--kubernetes", "off", "--node-name", "cli-node",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        client = until(lambda: connect(port), timeout=20)
        client.send(
            "cli", [[1764210000, {"message": f"n{n}"}] for n in range(100)], {"chunk": "YQ=="}
        )
        assert client.receive(10) == {"ack": "YQ=="}
        with sender.FluentSender("cli.logger", port=port) as s:
            assert s.emit(None, {"message": "via fluent-logger"})
        until(lambda: out.exists() and len(out.read_bytes().splitlines()) == 101)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert records[-1]["message"] == "via fluent-logger"
    assert {r["host"]["name"] for r in records} == {"cli-node"}


def connect(port: int) -> Client | None:
    try:
        return Client(port)
    except ConnectionRefusedError:
        return None


def test_a_port_in_use_stops_the_command_line_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable, "-m", "collector", "--sink", "stdout", "--forward-port", str(port),
                "--forward-host", "127.0.0.1", "--docker-root", str(tmp_path / "docker"),
                "--log-root", str(tmp_path / "log"), "--state-dir", str(tmp_path / "state"),
                "--metrics-port", "0", "--kubernetes", "off",
            ],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr.decode()
        .strip()
        .splitlines()[-1]
        .startswith(f"collector: setting forward_port: cannot listen on {port}")
    )


# --- the memory budget -----------------------------------------------------------------------


class LeanSink(FakeSink):
    """Counts records without keeping them, so the test itself holds no memory."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def keep(self, key: str, values: list[bytes], topic: str | None) -> None:
        self.seen += len(values)


def gzip_entries(count: int, size: int) -> bytes:
    """A gzip member of `count` events of about `size` bytes, built a piece at a time."""
    out: list[bytes] = []
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    for start in range(0, count, 1000):
        events = (
            [1764210000, {"message": f"{n:08d}" + "x" * size}]
            for n in range(start, min(count, start + 1000))
        )
        out.append(compressor.compress(packed(*events)))
    out.append(compressor.flush())
    return b"".join(out)


def test_a_gzip_message_is_inflated_and_shipped_a_step_at_a_time(listen):
    """48 MiB inflated from one message: it never sits in memory at once (it used to, whole,
    and its entries and records besides)."""
    sink = LeanSink()
    server, _ = listen("--forward-max-frame-bytes", str(8 * 1024 * 1024), sink=sink)
    count = 48 * 1024
    body = gzip_entries(count, 1000)
    client = Client(server.port)
    tracemalloc.start()
    try:
        client.send("gz.big", body, {"compressed": "gzip", "chunk": "Z3o="})
        assert client.receive(60) == {"ack": "Z3o="}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sink.seen == count
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    client.close()


def test_reading_stops_while_the_memory_budget_is_exhausted(listen):
    """Four clients with 4 MB each; records wait undelivered: what the listener holds stays
    near --memory-limit (each connection alone would hold 8 MiB), then all is acknowledged."""
    sink = FakeSink(hold=True)
    limit = 2 * 1024 * 1024
    server, _ = listen("--memory-limit", str(limit), sink=sink)
    pauses = PAUSES.labels("forward")._value.get()
    clients = [Client(server.port) for _ in range(4)]
    big = {"message": "x" * 1000}

    def send_all(i: int, client: Client) -> None:
        # Its own socket object, so its own timeout beside the reads of the test's thread.
        with client.sock.dup() as sock:
            sock.settimeout(120)
            for n in range(40):
                sock.sendall(
                    msgpack.packb(["bulk", [[1764210000, big]] * 100, {"chunk": f"{i}-{n}"}])
                )

    senders = [
        threading.Thread(target=send_all, args=(i, c), daemon=True) for i, c in enumerate(clients)
    ]
    for t in senders:
        t.start()
    until(lambda: server.budget.exhausted() and all(not c.reading() for c in server.connections))
    assert PAUSES.labels("forward")._value.get() > pauses
    with sink.cond:
        held = sum(len(orjson.dumps(r)) for _, batch in sink.batches for r in batch)
    assert held <= limit + 4 * 1024 * 1024, held
    assert server.budget.used <= limit + 4 * 1024 * 1024
    acks: set[str] = set()
    deadline = time.monotonic() + 60
    while len(acks) < 160 and time.monotonic() < deadline:
        sink.release()
        for c in clients:
            with contextlib.suppress(TimeoutError):
                acks.add(c.receive(0.02)["ack"])
    assert len(acks) == 160
    assert sink.count() == 160 * 100
    for t in senders:
        t.join(10)
    for c in clients:
        c.close()
    until(lambda: server.budget.used == 0)


def test_half_received_messages_holding_the_budget_still_finish(listen):
    """Three clients each send part of a 1.5 MB message past a 1 MiB budget, then the rest:
    one is let finish, its records delivered free the budget, and so on."""
    limit = 1024 * 1024
    server, sink = listen("--memory-limit", str(limit))
    clients = [Client(server.port) for _ in range(3)]
    messages = [
        msgpack.packb(
            ["half", [[1764210000, {"message": f"{i}" + "y" * 1000}]] * 1500, {"chunk": f"h{i}"}]
        )
        for i in range(3)
    ]
    for c, m in zip(clients, messages, strict=True):
        c.sock.sendall(m[:700_000])
    until(lambda: server.budget.exhausted())

    def send_rest(client: Client, message: bytes) -> None:
        with client.sock.dup() as sock:
            sock.settimeout(120)
            sock.sendall(message[700_000:])

    senders = [
        threading.Thread(target=send_rest, args=(c, m), daemon=True)
        for c, m in zip(clients, messages, strict=True)
    ]
    for t in senders:
        t.start()
    assert sorted(c.receive(30)["ack"] for c in clients) == ["h0", "h1", "h2"]
    assert sink.count() == 3 * 1500
    for c in clients:
        c.close()


# --- events that are not events, clients that do not read ----------------------------------


def skipped(reason: str) -> float:
    name = "logferry_collector_forward_events_skipped_total"
    return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def test_an_entry_that_is_no_event_is_skipped_and_the_rest_of_its_chunk_ships(listen):
    """As Fluentd's skip_invalid_event: the chunk's good events ship and it is answered,
    the bad ones are counted and logged; cut off instead, the client would send the same
    chunk again for ever, and its good events would never ship."""
    server, sink = listen()
    client = Client(server.port)
    before = skipped("not_an_event"), skipped("unwritable"), errors("malformed")
    entries = [
        [1764210000, {"message": "first"}],
        "not an entry",
        [1764210000],
        [1764210000, "not a map"],
        # msgpack nests 1024 deep, JSON as orjson writes it 255
        [1764210000, {"message": "deep", "v": nested(600)}],
        [1764210000, {"message": "last"}],
    ]
    client.send("mixed", entries, {"chunk": "bWl4ZWQ="})
    assert client.receive() == {"ack": "bWl4ZWQ="}
    records = sink.records(2)
    assert [r["message"] for r in records] == ["first", "last"]
    assert records[1]["event"]["id"].endswith("-5"), "ids keep the entries' places"
    assert skipped("not_an_event") == before[0] + 3
    assert skipped("unwritable") == before[1] + 1
    assert errors("malformed") == before[2]
    # Message mode: the one event skipped, the connection kept.
    client.send("deep", 1764210000, {"v": nested(900)}, {"chunk": "ZGVlcA=="})
    assert client.receive() == {"ack": "ZGVlcA=="}
    client.send("after", 1764210000, {"message": "still served"})
    assert sink.records(3)[2]["message"] == "still served"
    assert skipped("unwritable") == before[1] + 2
    client.close()


@pytest.mark.parametrize(
    "stamp",
    [None, "yesterday", msgpack.ExtType(0, b"\0\0\0\1"), 2**62, float("nan")],
    ids=["nil", "text", "short-event-time", "out-of-range", "nan"],
)
def test_an_event_without_a_time_ships_at_the_time_it_came(listen, stamp):
    server, sink = listen()
    client = Client(server.port)
    client.send("untimed", [[stamp, {"message": "kept"}]], {"chunk": "dA=="})
    assert client.receive() == {"ack": "dA=="}
    (record,) = sink.records(1)
    assert record["message"] == "kept"
    assert record["tags"] == ["timestamp_invalid"]
    assert record["@timestamp"][:4] == time.strftime("%Y", time.gmtime())
    client.close()


def test_a_client_that_reads_no_acks_is_not_read_until_it_does(listen):
    """Acks a client leaves unread wait in the listener: past the transport's high-water
    mark the client is not read (its TCP window fills), counted; it is read again once it
    reads them, and nothing is lost."""
    server, sink = listen()
    client = Client(server.port)
    before = REGISTRY.get_sample_value("logferry_collector_forward_unread_ack_pauses_total") or 0
    (conn,) = until(lambda: list(server.connections))
    big_ids = [f"{n:04d}" + "i" * 256 * 1024 for n in range(40)]

    def send_all() -> None:
        with client.sock.dup() as sock:
            sock.settimeout(120)
            for n, chunk in enumerate(big_ids):
                sock.sendall(
                    msgpack.packb(["acks", [[1764210000, {"message": str(n)}]], {"chunk": chunk}])
                )

    sender_thread = threading.Thread(target=send_all, daemon=True)
    sender_thread.start()
    until(lambda: not conn.reading())
    assert (
        REGISTRY.get_sample_value("logferry_collector_forward_unread_ack_pauses_total") or 0
    ) > before
    assert conn.transport is not None
    # The high-water mark and the ack written when it was passed.
    assert conn.transport.get_write_buffer_size() <= 2 * (256 * 1024 + 64 * 1024)
    acks = [client.receive(30)["ack"] for _ in big_ids]
    assert acks == big_ids
    sender_thread.join(30)
    assert sink.count() == len(big_ids)
    client.close()


def test_a_connection_the_listener_does_not_read_is_not_idle(listen):
    """The idle timeout is a silent client's: one the listener stopped reading (budget,
    backpressure, unread acks) is sending all along, and closing it would lose what its
    socket holds."""
    server, sink = listen("--forward-idle-timeout", "1", sink=FakeSink(hold=True))
    client = Client(server.port)
    client.send("a", 1764210000, {"message": "1"})
    sink.records(1)
    (conn,) = list(server.connections)
    before = errors("idle")

    def sweep_long_after(starved: bool) -> None:
        conn.delivery.starved = starved
        conn.last = server.loop.time() - 100
        server.sweep()

    # in flight: never idle; then starved and not read: not idle either
    sink.release()
    until(lambda: conn.delivery.in_flight == 0)
    asyncio_call(server, lambda: sweep_long_after(True))
    assert not conn.closed
    asyncio_call(server, lambda: sweep_long_after(False))
    assert conn.closed
    assert errors("idle") == before + 1
    assert client.cut_off()


def asyncio_call(server: ForwardServer, call: Callable[[], None]) -> None:
    """Runs `call` on the listener's loop and waits for it."""
    done = threading.Event()

    def run() -> None:
        try:
            call()
        finally:
            done.set()

    server.loop.call_soon_threadsafe(run)
    assert done.wait(5)


def test_keys_and_text_that_are_not_utf8_stay_apart_and_are_tagged(listen):
    server, sink = listen()
    client = Client(server.port)
    record = {"message": b"r\xe9sum\xe9", b"caf\xe9": "e-acute", b"caf\xe8": "e-grave"}
    client.sock.sendall(msgpack.packb(["old", 1764210000, record], use_bin_type=False))
    (got,) = sink.records(1)
    assert got["message"] == "r\ufffdsum\ufffd"
    assert "invalid_utf8" in got["tags"]
    assert sorted(got["fluent"]["record"].values()) == ["e-acute", "e-grave"]
    client.close()


def test_keys_that_spell_alike_once_made_text_keep_every_value(listen):
    """msgpack keys 7 and "7" (or bytes \\xfe and the text "\\xfe") are one JSON key once
    spelled: the later one takes a numbered name rather than replace the first."""
    server, sink = listen()
    client = Client(server.port)
    record = {"message": "m", "7": "text key", 7: "int key", b"\xfe": "bin", "\\xfe": "text"}
    client.send("odd", 1764210000, record)
    (got,) = sink.records(1)
    assert got["fluent"]["record"] == {
        "7": "text key",
        "7#2": "int key",
        "\\xfe": "bin",
        "\\xfe#2": "text",
    }
    client.close()


def test_the_connection_let_finish_past_the_budget_stops_after_that_message(listen):
    """The one connection read on while the budget is exhausted, to finish the message it
    is in the middle of, read on after it as well, up to IN_FLIGHT_BYTES (8 MiB) past the
    budget: seen as 9.4 MB held for a 2 MiB budget under load."""
    limit = 1024 * 1024
    server, sink = listen("--memory-limit", str(limit), sink=FakeSink(hold=True))
    client = Client(server.port)
    first = msgpack.packb(["fin", [[1764210000, {"message": "f" * 1000}]] * 1500, {"chunk": "f"}])
    more = b"".join(
        msgpack.packb(["fin", [[1764210000, {"message": f"{n}" + "m" * 1000}]] * 100])
        for n in range(60)
    )
    client.sock.sendall(first[:700_000])
    until(lambda: server.budget.exhausted())

    def send_rest() -> None:
        with client.sock.dup() as sock:
            sock.settimeout(120)
            sock.sendall(first[700_000:] + more)

    sender_thread = threading.Thread(target=send_rest, daemon=True)
    sender_thread.start()
    (conn,) = list(server.connections)
    everything = 1500 + 60 * 100
    until(lambda: (sink.count() >= 1500 and not conn.reading()) or sink.count() == everything)
    with sink.cond:
        held = sum(len(orjson.dumps(r)) for _, batch in sink.batches for r in batch)
        sink.hold = False
    assert held <= limit + 2 * len(first), held
    until(lambda: sink.release() or sink.count() == everything, timeout=60)
    client.close()
