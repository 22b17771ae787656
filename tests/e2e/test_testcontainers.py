"""The end-to-end scenario against Kafka and Elasticsearch containers (testcontainers).

Runs only where a Docker engine (DOCKER_HOST) answers and already holds both images, since no
image registry can be counted on; elsewhere it is skipped with that reason (also under CI=true:
the other e2e tests cover the flow with the local servers there).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from harness.flow import Flow
from harness.nodewriter import Rotation, default_node
from pipeline.setup import install_templates
from pipeline.templates import SINGLE_NODE
from tests import servers

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def containers() -> Iterator[tuple[str, str]]:
    missing = [
        image
        for image in (servers.KAFKA_IMAGE, servers.ELASTICSEARCH_IMAGE)
        if not servers.image_at_hand(image)
    ]
    if missing:
        pytest.skip(f"no Docker engine holds {', '.join(missing)}: this variant never pulls")
    with (
        contextlib.contextmanager(servers.kafka_container)() as kafka,
        contextlib.contextmanager(servers.elasticsearch_container)() as elasticsearch,
    ):
        yield kafka, elasticsearch


def test_every_record_once_through_kafka_and_elasticsearch_containers(
    tmp_path: Path, containers: tuple[str, str]
) -> None:
    bootstrap, url = containers
    es = Elasticsearch(url, request_timeout=60)
    install_templates(es, SINGLE_NODE, say=lambda _: None)
    prefix = f"logferry-c{uuid.uuid4().hex[:8]}"
    flow = Flow(
        "testcontainers, no fault",
        tmp_path,
        bootstrap,
        url,
        es,
        prefix,
        default_node(12, 11),
        rate=1000,
        docker_rotation=Rotation(max_bytes=512 * 1024, max_files=5),
        cri_rotation=Rotation(max_bytes=768 * 1024, max_files=5),
        seed=11,
    )
    try:
        flow.start(pipelines=2, duration=10)
        outcome = flow.check()
        flow.assert_exactly_once(outcome)
    finally:
        flow.stop()
        es.close()
