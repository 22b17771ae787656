"""The Kafka sink picks each batch's partition itself; it must be the one librdkafka would."""

from __future__ import annotations

import time
import uuid
import zlib

from confluent_kafka import Consumer, Producer

from collector.sink import KafkaSink
from harness.collector_run import new_topic

KEYS = [f"/var/log/pods/ns_pod-{n}_uid/app" for n in range(40)]


def partitions_by_key(bootstrap: str, topic: str, expected: int) -> dict[bytes, set[int]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: dict[bytes, set[int]] = {}
    count = 0
    deadline = time.monotonic() + 60
    try:
        while count < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                seen.setdefault(message.key(), set()).add(message.partition())
                count += 1
    finally:
        consumer.close()
    assert count == expected
    return seen


def test_a_containers_records_go_where_librdkafkas_partitioner_sends_its_key(
    kafka_bootstrap: str,
) -> None:
    ours, theirs = new_topic(kafka_bootstrap, partitions=7), new_topic(kafka_bootstrap, 7)
    sink = KafkaSink(ours, {"bootstrap.servers": kafka_bootstrap})
    delivered: list[bool] = []
    for _ in range(3):
        sink.poll(0.1)
        for key in KEYS:
            sink.send(key, [b'{"n":1}', b'{"n":2}'], delivered.append)
    assert sink.flush(30) == 0
    sink.poll(0)
    assert delivered == [True] * len(KEYS) * 3

    plain = Producer({"bootstrap.servers": kafka_bootstrap})
    for key in KEYS:
        plain.produce(theirs, b"{}", key.encode())
    assert plain.flush(30) == 0

    got = partitions_by_key(kafka_bootstrap, ours, len(KEYS) * 6)
    want = partitions_by_key(kafka_bootstrap, theirs, len(KEYS))
    assert all(len(p) == 1 for p in got.values()), "a container's records were spread"
    assert got == want
    assert len(set().union(*got.values())) > 1


def test_a_keys_batches_are_reported_in_the_order_sent_when_its_partition_changes(
    kafka_bootstrap: str,
) -> None:
    """A topic given more partitions sends a key's next batch elsewhere, where it may be
    acknowledged before the batch sent ahead of it. The agent moves a file's checkpoint on
    each report, so the reports must come in the order the batches were sent: else the
    checkpoint passes records that may still fail."""
    topic = new_topic(kafka_bootstrap, partitions=2)
    key = next(k for k in KEYS if zlib.crc32(k.encode()) % 2 == 1)
    sink = KafkaSink(topic, {"bootstrap.servers": kafka_bootstrap})
    deadline = time.monotonic() + 30
    while sink.partitions.get(topic) != 2 and time.monotonic() < deadline:
        sink.count_partitions()
    assert sink.partitions == {topic: 2}
    # The sink as it was before the topic's second partition: the key's first batch goes
    # to partition 0, behind many records; the next one to partition 1, alone.
    sink.partitions[topic] = 1
    reports: list[tuple[str, bool]] = []
    backlog = [b'{"n":%d,"pad":"%s"}' % (n, b"x" * 200) for n in range(100_000)]
    sink.send(key, backlog, lambda ok: reports.append(("first", ok)))
    sink.partitions[topic] = 2
    sink.send(key, [b'{"n":"last"}'], lambda ok: reports.append(("second", ok)))
    assert sink.flush(60) == 0
    sink.poll(0)
    assert reports == [("first", True), ("second", True)]


def test_a_keys_batches_sent_to_two_topics_land_in_each_and_are_reported_in_order(
    kafka_bootstrap: str,
) -> None:
    """A container's topic changes when its pod's metadata arrives (a --topic template): the
    batch sent to the second topic may be acknowledged before the backlog sent to the first,
    and the checkpoint must still not pass the backlog before it is acknowledged."""
    slow, fast = new_topic(kafka_bootstrap, partitions=3), new_topic(kafka_bootstrap, 5)
    sink = KafkaSink("unused", {"bootstrap.servers": kafka_bootstrap})
    # Both topics sent to before: their partition counts are learnt in one look.
    sink.partitions.update({slow: 0, fast: 0})
    deadline = time.monotonic() + 30
    while sink.partitions != {slow: 3, fast: 5} and time.monotonic() < deadline:
        sink.count_partitions()
    assert sink.partitions == {slow: 3, fast: 5}
    reports: list[tuple[str, bool]] = []
    backlog = [b'{"n":%d,"pad":"%s"}' % (n, b"x" * 200) for n in range(50_000)]
    sink.send(KEYS[0], backlog, lambda ok: reports.append(("backlog", ok)), slow)
    sink.send(KEYS[0], [b'{"n":"next"}'], lambda ok: reports.append(("next", ok)), fast)
    assert sink.flush(60) == 0
    sink.poll(0)
    assert reports == [("backlog", True), ("next", True)]
    assert sum(len(p) for p in partitions_by_key(kafka_bootstrap, slow, 50_000).values()) == 1
    assert partitions_by_key(kafka_bootstrap, fast, 1) == {
        KEYS[0].encode(): {zlib.crc32(KEYS[0].encode()) % 5}
    }
