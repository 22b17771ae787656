"""The consumer-group loop: Kafka records -> bulk requests -> offsets committed.

An offset is committed only when every record of its partition up to it is indexed,
refused as a duplicate, or written to the dead-letter topic and acknowledged there
(pipeline.offsets keeps that account, whatever order bulks finish in). While
Elasticsearch or the dead-letter topic refuses, the partitions are paused (the consumer
stays in its group) and the work is retried with capped, jittered backoff; /readyz says
why. A shutdown leaves a bulk it cannot finish uncommitted, and every later one of its
partitions too. A partition taken away by a rebalance is dropped from the batch
uncommitted: its new owner reads it again, and `create` with `_id` = `event.id` refuses
what was already indexed.
"""

from __future__ import annotations

import logging
import operator
import random
import time
from bisect import bisect_left
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import accumulate, starmap
from typing import Any, NamedTuple

import msgspec
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from elasticsearch import Elasticsearch

from pipeline import bulk, preflight
from pipeline.backend import connect
from pipeline.config import Config
from pipeline.deadletter import DeadLetters, Letter
from pipeline.documents import (
    Document,
    IndexName,
    Undecodable,
    document,
    documents,
    kafka_id,
    now,
)
from pipeline.metrics import METRICS
from pipeline.offsets import Ledger, Partition, Ticket
from pipeline.readiness import Readiness

log = logging.getLogger("pipeline.indexer")

CONSUME_BATCH = 5000
CONSUME_WAIT = 0.1
"""Longest wait of one consume() for its CONSUME_BATCH records: librdkafka waits for all of
them or the time, so below 5,000 records a second every record waited it. 0.5 s made half
of the latency from written to indexed at 10,000 lines/s; a backlog fills the batch at once."""


class Entry(msgspec.Struct, gc=False):
    """A consumed record in a batch. Not tracked by the garbage collector, as Document: a
    batch's thousands were otherwise walked at every collection, which cost about 4% of
    the work per record. Safe: an entry is in no cycle (its message, partition and
    document never refer back to it)."""

    message: Message
    partition: tuple[str, int]
    """(topic, partition), asked of the message once."""
    doc: Document | None
    """None when the record could not be read."""


LINES = operator.attrgetter("lines")
PARTITION = operator.attrgetter("partition")
MESSAGE = operator.attrgetter("message")
ELASTICSEARCH = "elasticsearch"
KAFKA = "kafka"
BUSY = "elasticsearch items"
COMMIT_RETRY = 1.0
"""Seconds between attempts at offsets whose commit failed while their partitions stayed
ours."""
BUSY_REPORTED = 3
"""Rounds of item retries in one bulk before it is reported: a round or two under load is
ordinary."""

ANSWER_SLICE = 0.5
"""Seconds between the liveness beats while a bulk request is answered."""


def named_all(partitions: set[Partition] | dict[Partition, int]) -> str:
    """Partitions as a log line names them: topic[partition], sorted."""
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions))


class Sent(NamedTuple):
    batch: list[Entry]
    """The entries with a document, in the order of the bulk body."""
    unreadable: list[tuple[Entry, str]]
    """Records that are not documents, with the reason: bound for the dead-letter topic."""
    reply: Future[bulk.Outcome] | None
    ticket: Ticket
    """Its place in the commit order of each partition it read from."""


