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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
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
    # Bounded memory: when this fills, produce() refuses and reading pauses. librdkafka's
    # per-message overhead nearly doubles it in RSS: 16 MiB put the collector's peak RSS at
    # 73-78 MiB on a busy node, 4 MiB at 55-62 (issue 17's bound is 64), for a batch
    # catch-up up to a tenth slower (more waits for room).
    "queue.buffering.max.kbytes": 4 * 1024,
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
    """Where records go. Adding an output is one class with these members, and its name in
    `collector.config.sink_spec` and `collector.cli`; the agent and the forward listener
    know no more of it than this."""

    failure: str | None
    """Why the sink will deliver nothing more, once it knows; the program then stops."""
    where: str
    """Where records go, as the last line names it: the brokers, or the stream."""
    waiting: Callable[[], bool]
    """Set by the agent: called while `send` waits for room, True to give the wait up."""

    def send(self, key: str, values: list[bytes], done: Done, topic: str | None = None) -> None:
        """On the agent's thread: takes the batch, waiting for room if need be; `done` is
        told once whether all of it was delivered. `topic`: where it goes, if not the
        sink's own (collector.route)."""

    def offer(
        self, key: bytes, values: list[bytes], sent: int, done: Done, topic: str | None = None
    ) -> int:
        """From any thread, never waiting: takes `values[sent:]` as far as there is room and
        returns how many of `values` are taken; `done` as for send, once all are taken."""

    def poll(self, timeout: float) -> None: ...
    def flush(self, timeout: float) -> int: ...
    def close(self) -> None: ...
    def undelivered(self) -> int: ...


@dataclass(slots=True)
class Outcome:
    """A batch sent and not yet reported to its `done`."""

    done: Done
    ok: bool | None = None


class Interrupted(Exception):
    """Waiting for room in the producer's queue was given up (the agent is stopping)."""


PARTITIONS_REFRESH = 60.0
"""Seconds between looks at the topics' partition counts (a topic may be given more)."""

FLUSH_SLICE = 0.2
"""Seconds of one wait inside flush: the delivery timeout is looked at in between."""


class Reports:
    """The delivery reports of one batch's records, each record's own.

    A batch is delivered when every record of it is: Kafka may refuse one record set of a
    batch for good (over the topic's max.message.bytes) and take the next, the idempotent
    producer going on, so one record's report does not speak for the others. `left` starts
    at the batch's size and only reports take from it, on the thread that polls: the
    forward listener's thread queues records without touching it.
    """

    __slots__ = ("error", "finish", "left")

    def __init__(self, finish: Callable[[KafkaError | None], None], count: int) -> None:
        self.finish = finish
        self.error: KafkaError | None = None
        self.left = count

    def __call__(self, error: KafkaError | None, _message: object) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.left -= 1
        if not self.left:
            self.finish(self.error)


def unheard(_error: KafkaError | None) -> None:
    """The finish of a batch settled otherwise (a record of it refused at once): the reports
    still due of its records queued before change nothing."""


