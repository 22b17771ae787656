"""The local Docker engine of deploy/local/docker.sh, and what its presence changes.

The engine runs wherever `make test` runs as root on Debian (CI included: there a missing
engine fails the run). Starting it must not send the Kafka and Elasticsearch fixtures to
testcontainers, whose images no registry here can provide.
"""

from __future__ import annotations

import subprocess

import pytest

from tests import servers
from tests.servers import Engine

pytestmark = pytest.mark.e2e


def test_a_second_start_leaves_the_running_engine_and_its_containers_alone(
    docker_engine: Engine, base_image: str
) -> None:
    client = docker_engine.client()
    running = client.containers.run(base_image, ["sleep", "300"], network_mode="none", detach=True)
    try:
        again = subprocess.run(
            [servers.LOCAL / "docker.sh", "start"], capture_output=True, text=True, check=True
        )
        assert again.stdout.strip() == f"DOCKER_HOST={docker_engine.host}"
        running.reload()
        assert running.status == "running"
        status = subprocess.run([servers.LOCAL / "docker.sh", "status"], capture_output=True)
        assert status.returncode == 0
    finally:
        running.remove(force=True)
        client.close()


def test_the_base_image_runs_python_from_debian(docker_engine: Engine, base_image: str) -> None:
    client = docker_engine.client()
    try:
        output = client.containers.run(
            base_image,
            ["python3", "-c", "import sys, ssl; print(sys.version_info[:2], ssl.OPENSSL_VERSION)"],
            network_mode="none",
            remove=True,
        )
    finally:
        client.close()
    assert b"(3, 11)" in output
    assert b"OpenSSL" in output


def test_an_answering_engine_without_the_server_images_leaves_the_local_servers_in_charge(
    docker_engine: Engine, base_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    assert not servers.image_at_hand(servers.KAFKA_IMAGE)
    assert not servers.image_at_hand(servers.ELASTICSEARCH_IMAGE)
    client = docker_engine.client()
    stand_in = "logferry-test/stand-in:for-image-at-hand"
    try:
        client.images.get(base_image).tag(stand_in)
        assert servers.image_at_hand(stand_in)
    finally:
        client.images.remove(stand_in)
        client.close()
