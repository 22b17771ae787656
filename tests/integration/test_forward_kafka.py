"""The forward listener against the real Kafka: fluent-logger and a msgpack client in, records
read back from the topic; a chunk's ack only once the broker acknowledged its records."""

from __future__ import annotations

import gzip
import logging
import random
import signal
import string
import subprocess
import time
from pathlib import Path

import msgpack
import orjson
from fluent import asyncsender, handler, sender

from collector.config import parse
from collector.forward import ForwardServer
from collector.sink import KafkaSink
from harness.collector_run import consume, new_topic, start_collector
from harness.wait import until
from tests.unit.test_forward import Client, event_time, free_port, packed


def start(tmp_path: Path, bootstrap: str, topic: str, port: int) -> subprocess.Popen[bytes]:
    process = start_collector(
        tmp_path,
        bootstrap,
        topic,
        "--forward-port", str(port), "--forward-host", "127.0.0.1",
        "--kubernetes", "off", "--node-name", "forward-node",
    )  # fmt: skip
    until(lambda: connectable(port), timeout=30)
    return process


def connectable(port: int) -> bool:
    try:
        Client(port).close()
    except ConnectionRefusedError:
        return False
    return True


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def test_fluent_logger_and_every_mode_reach_kafka(tmp_path, kafka_bootstrap):
    topic = new_topic(kafka_bootstrap)
    port = free_port()
    process = start(tmp_path, kafka_bootstrap, topic, port)
    try:
        with sender.FluentSender("app", port=port, nanosecond_precision=True) as s:
            for n in range(100):
                assert s.emit("sync", {"message": f"sync {n}", "n": n})
        a = asyncsender.FluentSender("app", port=port, nanosecond_precision=True)
        for n in range(100):
            a.emit("async", {"log": f"async {n}\n", "n": n})
        a.close()
        log_handler = handler.FluentHandler("app.logging", port=port)
        log_handler.setFormatter(handler.FluentRecordFormatter())
        logger = logging.getLogger("forward-kafka")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(log_handler)
        for n in range(100):
            logger.info({"message": f"logging {n}", "n": n})
        logger.removeHandler(log_handler)
        log_handler.close()

        client = Client(port)
        client.send(
            "mode.forward", [[1764210000, {"message": "forward", "n": 0}]], {"chunk": "Zg=="}
        )
        client.send(
            "mode.packed", packed([event_time(1764210000, 9), {"message": "packed", "n": 0}])
        )
        gz = gzip.compress(packed([1764210000, {"message": "gz", "n": 0}]))
        client.send("mode.gzip", gz + gz, {"compressed": "gzip", "chunk": "Zw=="})
        assert {client.receive(30)["ack"], client.receive(30)["ack"]} == {"Zg==", "Zw=="}
        client.close()
        records = list(consume(kafka_bootstrap, topic, 304, timeout=120))
    finally:
        stop(process)

    assert len(records) == 304
    by_tag: dict[str, list[dict]] = {}
    for r in records:
        by_tag.setdefault(r["fluent"]["tag"], []).append(r)
    for tag, prefix in (("app.sync", "sync"), ("app.async", "async"), ("app.logging", "logging")):
        got = sorted(by_tag[tag], key=lambda r: r["fluent"]["record"]["n"])
        assert [r["message"] for r in got] == [f"{prefix} {n}" for n in range(100)]
    assert {r["input"]["type"] for r in records} == {"forward"}
    assert {r["host"]["name"] for r in records} == {"forward-node"}
    assert len({r["event"]["id"] for r in records}) == 304
    assert by_tag["mode.packed"][0]["@timestamp"] == "2025-11-27T02:20:00.000000009Z"
    assert [r["message"] for r in by_tag["mode.gzip"]] == ["gz", "gz"]
    assert by_tag["app.logging"][0]["fluent"]["record"]["sys_name"] == "forward-kafka"


def test_ack_waits_for_the_broker(kafka_bootstrap):
    """Delivery reports reach the listener only through the sink's poll: unpolled, no ack."""
    topic = new_topic(kafka_bootstrap)
    config = parse(["--sink", "kafka", "--bootstrap-servers", kafka_bootstrap, "--topic", topic])
    sink = KafkaSink(config.topic, config.kafka)
    server = ForwardServer(config, sink, host="127.0.0.1", port=0)
    server.start()
    try:
        client = Client(server.port)
        entries = packed(*([1764210000, {"message": f"m{n}"}] for n in range(1000)))
        client.send("held", entries, {"chunk": "aGVsZA==", "size": 1000})
        # Read back first: the records are on the broker, and the report is not served yet.
        # (Waiting on len(producer) raced: it counts delivery reports not yet polled.)
        records = list(consume(kafka_bootstrap, topic, 1000, timeout=60))
        assert sorted(r["message"] for r in records) == sorted(f"m{n}" for n in range(1000))
        assert client.nothing_within(1.0)
        deadline = time.monotonic() + 30
        while server.pending and time.monotonic() < deadline:
            sink.poll(0.05)
        assert client.receive(10) == {"ack": "aGVsZA=="}
        client.close()
    finally:
        server.stop(5)
        sink.close()