class KafkaSink:
    def __init__(
        self, topic: str, config: dict[str, Any], delivery_timeout: float | None = None
    ) -> None:
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
        self.partitions: dict[str, int] = {}
        """Per topic sent to, its partition count, 0 until known: librdkafka then picks."""
        self.partitions_due = 0.0
        self.waiting: Callable[[], bool] = lambda: False
        """Called while reading is paused for room: keeps the agent's liveness beat going,
        and returns True when the wait should be given up."""
        self.where = str(settings.get("bootstrap.servers", ""))
        self.delivery_timeout = delivery_timeout
        """--once: seconds without any acknowledgement after which undelivered records are
        given up (None: wait for the brokers however long they are away)."""
        self.progress = time.monotonic()
        """When the brokers last acknowledged a batch, or nothing was waiting for them."""
        self.gave_up = False
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] = lambda _reason: None
        """Told once, on the thread that polls, when nothing more will be delivered."""
        self.refused = 0
        """Records of batches that failed for good (no longer in librdkafka's queue)."""
        self.queued = 0
        """Records in librdkafka's queue whose batch is not reported yet. Counted here, not
        with len(producer): that also counts error events and callbacks waiting for poll(),
        so with the brokers away it said 51 records undelivered for 50."""
        self.unsettled: dict[bytes, deque[Outcome]] = {}
        """Per key, its batches not reported yet, oldest first."""
        self.offered: dict[Done, Reports] = {}
        """Reports of batches `offer` has queued only in part yet, by their `done`."""

    def on_error(self, error: KafkaError) -> None:
        METRICS.delivery_errors.inc()
        # librdkafka retries an authentication failure for ever, and after a fatal error
        # (e.g. the idempotent producer lost its sequence) every later batch fails: only a
        # restart, with the operator's fix, can deliver again.
        if error.fatal():
            self.fail("fatal", f"kafka fatal error: {error.str()}")
        elif error.code() == KafkaError._AUTHENTICATION:
            self.fail("authentication", f"kafka authentication failed: {error.str()}")
        else:
            log.warning("kafka: %s", error.str())

    def fail(self, kind: str, reason: str) -> None:
        """Nothing more will be delivered: say why once, and let the program stop."""
        if self.failure is not None:
            return
        self.failure = reason
        METRICS.sink_failures.labels(kind).inc()
        log.error("%s; stopping, checkpoints stay at the last acknowledged record", reason)
        self.on_failure(reason)

    def check_delivery(self) -> None:
        """--once: give up when the brokers have acknowledged nothing for delivery_timeout."""
        now = time.monotonic()
        if not len(self.producer):
            self.progress = now
        elif self.delivery_timeout is not None and now - self.progress >= self.delivery_timeout:
            self.gave_up = True
            self.fail(
                "delivery_timeout",
                f"the brokers acknowledged nothing for {self.delivery_timeout:g} s "
                "(delivery_timeout)",
            )

    def undelivered(self) -> int:
        return self.queued + self.refused

    def send(self, key: str, values: list[bytes], done: Done, topic: str | None = None) -> None:
        key_bytes = key.encode()
        order = self.unsettled.get(key_bytes)
        if not values:
            if order is None:
                done(True)
            else:
                order.append(Outcome(done, True))
            return
        if order is None:
            order = self.unsettled[key_bytes] = deque()
        outcome = Outcome(done)
        order.append(outcome)
        produce = self.producer.produce
        topic = topic or self.topic
        count = len(values)

        def delivered(error: KafkaError | None) -> None:
            self.queued -= count
            if error is None:
                self.progress = time.monotonic()
                METRICS.records_acknowledged.inc(count)
            else:
                METRICS.delivery_errors.inc()
                self.refused += count
                log.error("kafka delivery failed, checkpoint kept: %s", error.str())
            outcome.ok = error is None
            self.settle(key_bytes)

        # The same partition as librdkafka's consistent partitioners would choose.
        partitions = self.partitions.get(topic)
        if partitions is None:
            partitions = self.partitions[topic] = 0
            self.partitions_due = 0.0
        partition = zlib.crc32(key_bytes) % partitions if partitions else -1
        report = Reports(delivered, count)
        queued = 0
        try:
            for value in values:
                try:
                    produce(topic, value, key_bytes, partition, on_delivery=report)
                except BufferError:
                    self.wait_for_room(topic, value, key_bytes, partition, report)
                queued += 1
                self.queued += 1
        except KafkaException as exc:
            # Settled here: the reports still due of the records queued before the refusal
            # change nothing, and they count as refused below, not queued.
            report.finish = unheard
            self.queued -= queued
            if partition >= 0 and exc.args[0].code() == KafkaError._UNKNOWN_PARTITION:
                # The topic has fewer partitions than we knew (it was made anew): let
                # librdkafka choose again. Records of the batch already queued go twice,
                # with the same event.id, which the pipeline stores once.
                self.partitions[topic] = 0
                self.partitions_due = 0.0
                order.remove(outcome)
                if not order:
                    del self.unsettled[key_bytes]
                self.send(key, values, done, topic)
                return
            METRICS.delivery_errors.inc()
            self.refused += len(values)
            log.error("kafka refused a record, checkpoint kept: %s", exc)
            outcome.ok = False
            self.settle(key_bytes)
            return
        METRICS.records_produced.inc(len(values))

    def settle(self, key: bytes) -> None:
        """Reports a key's batches in the order they were sent, whatever order the brokers
        acknowledged them in.

        A key's batches share a partition, so idempotence keeps them in order, until the
        topic is given more partitions: the next batch then goes elsewhere and may be
        acknowledged first. The agent moves a file's checkpoint on each report, so a report
        must never overtake one that may still fail.
        """
        order = self.unsettled[key]
        while order and order[0].ok is not None:
            first = order.popleft()
            first.done(bool(first.ok))
        if not order:
            del self.unsettled[key]

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
        METRICS.producer_queue_full.inc()
        while True:
            if self.waiting() or self.failure is not None:
                raise Interrupted
            self.serve(self.producer.poll, 0.05)
            self.check_delivery()
            try:
                self.producer.produce(topic, value, key, partition, on_delivery=callback)
                return
            except BufferError:
                continue

    def offer(
        self, key: bytes, values: list[bytes], sent: int, done: Done, topic: str | None = None
    ) -> int:
        producer, topic, count = self.producer, topic or self.topic, len(values)

        def delivered(error: KafkaError | None) -> None:
            self.queued -= count
            if error is not None:
                METRICS.delivery_errors.inc()
                log.error("kafka delivery failed: %s", error.str())
            else:
                METRICS.records_acknowledged.inc(count)
            done(error is None)

        # A batch may take several offers (the queue full between them): its reports are
        # kept until the last of its records is queued.
        report = self.offered.pop(done, None) or Reports(delivered, count)
        try:
            while sent < count:
                producer.produce(topic, values[sent], key, on_delivery=report)
                sent += 1
                self.queued += 1
        except BufferError:
            METRICS.producer_queue_full.inc()
            self.offered[done] = report
            return sent
        except KafkaException as exc:
            METRICS.delivery_errors.inc()
            log.error("kafka refused records: %s", exc)
            report.finish = unheard
            self.queued -= sent
            done(False)
            return count
        METRICS.records_produced.inc(count)
        return count

    def serve(self, call: Callable[[float], int], timeout: float) -> int:
        """producer.poll or flush. confluent-kafka raises a fatal error from them (the
        idempotent producer refused by every broker, a listener that is no broker's) rather
        than handing it to error_cb: the sink fails with the reason instead of a traceback,
        and what is left waiting is counted as undelivered."""
        try:
            return call(timeout)
        except KafkaException as exc:
            error = exc.args[0]
            text = error.str() if isinstance(error, KafkaError) else str(error)
            self.gave_up = True
            self.fail("fatal", f"kafka fatal error: {text}")
            return len(self.producer)

    def poll(self, timeout: float) -> None:
        self.serve(self.producer.poll, timeout)
        self.check_delivery()
        if self.own_partitioner and time.monotonic() >= self.partitions_due:
            self.count_partitions()

    def count_partitions(self) -> None:
        """Learn the partition count of each topic sent to from the brokers, keeping the
        last one while they do not answer. Until it is known, librdkafka chooses (the same
        way). One topic is asked about alone; several (a --topic template) in one request
        for all topics rather than one request each."""
        self.partitions_due = time.monotonic() + PARTITIONS_REFRESH
        wanted = list(self.partitions) or [self.topic]
        try:
            known = self.producer.list_topics(
                wanted[0] if len(wanted) == 1 else None, timeout=1.0
            ).topics
        except KafkaException as exc:
            log.debug("kafka: no partition counts for %s yet: %s", ", ".join(wanted), exc)
            return
        for name in wanted:
            topic = known.get(name)
            if topic is not None and topic.error is None and topic.partitions:
                self.partitions[name] = len(topic.partitions)
            else:
                self.partitions_due = time.monotonic() + 1.0

    def flush(self, timeout: float) -> int:
        """Serve deliveries until none is waiting or `timeout` passed (none once given up)."""
        deadline = time.monotonic() + timeout
        left = self.serve(self.producer.flush, 0)
        while left and not self.gave_up:
            self.check_delivery()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.gave_up:
                break
            left = self.serve(self.producer.flush, min(remaining, FLUSH_SLICE))
        return left

    def close(self) -> None:
        self.serve(self.producer.flush, 0)


