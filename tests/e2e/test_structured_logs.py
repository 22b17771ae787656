"""Structured application logs through the real collector, Kafka, pipeline and Elasticsearch:
apps that give one key different types are all indexed, and their fields and levels are
searchable."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from harness.collector_run import consume, new_topic, start_collector
from harness.nodewriter import docker_json
from harness.pipeline_run import start_pipeline, wait_for_count
from tests.integration.test_pipeline import stop
from tests.unit.logfiles import append, docker_container

pytestmark = pytest.mark.e2e

STAMP = "2026-11-30T10:00:00.000000001Z"
APPS = {
    "orders": ['{"level":"error","msg":"order failed","status":500,"user":{"id":7}}'],
    "billing": ['{"severity":"INFO","message":"invoice sent","status":"OK","user":"bob"}'],
    "search": ['{"msg":"slow","status":{"code":1,"text":"degraded"},"user":[1,2,3]}'],
    "legacy": ["2026-11-30 10:00:00,001 ERROR LegacyJob - batch 3 failed", "plain text line"],
}


def test_conflicting_json_types_are_all_indexed_and_searchable(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    lines = 0
    for n, (app, texts) in enumerate(APPS.items()):
        log = docker_container(tmp_path / "docker", f"{n:x}" * 64, pod=f"{app}-1", ns=app)
        append(log, *[docker_json(text + "\n", "stdout", STAMP) for text in texts])
        lines += len(texts)
    topic = new_topic(kafka_bootstrap, partitions=2)
    collector = start_collector(tmp_path, kafka_bootstrap, topic, "--once")
    assert collector.wait(120) == 0
    assert len(list(consume(kafka_bootstrap, topic, lines, timeout=60))) == lines
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        # Every record a document: none refused for a mapping conflict (dead-lettered).
        assert wait_for_count(es, prefix, lines, timeout=120) == lines
    finally:
        stop(pipeline)

    def search(query: str) -> list[str]:
        hits = es.search(index=f"{prefix}-*", q=query, size=20)["hits"]["hits"]
        return sorted(h["_source"]["message"] for h in hits)

    assert search("json.status:OK") == ["invoice sent"]
    assert search("json.status:500") == ["order failed"]
    assert search("json.status.text:degraded") == ["slow"]
    assert search("json.user.id:7") == ["order failed"]
    assert search("log.level:error") == [
        "2026-11-30 10:00:00,001 ERROR LegacyJob - batch 3 failed",
        "order failed",
    ]
    assert search("log.level:info") == ["invoice sent"]
    (hit,) = es.search(index=f"{prefix}-*", q='message:"invoice sent"')["hits"]["hits"]
    assert orjson.loads(hit["_source"]["event"]["original"])["status"] == "OK"
