"""The pipeline given several Elasticsearch nodes, as a cluster's ELASTICSEARCH_URL lists them
(deploy/local/elasticsearch.sh with ES_NODES=3 prints every node's URL, comma-separated)."""

from __future__ import annotations

import signal
from pathlib import Path

from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import ids, produce, record, start_pipeline, wait_for_count
from tests.servers import free_port


def test_a_list_of_nodes_with_one_down_indexes_every_record_once(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """The first node listed does not answer (a dead node of the cluster): the pipeline
    indexes through the other, and says nothing is lost."""
    topic = new_topic(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(500)])
    nodes = f"http://127.0.0.1:{free_port()},{elasticsearch_url}"
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, nodes, topic, prefix)
    try:
        assert wait_for_count(es, prefix, 500, timeout=120) == 500, next(
            tmp_path.glob("pipeline-*.log")
        ).read_text()[-3000:]
    finally:
        pipeline.send_signal(signal.SIGTERM)
        assert pipeline.wait(60) == 0
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(500))
