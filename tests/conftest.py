from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import servers


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker."""
    with servers.find_server(
        "KAFKA_BOOTSTRAP_SERVERS",
        "Kafka",
        servers.kafka_reachable,
        servers.kafka_container,
        "kafka.sh",
    ) as address:
        yield address


@pytest.fixture(scope="session")
def elasticsearch_url() -> Iterator[str]:
    """URL of a real Elasticsearch node."""
    with servers.find_server(
        "ELASTICSEARCH_URL",
        "Elasticsearch",
        servers.elasticsearch_reachable,
        servers.elasticsearch_container,
        "elasticsearch.sh",
    ) as address:
        yield address
