"""The end-to-end scenario against Kafka and Elasticsearch containers (testcontainers).

The containers run in the engine of deploy/local/docker.sh, from the official images where that
engine holds them, else from the images deploy/local/server-images.sh builds out of the local
servers' Maven jars: no registry is needed, so under CI=true this runs (a missing engine fails).
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
def containers(docker_engine: servers.Engine) -> Iterator[tuple[str, str]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", docker_engine.host)
        kafka_image, elasticsearch_image = servers.container_images()
        with (
            contextlib.contextmanager(servers.kafka_container)(kafka_image) as kafka,
            contextlib.contextmanager(servers.elasticsearch_container)(
                elasticsearch_image
            ) as elasticsearch,
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
