"""Records whose @timestamp is not a date, through the real Kafka and Elasticsearch:
indexed at the Kafka record's time, tagged, their own value kept and searchable."""

from __future__ import annotations

from pathlib import Path

import orjson
from confluent_kafka import Producer
from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import record, start_pipeline, wait_for_count
from tests.integration.test_pipeline import stop

KAFKA_MS = 1_795_000_000_123
"""2026-11-18T11:06:40.123Z"""


def test_records_without_a_valid_time_are_indexed_at_the_kafka_time(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    records = [record(n, prefix) for n in range(4)]
    records[0]["@timestamp"] = "not . t.me"
    records[1]["@timestamp"] = 1_795_000_000
    del records[2]["@timestamp"]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in records:
        producer.produce(topic, orjson.dumps(value), timestamp=KAFKA_MS)
    assert producer.flush(30) == 0
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        assert wait_for_count(es, prefix, 4, timeout=60) == 4
    finally:
        stop(pipeline)
    hits = es.search(index=f"{prefix}-*", query={"term": {"tags": "timestamp_invalid"}}, size=10)
    found = {h["_id"]: h for h in hits["hits"]["hits"]}
    assert sorted(found) == [f"{prefix}-{n}" for n in range(3)]
    for hit in found.values():
        assert hit["_source"]["@timestamp"] == "2026-11-18T11:06:40.123Z"
        assert hit["_index"].endswith("-2026.11.18")
    # The original is kept in a field the template maps: found by an exact search.
    kept = es.search(
        index=f"{prefix}-*", query={"term": {"event.original_timestamp": "not . t.me"}}
    )["hits"]["hits"]
    assert [h["_id"] for h in kept] == [f"{prefix}-0"]
    assert found[f"{prefix}-1"]["_source"]["event"]["original_timestamp"] == "1795000000"
    assert "original_timestamp" not in found[f"{prefix}-2"]["_source"]["event"]
    mapping = es.indices.get_field_mapping(index=f"{prefix}-*", fields="event.original_timestamp")
    kinds = {
        m["mappings"]["event.original_timestamp"]["mapping"]["original_timestamp"]["type"]
        for m in mapping.body.values()
        if m["mappings"]
    }
    assert kinds == {"keyword"}