class Indexer:
    def __init__(self, config: Config, es: Elasticsearch, health: Readiness | None = None) -> None:
        self.config = config
        self.es = es
        self.health = health or Readiness()
        self.index_name = IndexName(config.index)
        kafka = {
            "bootstrap.servers": config.bootstrap_servers,
            # A ^pattern subscription takes a new topic at the next look at the topic list.
            "topic.metadata.refresh.interval.ms": round(config.metadata_refresh * 1000),
            **config.kafka,
            # librdkafka's own lines go through our JSON log instead of raw onto stderr.
            "logger": logging.getLogger("pipeline.kafka"),
        }
        self.consumer = Consumer(
            {
                # Defaults a user's --kafka may change (config.OWNED_KAFKA refuses the rest).
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.max.bytes": 64 * 1024 * 1024,
                "statistics.interval.ms": 10_000,
                **kafka,
                "group.id": config.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "stats_cb": self.on_stats,
                "error_cb": self.on_error,
            }
        )
        self.producer = Producer(
            {**kafka, "acks": "all", "enable.idempotence": True, "error_cb": self.on_error}
        )
        self.letters = DeadLetters(
            self.producer,
            config.dead_letter_topic,
            self.health,
            idle=lambda: self.idle(0.0),
            wait=self.wait,
            stopping=lambda: self.stopping,
            stop_grace=config.stop_grace,
        )
        self.ledger = Ledger()
        self.owed: dict[Partition, int] = {}
        """Offsets whose commit failed while their partitions stay ours (a commit sent during
        a rebalance is refused: ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS). Tried again, else
        a partition that gets no more records keeps its committed offset behind for good,
        and the next owner reads it all again."""
        self.owed_due = 0.0
        self.assigned: set[tuple[str, int]] = set()
        self.batch: list[Entry] = []
        self.lines: list[bytes] = []
        """The bulk lines of the batch's documents, in order: joined, they are the body."""
        self.unreadable: list[tuple[Entry, str]] = []
        self.batch_bytes = 0
        self.first_at = 0.0
        self.carried: list[Message] = []
        """Messages that arrived while the batch was being retried: they start the next one."""
        self.paused = False
        self.stopping = False
        self.sender = ThreadPoolExecutor(config.bulks_in_flight, thread_name_prefix="bulk")
        self.in_flight: deque[Sent] = deque()
        """Bulks sent and not yet settled, oldest first: they are settled, and their offsets
        committed, in that order."""

    # --- Kafka callbacks ---------------------------------------------------------------------

    def on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.solved(KAFKA)
        self.assigned.update((p.topic, p.partition) for p in partitions)
        log.info("assigned %s", named_all({(p.topic, p.partition) for p in partitions}))
        if self.paused and partitions:
            self.consumer.pause(partitions)

    def on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.assigned -= gone
        self.ledger.forget(gone)
        self.owed = {p: o for p, o in self.owed.items() if p not in gone}
        kept = [e for e in self.batch if e.partition not in gone]
        if len(kept) != len(self.batch):
            log.info(
                "revoked %s: %d uncommitted records left to the next owner",
                named_all(gone),
                len(self.batch) - len(kept),
            )
            self.batch = kept
            self.lines = [e.doc.lines for e in kept if e.doc is not None]
            self.batch_bytes = sum(map(len, self.lines))
        self.unreadable = [(e, why) for e, why in self.unreadable if e.partition not in gone]
        self.carried = [m for m in self.carried if (m.topic(), m.partition()) not in gone]

    def on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            # Not ready: nothing is read. /readyz said ready with no broker reachable.
            self.health.problem(KAFKA, f"kafka: {error.str()}; nothing is read", "down")
        else:
            log.warning("kafka: %s", error.str())

    def on_stats(self, stats: str) -> None:
        read = orjson.loads(stats)
        for topic, info in read.get("topics", {}).items():
            for partition, p in info.get("partitions", {}).items():
                if partition != "-1" and p.get("consumer_lag", -1) >= 0:
                    METRICS.lag.labels(topic, partition).set(p["consumer_lag"])
        brokers = read.get("brokers", {}).values()
        if any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers):
            self.health.solved(KAFKA)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        c = self.config
        self.preflight()
        self.consumer.subscribe(
            [c.topic], on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_revoke
        )
        while not self.stopping:
            self.health.beat = time.monotonic()
            wait = (
                c.flush_interval
                if not self.pending()
                else max(0.0, self.first_at + c.flush_interval - time.monotonic())
            )
            messages = self.carried or self.consumer.consume(CONSUME_BATCH, min(wait, CONSUME_WAIT))
            self.carried = []
            # A fatal error of the dead-letter producer (every broker refusing it) is raised
            # from poll: now, not at the first letter or at stop (pipeline.cli says it).
            self.producer.poll(0)
            ingested = now()
            self.add(messages, ingested)
            self.health.ready = bool(self.assigned) or not self.pending()
            drained = len(messages) < CONSUME_BATCH
            if self.due(drained):
                # In bulks of bulk_bytes: a consumed batch may hold several.
                while self.due(drained):
                    self.flush()
            elif self.in_flight and (
                self.in_flight[0].reply is None or self.in_flight[0].reply.done()
            ):
                self.settle()
            elif self.owed and time.monotonic() >= self.owed_due:
                self.commit({})
        while self.pending():
            self.flush()
        while self.in_flight:
            self.settle()
        if self.owed:
            self.commit({})
        left = self.ledger.unfinished()
        if left:
            log.warning(
                "stopped with work unfinished in partitions %s: left uncommitted, to be read again",
                named_all(left),
            )
        self.health.stopped()
        self.sender.shutdown()
        self.consumer.close()
        self.producer.flush(10)
        return 0

    def preflight(self) -> None:
        """Wait, before joining the group, until Elasticsearch answers with the templates."""
        delay = 0.1
        while not self.stopping:
            trouble = preflight.problem(self.es, self.config.elasticsearch_url)
            if trouble is None:
                self.health.solved(ELASTICSEARCH)
                return
            self.health.problem(ELASTICSEARCH, f"{trouble.text}; retrying", trouble.kind)
            deadline = time.monotonic() + delay * random.uniform(0.5, 1.0)
            while time.monotonic() < deadline and not self.stopping:
                self.health.beat = time.monotonic()
                # Serves the producer's callbacks: what is wrong with Kafka (a wrong
                # password) is said now too, not once Elasticsearch is mended.
                self.producer.poll(min(0.2, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, self.config.max_backoff)

    def pending(self) -> bool:
        return bool(self.batch or self.unreadable)

    def due(self, drained: bool = False) -> bool:
        """Whether the batch is to be sent now: it is full; its first record waited
        `flush_interval`; or Kafka had no more to give (`drained`) while a sender is free,
        when waiting would leave the node idle and the records unsent for nothing (the
        last records of a backlog waited up to `flush_interval`, a second by default)."""
        return self.pending() and (
            self.batch_bytes >= self.config.bulk_bytes
            or time.monotonic() - self.first_at >= self.config.flush_interval
            or (drained and self.sending() < self.config.bulks_in_flight)
        )

    def sending(self) -> int:
        """Bulks sent or waiting for a sender, not yet answered."""
        return sum(1 for s in self.in_flight if s.reply is not None and not s.reply.done())

    def add(self, messages: list[Message], ingested: str) -> None:
        """Consumed messages -> entries of the batch and lines of its body."""
        if messages and not self.pending():
            self.first_at = time.monotonic()
        if not self.add_all(messages, ingested):
            self.add_each(messages, ingested)

    def add_all(self, messages: list[Message], ingested: str) -> bool:
        """The usual case, every message a record and every record a document, in one call
        of documents() and in map and zip. False, and nothing added, if one message is not
        so."""
        # Not count(None): that compares each KafkaError with None, which raises inside
        # confluent-kafka (SystemError) instead of answering False.
        if any(map(Message.error, messages)):
            return False
        values = list(map(Message.value, messages))
        try:
            docs = documents(
                values,
                self.index_name,
                ingested,
                lambda n: messages[n].timestamp(),
                lambda n: kafka_id(
                    messages[n].topic(), messages[n].partition(), messages[n].offset()
                ),
            )
        except Undecodable:
            return False
        # Keyed by topic and partition: a ^pattern subscription reads partition 0 of many.
        partitions = zip(
            map(Message.topic, messages), map(Message.partition, messages), strict=True
        )
        self.batch += starmap(Entry, zip(messages, partitions, docs, strict=True))
        lines = list(map(LINES, docs))
        self.lines += lines
        self.batch_bytes += sum(map(len, lines))
        return True

    def add_each(self, messages: list[Message], ingested: str) -> None:
        """One message at a time: Kafka's errors logged, records that are not documents set
        apart with the reason."""
        name = self.index_name
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka: %s", error.str())
                continue
            partition = (message.topic(), message.partition())
            try:
                place = kafka_id(*partition, message.offset())
                doc = document(message.value() or b"", name, ingested, message.timestamp(), place)
            except Undecodable as exc:
                self.unreadable.append((Entry(message, partition, None), str(exc)))
                continue
            self.batch.append(Entry(message, partition, doc))
            self.lines.append(doc.lines)
            self.batch_bytes += len(doc.lines)

    def flush(self) -> None:
        """Send the batch's first bulk: the fewest entries that hold `bulk_bytes` (a
        consumed batch adds thousands of records at once), or all of them; the rest stay
        for the next. It waits while twice `bulks_in_flight` bulks are unsettled.

        Bulk requests are in flight while the next batch is read and encoded: Elasticsearch
        and this loop then work at the same time instead of taking turns, and with two or
        more the node has the next bulk at hand when it finishes one. As many more bulks
        wait ready in the senders' queue, and a sender whose request was answered takes one
        at once: the node does not wait while this loop settles the answered one (its
        commit is a round trip to Kafka), reads and encodes the next. With one waiting,
        two bulks answered together left a sender idle until this loop had read and
        encoded another: 34,294 docs/s where the node's ceiling with the same bodies and
        two requests at a time was 52,598 (bench/indexer_throughput.py).
        """
        while len(self.in_flight) >= 2 * self.config.bulks_in_flight:
            self.settle()
        cut = self.cut()
        batch, body, unreadable = self.batch[:cut], b"".join(self.lines[:cut]), self.unreadable
        rest, lines = self.batch[cut:], self.lines[cut:]
        self.clear()
        if rest:
            self.batch, self.lines, self.batch_bytes = rest, lines, sum(map(len, lines))
        # Offsets grow within a partition: the last of each partition's entries wins.
        offsets = map(Message.offset, map(MESSAGE, batch))
        ends = dict(zip(map(PARTITION, batch), offsets, strict=True))
        for e, _ in unreadable:
            ends[e.partition] = max(ends.get(e.partition, -1), e.message.offset())
        ticket = self.ledger.open({p: offset + 1 for p, offset in ends.items()})
        future = self.sender.submit(bulk.send, self.es, body, len(batch)) if batch else None
        self.in_flight.append(Sent(batch, unreadable, future, ticket))

    def cut(self) -> int:
        """How many of the batch's entries its first bulk takes. All of them while records
        to dead-letter wait: their offsets are committed with the bulk that holds the
        records around them, so the batch is not split."""
        if self.batch_bytes < self.config.bulk_bytes or self.unreadable:
            return len(self.batch)
        return bisect_left(list(accumulate(map(len, self.lines))), self.config.bulk_bytes) + 1

    def settle(self) -> None:
        """Wait for the oldest bulk in flight; retry, dead-letter and commit what it held."""
        if not self.in_flight:
            return
        sent = self.in_flight.popleft()
        refused = self.index(sent)
        if refused is not None:
            refused = [(e, r) for e, r in refused if e.partition in self.assigned]
            if refused and not self.dead_letter(refused):
                refused = None
        self.resume()
        if refused is None:
            METRICS.uncommitted_at_stop.inc()
            return
        self.commit(self.ledger.finish(sent.ticket))

    def answer(self, reply: Future[bulk.Outcome]) -> bulk.Outcome:
        """A bulk request's outcome, the loop alive while it waits: a node slow to answer
        (the request's timeout is 60 s, queued behind others perhaps) is no stalled loop,
        and the liveness probe (30 s) had the pod restarted again and again."""
        while not wait([reply], timeout=ANSWER_SLICE).done:
            self.health.beat = time.monotonic()
        return reply.result()

    def index(self, sent: Sent) -> list[tuple[Entry, str]] | None:
        """Index the bulk's documents, retrying what Elasticsearch could not take yet.
        Returns the entries to dead-letter, with the reason; None when stopping first."""
        todo, future = sent.batch, sent.reply
        refused = list(sent.unreadable)
        delay = 0.1
        busy = 0
        most = len(todo)
        while todo:
            part, rest = todo[:most], todo[most:]
            try:
                if future is not None:
                    first, future = future, None
                    outcome = self.answer(first)
                else:
                    body = b"".join([e.doc.lines for e in part if e.doc])
                    # Through the senders: no more than `bulks_in_flight` at the node.
                    outcome = self.answer(self.sender.submit(bulk.send, self.es, body, len(part)))
            except bulk.TooLarge as exc:
                if len(part) == 1:
                    refused.append((part[0], f"too large for Elasticsearch: {exc}"))
                    todo = rest
                else:
                    most = max(1, len(part) // 2)
                continue
            except bulk.Unavailable as exc:
                METRICS.retries.inc()
                self.health.problem(ELASTICSEARCH, f"{exc}; not committing, retrying", exc.kind)
                if self.stopping:
                    return None
                delay = self.wait(delay)
                todo = self.owned(todo)
                continue
            self.health.solved(ELASTICSEARCH)
            refused += [(part[i], reason) for i, reason in outcome.refused]
            again = [part[i] for i in outcome.retry]
            todo = self.owned(again + rest)
            if again:
                METRICS.retries.inc(len(again))
                busy += 1
                if busy >= BUSY_REPORTED:
                    self.health.problem(
                        BUSY,
                        "Elasticsearch keeps answering 429, 5xx, 401 or 403 for some documents; "
                        "not committing past them, retrying",
                    )
                if self.stopping:
                    return None
                delay = self.wait(delay)
        if busy == 0:
            # Over only when a bulk went through without a retry: under a steady share of
            # refusals, the trouble is said once, not once per bulk.
            self.health.solved(BUSY)
        return refused

    def clear(self) -> None:
        self.batch = []
        self.lines = []
        self.unreadable = []
        self.batch_bytes = 0

    def owned(self, entries: list[Entry]) -> list[Entry]:
        return [e for e in entries if e.partition in self.assigned]

    def wait(self, delay: float) -> float:
        """Back off, staying in the group: paused partitions, but polled for rebalances."""
        self.idle(delay * random.uniform(0.5, 1.0))
        return min(delay * 2, self.config.max_backoff)

    def idle(self, seconds: float) -> None:
        """Poll the paused consumer for `seconds` (at least once): rebalances are served and
        the group does not take this member for dead."""
        if not self.paused and self.assigned:
            self.consumer.pause([TopicPartition(t, p) for t, p in self.assigned])
            self.paused = True
        deadline = time.monotonic() + seconds
        while True:
            self.health.beat = time.monotonic()
            left = max(0.0, min(0.2, deadline - time.monotonic()))
            # Not `+=`: that reads the list before consume(), whose rebalance may replace it
            # by one without a revoked partition's records, and stores the old one back.
            came = self.consumer.consume(CONSUME_BATCH, left)
            self.carried.extend(came)
            if time.monotonic() >= deadline or self.stopping:
                return

    def resume(self) -> None:
        if self.paused:
            self.consumer.resume([TopicPartition(t, p) for t, p in self.assigned])
            self.paused = False

    def dead_letter(self, refused: list[tuple[Entry, str]]) -> bool:
        """True once every letter is acknowledged by the dead-letter topic."""
        letters = [Letter(e.message, e.doc.index if e.doc else None, r) for e, r in refused]
        if not self.letters.deliver(letters):
            return False
        log.info("%d documents dead-lettered, first: %s", len(refused), refused[0][1])
        return True

    def commit(self, ends: dict[Partition, int]) -> None:
        """Commit these offsets, and those owed from a failed commit (the newer win)."""
        wanted = {p: o for p, o in {**self.owed, **ends}.items() if p in self.assigned}
        self.owed = {}
        if not wanted:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in wanted.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Partitions lost meanwhile are the next owner's to read again (ids dedupe);
            # those still ours are committed at the next try.
            METRICS.commit_failures.inc()
            self.owed = wanted
            self.owed_due = time.monotonic() + COMMIT_RETRY
            log.warning("commit failed, tried again while the partitions stay ours: %s", exc)


def client(config: Config) -> Elasticsearch:
    auth: dict[str, Any] = {}
    if config.elasticsearch_api_key:
        auth["api_key"] = config.elasticsearch_api_key
    elif config.elasticsearch_username:
        auth["basic_auth"] = (config.elasticsearch_username, config.elasticsearch_password)
    if config.elasticsearch_ca_certs:
        auth["ca_certs"] = config.elasticsearch_ca_certs
    return connect(
        config.elasticsearch_url,
        config.backend,
        request_timeout=60,
        max_retries=0,
        serializers={
            bulk.Replies.mimetype: bulk.Replies(),
            bulk.Bodies.mimetype: bulk.Bodies(),
        },
        **auth,
    )