def test_garbage_client_is_cut_off_while_another_keeps_sending(tmp_path, kafka_bootstrap):
    topic = new_topic(kafka_bootstrap)
    port = free_port()
    process = start(tmp_path, kafka_bootstrap, topic, port)
    try:
        good = Client(port)
        for n in range(20):
            bad = Client(port)
            bad.sock.sendall(msgpack.packb(["bad", 1764210000, {"message": "ok"}]) + b"\xc1\xc1")
            chunk = f"chunk-{n}"
            good.send(
                "good", [[1764210000, {"message": f"{n}-{i}"}] for i in range(50)], {"chunk": chunk}
            )
            assert good.receive(30) == {"ack": chunk}
            assert bad.cut_off()
        records = list(consume(kafka_bootstrap, topic, 1020, timeout=120))
    finally:
        stop(process)
    good_ones = [r for r in records if r["fluent"]["tag"] == "good"]
    assert sorted(r["message"] for r in good_ones) == sorted(
        f"{n}-{i}" for n in range(20) for i in range(50)
    )
    # The well-formed message before each client's garbage was taken: 20 of them.
    assert len(records) - len(good_ones) == 20


def test_a_full_producer_queue_holds_the_chunk_until_polls_make_room(kafka_bootstrap):
    """The listener never polls the producer itself: only the main loop's polls make room."""
    topic = new_topic(kafka_bootstrap)
    config = parse(
        [
            "--sink", "kafka", "--bootstrap-servers", kafka_bootstrap, "--topic", topic,
            "--kafka", "queue.buffering.max.messages=100", "--kafka", "linger.ms=5",
        ]
    )  # fmt: skip
    sink = KafkaSink(config.topic, config.kafka)
    server = ForwardServer(config, sink, host="127.0.0.1", port=0)
    server.start()
    try:
        client = Client(server.port)
        entries = packed(*([1764210000, {"message": f"m{n}"}] for n in range(1000)))
        client.send("full", entries, {"chunk": "ZnVsbA=="})
        until(lambda: server.handoff.waiting)
        assert client.nothing_within(0.5)
        assert server.handoff.waiting
        deadline = time.monotonic() + 60
        while server.pending and time.monotonic() < deadline:
            sink.poll(0.05)
        assert client.receive(10) == {"ack": "ZnVsbA=="}
        records = list(consume(kafka_bootstrap, topic, 1000, timeout=60))
        assert [r["message"] for r in records] == [f"m{n}" for n in range(1000)]
        client.close()
    finally:
        server.stop(5)
        sink.close()


def test_a_record_over_what_the_producer_takes_is_cut_and_acked_not_refused(
    tmp_path, kafka_bootstrap
):
    """librdkafka refuses a message over message.max.bytes (1,000,000 by default): a record
    between that and max_record_bytes (1 MiB) used to be refused, the connection cut, and
    the client sent the same chunk again forever. It is cut and tagged like a file record."""
    rng = random.Random(11)
    # Text that does not compress, as the broker's limit applies after compression.
    text = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(1_020_000))
    topic = new_topic(kafka_bootstrap, partitions=1)
    port = free_port()
    process = start(tmp_path, kafka_bootstrap, topic, port)
    try:
        client = Client(port)
        entries = [[1764210000, {"message": text, "n": 0}], [1764210001, {"message": "after"}]]
        client.send("big.chunk", entries, {"chunk": "YmlnMQ=="})
        assert client.receive(60) == {"ack": "YmlnMQ=="}
        client.close()
        with sender.FluentSender("big", port=port) as s:
            assert s.emit("logger", {"message": text[::-1]})
            assert s.emit("logger", {"message": "last"})
        records = list(consume(kafka_bootstrap, topic, 4, timeout=120))
    finally:
        stop(process)
    assert [r["message"][:5] for r in records] == [text[:5], "after", text[::-1][:5], "last"]
    for record, whole in ((records[0], text), (records[2], text[::-1])):
        assert record["tags"] == ["truncated"]
        assert whole.startswith(record["message"])
        assert 900_000 < len(orjson.dumps(record)) <= 1_000_000
    assert "truncated" not in str(records[1]) + str(records[3])
    assert "cut off" not in (tmp_path / "collector.log").read_text()
