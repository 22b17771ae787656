"""The producer's queue holds 4 MiB of records unless the user says otherwise: what
librdkafka takes before it refuses is what bounds the collector's memory (issue 17's
64 MiB peak RSS), and a `--kafka queue.buffering.max.kbytes=N` a user gives still wins."""

from __future__ import annotations

from typing import Any

from collector.metrics import METRICS
from collector.sink import KafkaSink

DEAD = "127.0.0.1:1"
"""Nothing listens there: nothing leaves the queue, so it fills."""

RECORD = 1000
KEY = b"k"


def queued_bytes(config: dict[str, Any]) -> int:
    """Bytes of records librdkafka takes before its queue refuses one (it counts the
    values' bytes against queue.buffering.max.kbytes)."""
    sink = KafkaSink("logs", {"bootstrap.servers": DEAD, **config})
    values = [b"x" * RECORD] * 40_000
    try:
        taken = sink.offer(KEY, values, 0, lambda _ok: None)
        assert taken < len(values), "the queue never filled: the test proves nothing"
        assert sink.undelivered() == taken
        return taken * RECORD
    finally:
        sink.producer.purge()
        sink.producer.flush(5)


def test_the_queue_holds_4_mib_by_default_and_a_full_queue_is_counted() -> None:
    before = METRICS.producer_queue_full._value.get()
    held = queued_bytes({})
    assert 4 * 1024 * 1024 - RECORD < held <= 4 * 1024 * 1024
    assert METRICS.producer_queue_full._value.get() == before + 1


def test_a_users_queue_size_wins_over_the_default_either_way() -> None:
    smaller = queued_bytes({"queue.buffering.max.kbytes": 1024})
    assert 1024 * 1024 - RECORD < smaller <= 1024 * 1024
    larger = queued_bytes({"queue.buffering.max.kbytes": "16384"})
    assert 16 * 1024 * 1024 - RECORD < larger <= 16 * 1024 * 1024
