"""The pipeline process against the real Kafka and Elasticsearch: nothing lost, nothing doubled."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import (
    ids,
    produce,
    record,
    start_pipeline,
    wait_for_count,
)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0


def dead_letters(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    """What the pipeline wrote to the topic's dead-letter topic: `expected` letters, or what
    came within 30 s."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([f"{topic}.dlq"])
    letters: list[Message] = []
    deadline = time.monotonic() + 30
    while len(letters) < expected and time.monotonic() < deadline:
        letters += consumer.consume(10, timeout=1)
    consumer.close()
    return [orjson.loads(m.value()) for m in letters]


def test_records_that_are_not_json_objects_are_dead_lettered_and_committed(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(600)])
    # Last in their partitions, so only they can carry the offsets to commit.
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, value in ((0, b"not json"), (1, b"[1, 2]"), (0, None)):
        producer.produce(topic, value, partition=partition)
    assert producer.flush(30) == 0
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, 600, timeout=120) == 600
    finally:
        stop(pipeline)
    reasons = {
        letter["record"]: letter["error"] for letter in dead_letters(kafka_bootstrap, topic, 3)
    }
    assert reasons.keys() == {"not json", "[1, 2]", ""}
    assert reasons["not json"].startswith("not JSON")
    assert reasons["[1, 2]"] == "not a JSON object"
    assert reasons[""].startswith("not JSON")
    # Every record, the dead-lettered ones too, is committed: a restart reads none again.
    group = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"group-{topic}"})
    committed = group.committed([TopicPartition(topic, p) for p in range(2)], timeout=10)
    group.close()
    assert sum(p.offset for p in committed) == 603


def test_dotted_label_keys_beside_plain_ones_do_not_conflict(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap)
    first = record(0, prefix)
    first["kubernetes"]["labels"] = {"app": "cart"}
    second = record(3, prefix)
    second["kubernetes"]["labels"] = {"app.kubernetes.io/name": "cart", "app.kubernetes.io": "x"}
    produce(kafka_bootstrap, topic, [first, second])
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, 2, timeout=60) == 2
    finally:
        stop(pipeline)
    hits = es.search(
        index=f"{prefix}-*", query={"term": {"kubernetes.labels.app.kubernetes.io/name": "cart"}}
    )["hits"]["hits"]
    assert [h["_id"] for h in hits] == [f"{prefix}-3"]
    assert (
        es.count(index=f"{prefix}-*", query={"term": {"kubernetes.labels.app": "cart"}})["count"]
        == 1
    )


def test_elasticsearch_down_for_30_s_mid_stream_loses_nothing(
    tmp_path: Path,
    kafka_bootstrap: str,
    elasticsearch_url: str,
    es: Elasticsearch,
    prefix: str,
    elasticsearch_outage: Callable[[float], None],
) -> None:
    topic = new_topic(kafka_bootstrap)
    total = 40_000
    produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(total // 2)])
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        wait_for_count(es, prefix, 1, timeout=60)
        writer = threading.Thread(
            target=produce,
            args=(kafka_bootstrap, topic, [record(n, prefix) for n in range(total // 2, total)]),
        )
        writer.start()
        elasticsearch_outage(30)
        writer.join()
        assert wait_for_count(es, prefix, total, timeout=180) == total
    finally:
        stop(pipeline)
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(total))


def test_consumers_joining_and_one_killed_lose_and_double_nothing(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=6)
    total = 60_000
    rng = random.Random(3)
    # Small bulks and a short session, so rebalances happen mid-batch and a killed member's
    # partitions move on within seconds.
    flags = ("--bulk-bytes", "300000", "--kafka", "session.timeout.ms=6000")

    def pipeline() -> subprocess.Popen[bytes]:
        return start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix, *flags)

    def write(first: int, last: int) -> None:
        produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(first, last)])

    members = [pipeline(), pipeline()]
    try:
        write(0, total // 3)
        time.sleep(rng.uniform(0.5, 2))
        members.append(pipeline())
        write(total // 3, 2 * total // 3)
        time.sleep(rng.uniform(0.5, 2))
        members[0].kill()
        members[0].wait()
        write(2 * total // 3, total)
        members[0] = pipeline()
        assert wait_for_count(es, prefix, total, timeout=180) == total
    finally:
        for member in members:
            stop(member)
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(total))


def test_data_stream_mode_writes_backing_indices_and_refuses_replays(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch
) -> None:
    name = f"logferry-ds-t{uuid.uuid4().hex[:8]}"
    topic = new_topic(kafka_bootstrap)
    records = [record(n, name) for n in range(300)]
    produce(kafka_bootstrap, topic, records + records[:100])
    pipeline = start_pipeline(
        tmp_path, kafka_bootstrap, elasticsearch_url, topic, name,
        "--index", name + "-{kubernetes.namespace}",
    )  # fmt: skip
    try:
        assert wait_for_count(es, name, 300, timeout=60) == 300
    finally:
        stop(pipeline)
    backing = es.cat.indices(index=f".ds-{name}-*", format="json")
    assert sorted(i["index"].split("-2026")[0] for i in backing) == [
        f".ds-{name}-{ns}" for ns in ("payments", "shop", "web")
    ]
