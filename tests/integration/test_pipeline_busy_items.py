"""Elasticsearch answering 429 for some items of a bulk request: they are sent again until
indexed, and a shutdown while one is still refused commits nothing past it.

The 429s come from a small proxy in front of the real Elasticsearch (tests/integration/
es_proxy.py): a real node refuses items only under load a test cannot produce on cue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import (
    count,
    ids,
    produce,
    record,
    start_pipeline,
    wait_for_count,
)
from tests.integration.es_proxy import proxy
from tests.integration.test_pipeline import stop


def committed(bootstrap: str, topic: str) -> int:
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": f"group-{topic}"})
    (offset,) = group.committed([TopicPartition(topic, 0)], timeout=10)
    group.close()
    return offset.offset


def test_items_answered_429_are_sent_again_until_indexed_once(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    total = 3000
    produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(total)])
    busy = {f"{prefix}-{n}" for n in range(0, total, 7)}
    with proxy(elasticsearch_url, lambda doc_id, before: doc_id in busy and before < 3) as (
        url,
        state,
    ):
        pipeline = start_pipeline(tmp_path, kafka_bootstrap, url, topic, prefix)
        try:
            assert wait_for_count(es, prefix, total, timeout=120) == total
        finally:
            stop(pipeline)
    assert set(state.refused) == busy
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(total))
    assert committed(kafka_bootstrap, topic) == total


def test_sigterm_while_one_bulk_is_refused_and_a_later_one_succeeds_commits_nothing_past_it(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    total = 400
    records = [record(n, prefix) for n in range(total)]
    stuck = f"{prefix}-50"

    def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    with proxy(elasticsearch_url, lambda doc_id, _: doc_id == stuck) as (url, state):
        # The bulk holding record 50 is held by the proxy until the next bulk (records
        # 100 to 399) has been indexed; then record 50 is refused with 429 for ever.
        state.gate.clear()
        pipeline = start_pipeline(tmp_path, kafka_bootstrap, url, topic, prefix)
        try:
            produce(kafka_bootstrap, topic, records[:100])
            until(lambda: state.sent[stuck] >= 1, "the first bulk reached the proxy")
            produce(kafka_bootstrap, topic, records[100:])
            until(lambda: count(es, prefix) >= 300, "the second bulk indexed")
            state.gate.set()
            until(lambda: state.refused[stuck] >= 3, "record 50 refused again and again")
        finally:
            stop(pipeline)
    assert count(es, prefix) == total - 1
    assert committed(kafka_bootstrap, topic) <= 50
    # The next start reads from record 50 again: everything arrives, once.
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, total, timeout=120) == total
        until(lambda: committed(kafka_bootstrap, topic) == total, "all committed")
    finally:
        stop(pipeline)
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(total))
