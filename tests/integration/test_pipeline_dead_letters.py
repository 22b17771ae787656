"""The dead-letter topic refusing letters, against the real Kafka: nothing committed until
every letter is acknowledged, and letters too large for the topic cut to fit."""

from __future__ import annotations

import base64
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import produce, record, start_pipeline, wait_for_count
from tests.integration.test_pipeline import dead_letters, stop


def committed(bootstrap: str, topic: str) -> int:
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": f"group-{topic}"})
    (offset,) = group.committed([TopicPartition(topic, 0)], timeout=10)
    group.close()
    return offset.offset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def create(bootstrap: str, topic: str, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=1, replication_factor=1, config=config)
    admin.create_topics([new])[topic].result(timeout=30)


def test_a_letter_larger_than_the_topic_takes_is_cut_to_fit_and_keeps_its_address(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    create(kafka_bootstrap, f"{topic}.dlq", **{"max.message.bytes": "3000"})
    records = [record(n, prefix) for n in range(200)]
    records[100]["log"]["offset"] = "not a number"
    records[100]["message"] = "é" * 20_000
    produce(kafka_bootstrap, topic, records)
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, 199, timeout=120) == 199
        (letter,) = dead_letters(kafka_bootstrap, topic, 1)
        until(lambda: committed(kafka_bootstrap, topic) == 200, 60, "all 200 committed")
    finally:
        stop(pipeline)
    assert letter["record_cut"] is True
    assert letter["record_bytes"] > 40_000
    assert records[100]["message"][:100] in letter["record"]
    assert len(orjson.dumps(letter)) < 3000
    assert (letter["topic"], letter["partition"], letter["offset"]) == (topic, 0, 100)
    assert "offset" in letter["error"]
    assert letter["index"] == f"{prefix}-payments-2026.11.27"


def test_a_missing_dead_letter_topic_stops_commits_until_it_exists(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    records = [record(n, prefix) for n in range(300)]
    records[10]["log"]["offset"] = "not a number"
    produce(kafka_bootstrap, topic, records)
    port = free_port()
    pipeline = start_pipeline(
        tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix,
        "--metrics-port", str(port),
        # The topic stays missing (no auto-creation for this producer), and the producer
        # says so after a second rather than after librdkafka's default 30 s.
        "--kafka", "allow.auto.create.topics=false",
        "--kafka", "topic.metadata.propagation.max.ms=1000",
    )  # fmt: skip
    try:
        assert wait_for_count(es, prefix, 299, timeout=120) == 299
        until(lambda: "dead-letter topic" in readyz(port)[1], 60, "/readyz names the dead letters")
        status, body = readyz(port)
        assert status == 503
        assert f"{topic}.dlq" in body, body
        assert "Unknown topic" in body, body
        # Indexed, but not past the record whose letter is not acknowledged.
        assert committed(kafka_bootstrap, topic) <= 10
        create(kafka_bootstrap, f"{topic}.dlq")
        (letter,) = dead_letters(kafka_bootstrap, topic, 1)
        until(lambda: committed(kafka_bootstrap, topic) == 300, 60, "all 300 committed")
        until(lambda: readyz(port)[0] == 200, 60, "ready again")
    finally:
        stop(pipeline)
    assert (letter["partition"], letter["offset"]) == (0, 10)
    assert "record_cut" not in letter
    assert orjson.loads(letter["record"])["event"]["id"] == f"{prefix}-10"


def test_a_topic_too_small_for_any_letter_holds_commits_until_its_limit_is_raised(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    # Smaller than a letter's reason, index and address alone: cutting cannot help.
    create(kafka_bootstrap, f"{topic}.dlq", **{"max.message.bytes": "100"})
    records = [record(n, prefix) for n in range(50)]
    records[20]["log"]["offset"] = "not a number"
    produce(kafka_bootstrap, topic, records)
    port = free_port()
    pipeline = start_pipeline(
        tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix, "--metrics-port", str(port)
    )
    try:
        assert wait_for_count(es, prefix, 49, timeout=120) == 49
        until(lambda: "takes no letter" in readyz(port)[1], 60, "/readyz says why")
        assert committed(kafka_bootstrap, topic) <= 20
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        raised = ConfigResource(
            ResourceType.TOPIC,
            f"{topic}.dlq",
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes",
                    "100000",
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        admin.incremental_alter_configs([raised])[raised].result(timeout=30)
        (letter,) = dead_letters(kafka_bootstrap, topic, 1)
        until(lambda: committed(kafka_bootstrap, topic) == 50, 60, "all 50 committed")
        until(lambda: readyz(port)[0] == 200, 60, "ready again")
    finally:
        stop(pipeline)
    assert "record_cut" not in letter
    assert orjson.loads(letter["record"])["event"]["id"] == f"{prefix}-20"


def test_letters_that_fit_one_by_one_are_not_cut_for_sharing_a_request(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    # Each letter is about 1.5 kB; ten of them in one record batch are five times the limit.
    create(kafka_bootstrap, f"{topic}.dlq", **{"max.message.bytes": "3000"})
    records = [record(n, prefix) for n in range(30)]
    for n in range(10, 20):
        records[n]["log"]["offset"] = "not a number"
        records[n]["message"] = "x" * 600
    produce(kafka_bootstrap, topic, records)
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, 20, timeout=120) == 20
        letters = dead_letters(kafka_bootstrap, topic, 10)
        until(lambda: committed(kafka_bootstrap, topic) == 30, 60, "all 30 committed")
    finally:
        stop(pipeline)
    assert sorted(letter["offset"] for letter in letters) == list(range(10, 20))
    assert [letter for letter in letters if "record_cut" in letter] == []


def test_a_letter_keeps_the_records_bytes_headers_and_time(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """Enough to send the record again as it was: text that is not UTF-8 was replaced in
    the letter, and its headers and time were dropped."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    raw = b'{"message":"caf\xe9"'
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, raw, b"k", headers=[("trace", b"t-1")], timestamp=1_795_000_000_123)
    assert producer.flush(30) == 0
    produce(kafka_bootstrap, topic, [record(1, prefix)])
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, 1, timeout=120) == 1
    finally:
        stop(pipeline)
    reader = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": f"read-{topic}",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    reader.subscribe([f"{topic}.dlq"])
    (message,) = reader.consume(1, timeout=30)
    reader.close()
    letter = orjson.loads(message.value())
    assert letter["record_encoding"] == "base64"
    assert base64.b64decode(letter["record"]) == raw
    assert letter["timestamp"] == 1_795_000_000_123
    assert message.headers() == [("trace", b"t-1")]
    assert message.key() == b"k"


def test_headers_larger_than_the_topic_takes_are_dropped_and_the_letter_delivered(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """Kafka counts a record's headers against the topic's limit: with the record cut to
    nothing, the letter was refused for ever and nothing after it committed."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    create(kafka_bootstrap, f"{topic}.dlq", **{"max.message.bytes": "3000"})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    poison = orjson.dumps({"message": "x", "log": {"offset": "not a number"}})
    headers = [("trace", b"t" * 2500), ("baggage", b"b" * 2500)]
    producer.produce(topic, poison, b"k", headers=headers)
    assert producer.flush(30) == 0
    produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(1, 20)])
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, 19, timeout=120) == 19
        (letter,) = dead_letters(kafka_bootstrap, topic, 1)
        until(lambda: committed(kafka_bootstrap, topic) == 20, 60, "all 20 committed")
    finally:
        stop(pipeline)
    assert letter["headers_dropped"] == 2
    assert (letter["topic"], letter["partition"], letter["offset"]) == (topic, 0, 0)
