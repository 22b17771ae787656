"""`make demo-compose` for real: the compose stack on the local engine, records searchable.

deploy/local/compose-demo.sh brings deploy/compose/docker-compose.yml up with the images built
here (Kafka and Elasticsearch from the local servers' jars, the collector and the pipeline from
our Dockerfiles, no registry), its own project name and free host ports; the sample apps' lines
must become searchable documents with their pod's namespace and container, and `down` must
leave no container of the project behind.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch

from tests import servers

pytestmark = pytest.mark.e2e

SCRIPT = servers.LOCAL / "compose-demo.sh"
SEARCHABLE_WITHIN = 300
"""Seconds from `up` to the records looked for: JVMs start slowly on a busy machine."""


@pytest.fixture(scope="module")
def demo(docker_engine: servers.Engine) -> Iterator[tuple[str, str, dict[str, str]]]:
    """The stack of a fresh project: (project, Elasticsearch URL, the script's environment)."""
    project = f"lfdemo{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "DOCKER_HOST": docker_engine.host,
        "DEMO_PROJECT": project,
        "DEMO_KAFKA_PORT": str(servers.free_port()),
        "DEMO_ES_PORT": str(servers.free_port()),
    }
    up = subprocess.run([SCRIPT, "up"], capture_output=True, text=True, env=env)
    try:
        if up.returncode != 0:
            servers.unavailable(f"compose-demo.sh up failed (exit {up.returncode}):\n{up.stderr}")
        urls = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        yield project, urls["ELASTICSEARCH_URL"], env
    finally:
        subprocess.run([SCRIPT, "down"], capture_output=True, text=True, env=env)


def project_containers(engine: servers.Engine, project: str) -> list[str]:
    client = engine.client()
    try:
        found = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
        return [container.name for container in found]
    finally:
        client.close()


def namespaces(es: Elasticsearch) -> dict[str, set[str]]:
    """{namespace: its container names} over the demo's logferry-* indices, once refreshed."""
    es.indices.refresh(index="logferry-*", ignore_unavailable=True, allow_no_indices=True)
    found = es.search(
        index="logferry-*",
        size=0,
        ignore_unavailable=True,
        allow_no_indices=True,
        aggs={
            "ns": {
                "terms": {"field": "kubernetes.namespace"},
                "aggs": {"c": {"terms": {"field": "kubernetes.container.name"}}},
            }
        },
    )
    buckets = found.get("aggregations", {}).get("ns", {}).get("buckets", [])
    return {b["key"]: {c["key"] for c in b["c"]["buckets"]} for b in buckets}


def java_traces(es: Elasticsearch) -> int:
    """Shop records holding a whole trace: `at` frames, `Caused by`, `... N more`."""
    found = es.count(
        index="logferry-*",
        ignore_unavailable=True,
        allow_no_indices=True,
        query={
            "bool": {
                "filter": [
                    {"term": {"kubernetes.namespace": "shop"}},
                    {"match_phrase": {"message": "Caused by"}},
                    {"match": {"message": "at"}},
                    {"match": {"message": "more"}},
                ]
            }
        },
    )
    return int(found["count"])


# The fixture may build every image cold (about four minutes) before the stack starts.
@pytest.mark.timeout(1200)
def test_the_compose_demo_ships_the_sample_apps_into_elasticsearch_and_goes_away(
    docker_engine: servers.Engine, demo: tuple[str, str, dict[str, str]]
) -> None:
    project, url, env = demo
    running = project_containers(docker_engine, project)
    for service in ("kafka", "elasticsearch", "collector", "pipeline", "checkout", "frontend"):
        assert any(f"_{service}_" in name or f"-{service}-" in name for name in running), (
            service,
            running,
        )
    es = Elasticsearch(url, request_timeout=30)
    want = {"shop": {"checkout"}, "web": {"nginx"}}
    seen: dict[str, set[str]] = {}
    traces = 0
    try:
        deadline = time.monotonic() + SEARCHABLE_WITHIN
        while time.monotonic() < deadline:
            seen = namespaces(es)
            traces = java_traces(es)
            if traces and all(want[ns] <= seen.get(ns, set()) for ns in want):
                break
            time.sleep(2)
    finally:
        es.close()
    assert all(want[ns] <= seen.get(ns, set()) for ns in want), seen
    assert traces, "no Java stack trace of checkout joined into one record"
    down = subprocess.run([SCRIPT, "down"], capture_output=True, text=True, env=env)
    assert down.returncode == 0, down.stderr
    assert project_containers(docker_engine, project) == []
