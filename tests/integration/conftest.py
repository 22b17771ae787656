from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest
from elasticsearch import Elasticsearch

from pipeline.setup import install_templates
from tests import servers


@pytest.fixture(scope="session")
def es(elasticsearch_url: str) -> Iterator[Elasticsearch]:
    client = Elasticsearch(elasticsearch_url, request_timeout=60)
    install_templates(client, say=lambda _: None)
    yield client
    client.close()


@pytest.fixture
def prefix(es: Elasticsearch) -> Iterator[str]:
    """A fresh index prefix under the logferry template, deleted after the test."""
    name = f"logferry-t{uuid.uuid4().hex[:8]}"
    yield name
    es.indices.delete(index=f"{name}-*", allow_no_indices=True, ignore_unavailable=True)


@pytest.fixture
def elasticsearch_outage(elasticsearch_url: str) -> Callable[[float], None]:
    """Stops the local Elasticsearch for a while and starts it again.

    Only the local server of deploy/local can be stopped from a test; where the suite was
    given an address or a container, this fault test cannot run (and says so).
    """
    script = servers.LOCAL / "elasticsearch.sh"
    status = subprocess.run([script, "status"], capture_output=True, text=True)
    if status.returncode != 0 or elasticsearch_url not in status.stdout:
        servers.unavailable("the Elasticsearch outage test needs the local server of deploy/local")

    def outage(seconds: float) -> None:
        import time

        subprocess.run([script, "stop"], check=True, capture_output=True)
        time.sleep(seconds)
        subprocess.run([script, "start"], check=True, capture_output=True)

    return outage
