"""The count of undelivered records a user reads when the brokers are away (`--once` gives
up, SIGTERM) is the records' count, whatever else librdkafka holds for poll()."""

from __future__ import annotations

import time

from collector.sink import KafkaSink

DEAD = "127.0.0.1:1"
"""Nothing listens there: connecting fails at once, and librdkafka queues an error event."""


def test_undelivered_counts_records_not_the_error_events_waiting_for_poll() -> None:
    sink = KafkaSink("logs", {"bootstrap.servers": DEAD})
    reports: list[bool] = []
    for batch in range(5):
        sink.send(
            f"file-{batch}", [f"line {batch}.{n}".encode() for n in range(10)], reports.append
        )
    # Wait, without poll(), until librdkafka holds more than the 50 records: the failed
    # connection's error event, which len(producer) counts as well.
    deadline = time.monotonic() + 30
    while len(sink.producer) <= 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert len(sink.producer) > 50, "no error event queued: the test proves nothing"
        assert sink.undelivered() == 50
        assert reports == []
    finally:
        sink.producer.purge()
        sink.producer.flush(5)


def test_a_batch_refused_at_produce_counts_once_and_leaves_nothing_queued() -> None:
    sink = KafkaSink("logs", {"bootstrap.servers": DEAD, "message.max.bytes": 1000})
    reports: list[bool] = []
    sink.send("file", [b"small", b"x" * 5000], reports.append)
    try:
        assert reports == [False]
        assert sink.undelivered() == 2
    finally:
        sink.producer.purge()
        sink.producer.flush(5)
