"""Our images, built from deploy/docker/*.Dockerfile on the local engine, run as deployed.

deploy/local/images.sh builds them with the Debian stand-in for the official python base
(no registry here). The collector image runs with the DaemonSet's security context (uid 0,
every capability dropped but DAC_READ_SEARCH, no privilege escalation, read-only root
filesystem), the engine's log folder mounted read-only and a state folder writable, ships a
real container's records into Kafka and resumes after its container restarts; the pipeline
image runs `pipeline setup` as the Job does, then indexes as its non-root user; each image's
own HEALTHCHECK must pass.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer
from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import produce, record, wait_for_count
from tests.e2e import runtime_logs
from tests.e2e.runtime_logs import run_workload
from tests.servers import Engine

pytestmark = pytest.mark.e2e

DAEMONSET = {
    "user": "0:0",
    "read_only": True,
    "cap_drop": ["ALL"],
    "cap_add": ["DAC_READ_SEARCH"],
    "security_opt": ["no-new-privileges"],
}


def wait_healthy(container: Any, timeout: float = 120) -> None:
    """Until the image's own HEALTHCHECK says healthy (its first probe comes after 15 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        health = container.attrs["State"].get("Health") or {}
        if health.get("Status") == "healthy":
            return
        assert container.status == "running", container.logs()[-3000:]
        time.sleep(0.5)
    pytest.fail(f"not healthy after {timeout}s: {health}\n{container.logs()[-3000:]!r}")


class Ours:
    """Reads the topic from the start and keeps the records of the given containers."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"check-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([topic])
        self.records: list[dict[str, Any]] = []

    def until(self, ids: set[str], expected: int, timeout: float = 180) -> list[dict[str, Any]]:
        """Poll until `expected` records of `ids` came and then nothing of theirs for 3 s."""
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            for message in self.consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                value = orjson.loads(message.value())
                if value.get("container", {}).get("id") in ids:
                    self.records.append(value)
                    quiet_since = time.monotonic()
            mine = [r for r in self.records if r["container"]["id"] in ids]
            if len(mine) >= expected and time.monotonic() - quiet_since > 3:
                return mine
        return [r for r in self.records if r["container"]["id"] in ids]


def test_collector_image_ships_under_the_daemonset_context_and_resumes_after_a_restart(
    tmp_path: Path,
    docker_engine: Engine,
    base_image: str,
    logferry_images: dict[str, str],
    kafka_bootstrap: str,
) -> None:
    client = docker_engine.client()
    topic = new_topic(kafka_bootstrap)
    namespace = f"img{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    state.mkdir()
    started: list[Any] = []
    ours = Ours(kafka_bootstrap, topic)
    try:
        first, first_ran = run_workload(
            client, base_image, tmp_path, namespace, "web-0", "before", 300, {}
        )
        started.append(first)
        assert first.wait(timeout=120)["StatusCode"] == 0
        collector = client.containers.run(
            logferry_images["collector"],
            [
                "--sink",
                "kafka",
                "--bootstrap-servers",
                kafka_bootstrap,
                "--topic",
                topic,
                "--kubernetes",
                "off",
                "--metrics-port",
                "0",
                "--checkpoint-interval",
                "0.2",
                "--multiline",
                f"{namespace}/*/*=python",
            ],
            detach=True,
            network_mode="host",
            volumes={
                str(docker_engine.data_root / "containers"): {
                    "bind": "/var/lib/docker/containers",
                    "mode": "ro",
                },
                str(state): {"bind": "/var/lib/logferry", "mode": "rw"},
            },
            **DAEMONSET,
        )
        started.append(collector)
        before = runtime_logs.truth(first_ran.truth)
        got = ours.until({first.id}, sum(before.values()))
        runtime_logs.assert_same(
            "before the restart", Counter((r["stream"], r["message"]) for r in got), before
        )

        collector.restart(timeout=30)
        second, second_ran = run_workload(
            client, base_image, tmp_path, namespace, "web-0", "after", 300, {}
        )
        started.append(second)
        assert second.wait(timeout=120)["StatusCode"] == 0
        after = runtime_logs.truth(second_ran.truth)
        got = ours.until({first.id, second.id}, sum(before.values()) + sum(after.values()))
        for ran, want in ((first_ran, before), (second_ran, after)):
            runtime_logs.assert_same(
                f"{ran.name}, across the collector's restart",
                Counter((r["stream"], r["message"]) for r in got if r["container"]["id"] == ran.id),
                want,
            )
        assert {r["container"]["name"] for r in got} == {first_ran.name, second_ran.name}
        collector.reload()
        assert collector.status == "running", collector.logs()[-3000:]
    finally:
        ours.consumer.close()
        for container in started:
            container.remove(force=True)
        client.close()


def test_collector_image_healthcheck_passes_under_the_daemonset_context(
    tmp_path: Path, docker_engine: Engine, logferry_images: dict[str, str]
) -> None:
    client = docker_engine.client()
    state = tmp_path / "state"
    state.mkdir()
    collector = client.containers.run(
        logferry_images["collector"],
        ["--sink", "file:/var/lib/logferry/records.jsonl", "--kubernetes", "off"],
        detach=True,
        network_mode="none",
        volumes={
            str(docker_engine.data_root / "containers"): {
                "bind": "/var/lib/docker/containers",
                "mode": "ro",
            },
            str(state): {"bind": "/var/lib/logferry", "mode": "rw"},
        },
        **DAEMONSET,
    )
    try:
        wait_healthy(collector)
    finally:
        collector.remove(force=True)
        client.close()


def test_pipeline_image_sets_up_and_indexes_as_non_root_and_is_healthy(
    docker_engine: Engine,
    logferry_images: dict[str, str],
    kafka_bootstrap: str,
    elasticsearch_url: str,
    es: Elasticsearch,
    prefix: str,
) -> None:
    client = docker_engine.client()
    image = logferry_images["pipeline"]
    assert client.images.get(image).attrs["Config"]["User"] == "10001:10001"
    run = f"img{uuid.uuid4().hex[:6]}"
    topic = new_topic(kafka_bootstrap)
    produce(kafka_bootstrap, topic, [record(n, run) for n in range(500)])
    try:
        # As the setup Job: `setup` against Elasticsearch, from the image, exit 0.
        output = client.containers.run(
            image,
            ["setup", "--elasticsearch-url", elasticsearch_url, "--replicas", "0"],
            network_mode="host",
            read_only=True,
            cap_drop=["ALL"],
            remove=True,
        )
        assert b"Traceback" not in output
        pipeline = client.containers.run(
            image,
            [
                "run",
                "--bootstrap-servers",
                kafka_bootstrap,
                "--topic",
                topic,
                "--group",
                f"g-{run}",
                "--dead-letter-topic",
                f"{topic}.dlq",
                "--elasticsearch-url",
                elasticsearch_url,
                "--index",
                prefix + "-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}",
            ],
            detach=True,
            network_mode="host",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
        try:
            assert wait_for_count(es, prefix, 500, timeout=180) == 500
            assert pipeline.top()["Processes"][0][0] in ("10001", "10001\n")
            wait_healthy(pipeline)
        finally:
            pipeline.remove(force=True)
    finally:
        client.close()
