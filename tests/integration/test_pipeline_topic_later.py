"""A pipeline started before its topic exists (the collector creates it with its first
record, or an operator a moment later): Kafka answers the consumer with an error message,
which the pipeline logs, and it goes on to index the records once they come."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import Elasticsearch

from harness.pipeline_run import ids, produce, record, start_pipeline, wait_for_count


def test_a_pipeline_started_before_its_topic_logs_and_then_indexes_it(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = f"logs-{uuid.uuid4().hex[:10]}"
    pipeline = start_pipeline(
        tmp_path,
        kafka_bootstrap,
        elasticsearch_url,
        topic,
        prefix,
        "--kafka",
        "allow.auto.create.topics=false",
    )
    log = next(tmp_path.glob("pipeline-*.log"))
    try:
        deadline = time.monotonic() + 120
        while "Unknown topic or partition" not in log.read_text(errors="replace"):
            assert pipeline.poll() is None, f"the pipeline exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no word of the topic:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[
            topic
        ].result(timeout=30)
        produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(300)])
        assert wait_for_count(es, prefix, 300, timeout=120) == 300, log.read_text()[-3000:]
        assert pipeline.poll() is None, f"the pipeline exited:\n{log.read_text()[-3000:]}"
    finally:
        pipeline.send_signal(signal.SIGTERM)
        pipeline.wait(60)
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(300))
