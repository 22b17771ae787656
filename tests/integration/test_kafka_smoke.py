"""The broker the suite uses is a real Kafka: messages survive a round trip in order."""

from __future__ import annotations

import uuid
from collections import defaultdict

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

MESSAGES = 10_000
PARTITIONS = 3


def test_round_trip_keeps_every_message_and_the_order_per_partition(kafka_bootstrap: str) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[
        topic
    ].result(timeout=30)

    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True}
    )
    sent: dict[int, list[bytes]] = defaultdict(list)
    for n in range(MESSAGES):
        partition = n % PARTITIONS
        value = f"message-{n}".encode()
        producer.produce(topic, value=value, partition=partition)
        sent[partition].append(value)
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"smoke-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[int, list[bytes]] = defaultdict(list)
    total = 0
    for _ in range(120):
        for message in consumer.consume(num_messages=1000, timeout=1):
            assert message.error() is None, message.error()
            received[message.partition()].append(message.value())
            total += 1
        if total >= MESSAGES:
            break
    consumer.close()

    assert total == MESSAGES
    assert received == sent
