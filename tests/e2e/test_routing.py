"""Per-namespace topics through the real collector, Kafka, pipeline and Elasticsearch: each
namespace's records reach its own topic and its own index once, a record without a namespace
goes through the fallback topic, and topics made after the pipeline started are read."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from harness.collector_run import consume, new_topic, start_collector
from harness.nodewriter import docker_json
from harness.pipeline_run import ids, start_pipeline, wait_for_commits, wait_for_count
from tests.integration.test_pipeline import stop
from tests.unit.logfiles import append, docker_container

pytestmark = pytest.mark.e2e

STAMP = "2026-11-30T10:00:00.000000001Z"
PODS = {("shop", "cart-1"): 300, ("shop", "web-1"): 200, ("bank", "ledger-1"): 250}


def test_two_namespaces_go_to_two_topics_and_indices_and_the_rest_to_the_fallback(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    base = f"route{uuid.uuid4().hex[:10]}"
    group = f"group-{base}"
    # The documented pair: the collector's template with the plain topic as its fallback,
    # and a pattern that reads both the namespaces' topics and the fallback.
    pipeline = start_pipeline(
        tmp_path,
        kafka_bootstrap,
        elasticsearch_url,
        f"^{base}(\\..*)?$",
        prefix,
        *("--group", group, "--dead-letter-topic", f"{base}-dlq", "--metadata-refresh", "1s"),
    )
    try:
        # Every topic is made after the pipeline subscribed.
        shop, bank = new_topic(kafka_bootstrap, 3, name=f"{base}.shop"), f"{base}.bank"
        new_topic(kafka_bootstrap, 2, name=bank)
        new_topic(kafka_bootstrap, 1, name=base)
        expected: dict[str, list[str]] = {}
        for n, ((ns, pod), lines) in enumerate(PODS.items()):
            log = docker_container(tmp_path / "docker", f"{n + 1:x}" * 64, pod=pod, ns=ns)
            texts = [f"{ns}/{pod} line {i}" for i in range(lines)]
            append(log, *(docker_json(t + "\n", "stdout", STAMP) for t in texts))
            expected.setdefault(ns, []).extend(texts)
        # A json-file container no pod owns: nothing names its namespace.
        plain = docker_container(tmp_path / "docker", "f" * 64).parent
        (plain / "config.v2.json").write_text(orjson.dumps({"ID": "f" * 64}).decode())
        append(plain / f"{'f' * 64}-json.log", docker_json("no namespace\n", "stdout", STAMP))
        total = sum(PODS.values()) + 1

        collector = start_collector(
            tmp_path, kafka_bootstrap, f"{base}.{{kubernetes.namespace}}", "--once",
            "--topic-fallback", base, "--kubernetes", "off",
        )  # fmt: skip
        assert collector.wait(120) == 0
        for topic, want in ((shop, expected["shop"]), (bank, expected["bank"])):
            got = sorted(r["message"] for r in consume(kafka_bootstrap, topic, len(want), 60))
            assert got == sorted(want), topic
        (fallen,) = consume(kafka_bootstrap, base, 1, 60)
        assert fallen["message"] == "no namespace"
        assert "namespace" not in fallen.get("kubernetes", {})

        assert wait_for_count(es, prefix, total, timeout=180) == total
        for topic in (shop, bank, base):
            assert wait_for_commits(kafka_bootstrap, topic, timeout=120, group=group), topic
    finally:
        stop(pipeline)
    found = ids(es, prefix)
    assert len(found) == len(set(found)) == total
    for ns, texts in expected.items():
        es.indices.refresh(index=f"{prefix}-{ns}-*")
        hits = es.search(index=f"{prefix}-{ns}-*", size=1000, source=["message"])["hits"]
        assert sorted(h["_source"]["message"] for h in hits["hits"]) == sorted(texts), ns
    (hit,) = es.search(index=f"{prefix}-unknown-*", q='message:"no namespace"')["hits"]["hits"]
    assert hit["_source"]["message"] == "no namespace"
