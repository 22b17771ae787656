"""The bulk requests the indexer sends: of `--bulk-bytes` (a batch read from Kafka at once
holds thousands of records, more than one bulk's worth), and never more of them at the
node than `--bulks-in-flight`, also while items answered 429 are sent again.

A small proxy in front of the real Elasticsearch (tests/integration/es_proxy.py) counts
the requests and answers 429 for chosen items.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import ids, produce, record, start_pipeline, wait_for_count
from tests.integration.es_proxy import proxy
from tests.integration.test_pipeline import stop
from tests.integration.test_pipeline_busy_items import committed

BULK_BYTES = 64 * 1024


def test_bulks_hold_bulk_bytes_and_no_more_than_bulks_in_flight_reach_the_node(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    total = 3000
    records = [record(n, prefix) for n in range(total)]
    # Produced before the indexer starts: its first reads take thousands at once.
    produce(kafka_bootstrap, topic, records)
    busy = {f"{prefix}-{n}" for n in range(0, total, 11)}
    with proxy(elasticsearch_url, lambda doc_id, before: doc_id in busy and before < 2) as (
        url,
        state,
    ):
        pipeline = start_pipeline(
            tmp_path,
            kafka_bootstrap,
            url,
            topic,
            prefix,
            "--bulk-bytes",
            str(BULK_BYTES),
            "--bulks-in-flight",
            "2",
        )
        try:
            assert wait_for_count(es, prefix, total, timeout=120) == total
        finally:
            stop(pipeline)
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(total))
    assert committed(kafka_bootstrap, topic) == total
    # A bulk is sent once it holds bulk_bytes: one record's lines more at most.
    largest = max(len(orjson.dumps(r)) for r in records) + 200
    assert max(state.bodies) <= BULK_BYTES + largest, state.bodies
    assert sum(size >= BULK_BYTES for size in state.bodies) >= 10
    assert state.most_at_once <= 2


def test_records_are_sent_when_kafka_has_no_more_and_a_sender_is_free(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """The end of a backlog, or a quiet topic: waiting for the flush interval would leave
    the node idle and the records unsent for nothing."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    pipeline = start_pipeline(
        tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix, "--flush-interval", "1h"
    )
    try:
        produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(10)])
        assert wait_for_count(es, prefix, 10, timeout=120) == 10
    finally:
        stop(pipeline)
    assert committed(kafka_bootstrap, topic) == 10
