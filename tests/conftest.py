"""Fixtures every test with servers uses: the servers, templates, index prefixes, outages,
and the local Docker engine and podman with their Debian base image.

The outage fixtures stop and start the local servers of deploy/local through their scripts,
with this process's environment: LOGFERRY_SERVICES_DIR, KAFKA_PORT, ES_PORT... select which
instance, so a run against a private pair of servers leaves the shared ones alone.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from elasticsearch import Elasticsearch

from pipeline.backend import connect, kind
from pipeline.setup import install_templates
from pipeline.templates import SINGLE_NODE
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
        servers.KAFKA_IMAGE,
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
        servers.ELASTICSEARCH_IMAGE,
    ) as address:
        yield address


@pytest.fixture(scope="session")
def es(elasticsearch_url: str) -> Iterator[Elasticsearch]:
    """A client of the real Elasticsearch, with logferry's templates installed."""
    client = Elasticsearch(elasticsearch_url, request_timeout=60)
    install_templates(client, SINGLE_NODE, say=lambda _: None)
    yield client
    client.close()


@dataclass(frozen=True)
class Search:
    """One search server of the backend matrix."""

    name: str
    """elasticsearch8, elasticsearch9 or opensearch"""
    url: str
    client: Elasticsearch
    """pipeline's own client of it, with logferry's templates installed"""


@pytest.fixture(scope="session")
def elasticsearch9_url() -> Iterator[str]:
    """URL of a real Elasticsearch 9 node (ELASTICSEARCH9_URL, else started for the session)."""
    with servers.other_search("elasticsearch9") as url:
        yield url


@pytest.fixture(scope="session")
def opensearch_url() -> Iterator[str]:
    """URL of a real OpenSearch node (OPENSEARCH_URL, else started for the session)."""
    with servers.other_search("opensearch") as url:
        yield url


SEARCH_URLS = {
    "elasticsearch8": "elasticsearch_url",
    "elasticsearch9": "elasticsearch9_url",
    "opensearch": "opensearch_url",
}
"""Each server of the backend matrix, and the fixture that gives its URL."""


@pytest.fixture(scope="session", params=list(SEARCH_URLS))
def search(request: pytest.FixtureRequest) -> Iterator[Search]:
    """Each search server the pipeline supports in turn: the Elasticsearch 8 of `es`, then an
    Elasticsearch 9 and an OpenSearch node (deploy/local/elasticsearch.sh with SEARCH=...)."""
    url = request.getfixturevalue(SEARCH_URLS[request.param])
    client = connect(url, request_timeout=60)
    expected = "opensearch" if request.param == "opensearch" else "elasticsearch"
    assert kind(client) == expected, f"{url} is not {request.param}"
    install_templates(client, SINGLE_NODE, say=lambda _: None)
    yield Search(request.param, url, client)
    client.close()


@pytest.fixture
def search_prefix(search: Search) -> Iterator[str]:
    """A fresh index prefix on the matrix's server, deleted after the test."""
    name = f"logferry-t{uuid.uuid4().hex[:8]}"
    yield name
    search.client.indices.delete(index=f"{name}-*", allow_no_indices=True, ignore_unavailable=True)


@pytest.fixture
def prefix(es: Elasticsearch) -> Iterator[str]:
    """A fresh index prefix under the logferry template, deleted after the test."""
    name = f"logferry-t{uuid.uuid4().hex[:8]}"
    yield name
    es.indices.delete(index=f"{name}-*", allow_no_indices=True, ignore_unavailable=True)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[servers.Engine]:
    """A real Docker engine (deploy/local/docker.sh), started for the session if it was not up."""
    with servers.local_engine() as engine:
        yield engine


@pytest.fixture(scope="session")
def base_image(docker_engine: servers.Engine) -> str:
    """A Debian bookworm image with python3 in that engine, built from Debian packages."""
    return servers.local_script("docker.sh", "base")["LOGFERRY_BASE_IMAGE"]


@pytest.fixture(scope="session")
def logferry_images(docker_engine: servers.Engine) -> dict[str, str]:
    """Our images built by deploy/local/images.sh on the Debian base: {"collector": name, ...}."""
    lines = servers.local_script("images.sh", "build")
    return {name: lines[f"LOGFERRY_{name.upper()}_IMAGE"] for name in ("collector", "pipeline")}


@pytest.fixture(scope="session")
def podman_base_image() -> str:
    """The same Debian base in podman's storage (deploy/local/podman.sh), for CRI-format logs."""
    return servers.local_script("podman.sh", "base")["LOGFERRY_BASE_IMAGE"]


@pytest.fixture
def kafka_outage(kafka_bootstrap: str) -> Iterator[servers.Outage]:
    outage = servers.Outage(
        servers.local_instance("kafka.sh", "KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    )
    yield outage
    if outage.down:
        outage.start()


@pytest.fixture
def elasticsearch_outage(elasticsearch_url: str) -> Iterator[servers.Outage]:
    outage = servers.Outage(
        servers.local_instance("elasticsearch.sh", "ELASTICSEARCH_URL", elasticsearch_url)
    )
    yield outage
    if outage.down:
        outage.start()


@pytest.fixture(scope="session")
def kube() -> Iterator[servers.Kube]:
    """A real etcd and kube-apiserver (deploy/local/kube.sh), started for the session if it
    was not up; waits for the build `make install` started."""
    with servers.kube_server() as server:
        yield server


@pytest.fixture(scope="session")
def cluster(
    kube: servers.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.Cluster]:
    """The real API server with deploy/kubernetes/base/rbac.yaml applied in `logging`, and a
    kubeconfig holding only the logferry-collector ServiceAccount's token."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from harness import kube_cluster as kc

    api = kc.admin_client(kube.kubeconfig)
    core = client.CoreV1Api(api)
    try:
        kc.create_namespace(core, "logging", {})
    except ApiException as exc:
        if exc.status != 409:  # left by an earlier session on a server that stayed up
            raise
    applied = subprocess.run(
        [kube.kubectl, "--kubeconfig", kube.kubeconfig, "apply", "-n", "logging", "-f", kc.RBAC],
        capture_output=True,
        text=True,
    )
    assert applied.returncode == 0, applied.stderr
    token = kc.service_account_token(core, "logging", "logferry-collector")
    path = kc.token_kubeconfig(
        kube.kubeconfig, token, tmp_path_factory.mktemp("collector") / "kubeconfig"
    )
    yield servers.Cluster(kube, core, client.AppsV1Api(api), path)
    api.close()
