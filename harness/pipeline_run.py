"""Records of the contract into Kafka, the pipeline as a real process, counts from Elasticsearch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import ApiError, Elasticsearch, helpers

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = ("shop", "payments", "web")


def record(n: int, run: str, **extra: Any) -> dict[str, Any]:
    namespace = NAMESPACES[n % len(NAMESPACES)]
    body: dict[str, Any] = {
        "@timestamp": f"2026-11-27T02:{n // 60 % 60:02d}:{n % 60:02d}.{n:09d}Z",
        "message": f"{run} record {n}",
        "stream": "stderr" if n % 10 == 0 else "stdout",
        "event": {"id": f"{run}-{n}"},
        "log": {"file": {"path": f"/var/log/pods/{namespace}_pod_uid/app/0.log"}, "offset": n},
        "container": {"id": f"{n % 7:064x}", "name": "app", "runtime": "containerd"},
        "kubernetes": {
            "namespace": namespace,
            "pod": {"name": f"pod-{n % 7}", "uid": f"uid-{n % 7}"},
            "container": {"name": "app"},
            "labels": {"app": "shop", "app.kubernetes.io/name": "shop"},
        },
        "host": {"name": "node-a"},
    }
    body.update(extra)
    return body


def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    for n, value in enumerate(records):
        while True:
            try:
                producer.produce(topic, orjson.dumps(value), str(n % 7).encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def pipeline_process(log: Path, *flags: str) -> subprocess.Popen[bytes]:
    """`python -m pipeline run` with these flags, its log in `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", *flags],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=open(log, "ab"),
    )


def start_pipeline(
    tmp: Path, bootstrap: str, es_url: str, topic: str, prefix: str, *flags: str
) -> subprocess.Popen[bytes]:
    return pipeline_process(
        tmp / f"pipeline-{uuid.uuid4().hex[:6]}.log",
        "--bootstrap-servers",
        bootstrap,
        "--elasticsearch-url",
        es_url,
        "--topic",
        topic,
        "--group",
        f"group-{topic}",
        "--dead-letter-topic",
        f"{topic}.dlq",
        "--index",
        prefix + "-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}",
        "--metrics-port",
        "0",
        "--max-backoff",
        "2",
        *flags,
    )


def count(es: Elasticsearch, prefix: str) -> int:
    es.indices.refresh(index=f"{prefix}-*", allow_no_indices=True)
    return es.count(index=f"{prefix}-*", allow_no_indices=True)["count"]


def wait_for_count(es: Elasticsearch, prefix: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        try:
            seen = count(es, prefix)
        except ApiError as exc:
            # A shard of an index the pipeline just created may not have started yet (503 on
            # a busy node): not a count, ask again.
            if exc.meta.status != 503:
                raise
            time.sleep(0.5)
            continue
        if seen >= expected:
            time.sleep(1.5)
            return count(es, prefix)
        time.sleep(0.5)
    return seen


def wait_for_commits(bootstrap: str, topic: str, timeout: float, group: str = "") -> bool:
    """True once start_pipeline's group (or `group`) has committed every partition of `topic`
    to its end: all its records were indexed or dead-lettered."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
        request = ConsumerGroupTopicPartitions(group or f"group-{topic}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = admin.list_consumer_group_offsets([request])[request.group_id].result(30)
            done = {tp.partition: tp.offset for tp in reply.topic_partitions if tp.topic == topic}
            if all(done.get(p, 0) >= end for p, end in ends.items()):
                return True
            time.sleep(0.5)
        return False
    finally:
        probe.close()


def ids(es: Elasticsearch, prefix: str) -> list[str]:
    """Every document's _id: a list, so that a doubled record would show twice."""
    es.indices.refresh(index=f"{prefix}-*", allow_no_indices=True)
    hits = helpers.scan(es, index=f"{prefix}-*", query={"_source": False}, size=5000)
    return [hit["_id"] for hit in hits]