class StreamSink:
    """JSON lines to stdout or a file; a batch counts as delivered once written and flushed."""

    def __init__(self, stream: IO[bytes], owned: bool, where: str = "stdout") -> None:
        self.stream = stream
        self.owned = owned
        self.where = where
        self.failure: str | None = None
        self.waiting: Callable[[], bool] = lambda: False
        """Never called: a write does not wait for room."""

    @classmethod
    def for_spec(cls, spec: str) -> StreamSink:
        if spec == "stdout":
            return cls(sys.stdout.buffer, owned=False)
        path = spec.removeprefix("file:")
        return cls(open(path, "ab"), owned=True, where=path)

    def send(self, key: str, values: list[bytes], done: Done, topic: str | None = None) -> None:
        if values:
            self.stream.write(b"\n".join(values) + b"\n")
            self.stream.flush()
            METRICS.records_produced.inc(len(values))
            METRICS.records_acknowledged.inc(len(values))
        done(True)

    def offer(
        self, key: bytes, values: list[bytes], sent: int, done: Done, topic: str | None = None
    ) -> int:
        # One write call: the writer's lock keeps it whole beside the agent's writes.
        self.send(key.decode("utf-8", "surrogateescape"), values[sent:], done)
        return len(values)

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

    def undelivered(self) -> int:
        """Written records are delivered; a failed write raises instead."""
        return 0
