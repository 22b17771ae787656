"""Where encoded records go: Kafka, or JSON lines on stdout or in a file.

A sink calls `done` for a batch only once every record of it is delivered (for Kafka:
acknowledged by the brokers under acks=all). The agent advances a file's checkpoint from
that call alone, which is what makes delivery at-least-once across crashes.
"""

from __future__ import annotations

import logging
import sys
import time
import zlib
from collections.abc import Callable
from typing import IO, Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from collector.metrics import METRICS

log = logging.getLogger("collector.sink")

Done = Callable[[bool], None]
"""Called once per batch: True when all of it was delivered, False when a part failed for good."""

KAFKA_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    # Bounded memory: when this fills, produce() refuses and reading pauses.
    "queue.buffering.max.kbytes": 16 * 1024,
    "queue.buffering.max.messages": 200_000,
    # Retry until delivered rather than give up while the broker is away; the checkpoint
    # stays behind meanwhile, and shutdown is bounded by the grace period instead.
    "message.timeout.ms": 0,
}


MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default message.max.bytes: produce() refuses a larger key, value and envelope."""
MESSAGE_ENVELOPE = 512
"""Room left for a record's envelope and batch header (librdkafka counts 36 bytes)."""
MAX_KEY_BYTES = 256
"""Longest key a sink is given alongside a record of `largest_record` bytes."""


def largest_record(kafka: dict[str, Any]) -> int:
    """The largest record the producer takes with a key of at most MAX_KEY_BYTES."""
    limit = int(kafka.get("message.max.bytes", MESSAGE_MAX_BYTES))
    return limit - MESSAGE_ENVELOPE - MAX_KEY_BYTES


class Sink(Protocol):
    def send(self, key: str, values: list[bytes], done: Done) -> None: ...
    def poll(self, timeout: float) -> None: ...
    def flush(self, timeout: float) -> int: ...
    def close(self) -> None: ...


class Interrupted(Exception):
    """Waiting for room in the producer's queue was given up (the agent is stopping)."""


PARTITIONS_REFRESH = 60.0
"""Seconds between looks at the topic's partition count (a topic may be given more)."""


class KafkaSink:
    def __init__(self, topic: str, config: dict[str, Any]) -> None:
        settings = {
            **KAFKA_DEFAULTS,
            **config,
            "error_cb": self.on_error,
            # librdkafka's own lines go through our JSON log instead of raw onto stderr.
            "logger": logging.getLogger("collector.kafka"),
        }
        self.topic = topic
        self.producer = Producer(settings)
        # librdkafka's default partitioner hashes the key of every record (CRC-32); all
        # records of a batch share their key, so the sink picks the same partition once
        # per batch instead. A partitioner the user configured is left to do its work.
        self.own_partitioner = settings.get("partitioner", "consistent_random") in (
            "consistent_random",
            "consistent",
        )
        self.partitions = 0
        """The topic's partition count, 0 until known: librdkafka then picks."""
        self.partitions_due = 0.0
        self.waiting: Callable[[], bool] = lambda: False
        """Called while reading is paused for room: keeps the agent's liveness beat going,
        and returns True when the wait should be given up."""

    def on_error(self, error: KafkaError) -> None:
        METRICS.delivery_errors.inc()
        if error.fatal():
            log.error("kafka fatal error: %s", error.str())
        else:
            log.warning("kafka: %s", error.str())

    def send(self, key: str, values: list[bytes], done: Done) -> None:
        if not values:
            done(True)
            return
        produce = self.producer.produce
        topic = self.topic

        def delivered(error: KafkaError | None, _message: object) -> None:
            if error is not None:
                METRICS.delivery_errors.inc()
                log.error("kafka delivery failed, checkpoint kept: %s", error.str())
            done(error is None)

        key_bytes = key.encode()
        # The same partition as librdkafka's consistent partitioners would choose.
        partition = zlib.crc32(key_bytes) % self.partitions if self.partitions else -1
        # Records of one file share a key, so one partition: with idempotence on, Kafka
        # keeps their order, and the report for the last one speaks for the batch. No
        # callback on the others keeps the per-record cost to one produce() call.
        try:
            for value in values[:-1]:
                try:
                    produce(topic, value, key_bytes, partition)
                except BufferError:
                    self.wait_for_room(topic, value, key_bytes, partition, None)
            try:
                produce(topic, values[-1], key_bytes, partition, on_delivery=delivered)
            except BufferError:
                self.wait_for_room(topic, values[-1], key_bytes, partition, delivered)
        except KafkaException as exc:
            if partition >= 0 and exc.args[0].code() == KafkaError._UNKNOWN_PARTITION:
                # The topic has fewer partitions than we knew (it was made anew): let
                # librdkafka choose again. Records of the batch already queued go twice,
                # with the same event.id, which the pipeline stores once.
                self.partitions = 0
                self.partitions_due = 0.0
                self.send(key, values, done)
                return
            METRICS.delivery_errors.inc()
            log.error("kafka refused a record, checkpoint kept: %s", exc)
            done(False)
            return
        METRICS.records_produced.inc(len(values))

    def wait_for_room(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        partition: int,
        callback: Callable[..., None] | None,
    ) -> None:
        """librdkafka's queue is full: serve deliveries until it takes the record (backpressure).

        Reading pauses meanwhile, so memory stays bounded however long the broker is away.
        """
        while True:
            if self.waiting():
                raise Interrupted
            self.producer.poll(0.05)
            try:
                self.producer.produce(topic, value, key, partition, on_delivery=callback)
                return
            except BufferError:
                continue

    def poll(self, timeout: float) -> None:
        self.producer.poll(timeout)
        if self.own_partitioner and time.monotonic() >= self.partitions_due:
            self.count_partitions()

    def count_partitions(self) -> None:
        """Learn the topic's partition count from the brokers, keeping the last one while
        they do not answer. Until it is known, librdkafka chooses (the same way)."""
        self.partitions_due = time.monotonic() + PARTITIONS_REFRESH
        try:
            topic = self.producer.list_topics(self.topic, timeout=1.0).topics.get(self.topic)
        except KafkaException as exc:
            log.debug("kafka: no partition count for %s yet: %s", self.topic, exc)
            return
        if topic is not None and topic.error is None and topic.partitions:
            self.partitions = len(topic.partitions)
        else:
            self.partitions_due = time.monotonic() + 1.0

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)

    def close(self) -> None:
        self.producer.flush(0)


class StreamSink:
    """JSON lines to stdout or a file; a batch counts as delivered once written and flushed."""

    def __init__(self, stream: IO[bytes], owned: bool) -> None:
        self.stream = stream
        self.owned = owned

    @classmethod
    def for_spec(cls, spec: str) -> StreamSink:
        if spec == "stdout":
            return cls(sys.stdout.buffer, owned=False)
        return cls(open(spec.removeprefix("file:"), "ab"), owned=True)

    def send(self, key: str, values: list[bytes], done: Done) -> None:
        if values:
            self.stream.write(b"\n".join(values) + b"\n")
            self.stream.flush()
            METRICS.records_produced.inc(len(values))
        done(True)

    def poll(self, timeout: float) -> None:
        if timeout > 0:
            time.sleep(timeout)

    def flush(self, timeout: float) -> int:
        self.stream.flush()
        return 0

    def close(self) -> None:
        self.stream.flush()
        if self.owned:
            self.stream.close()
