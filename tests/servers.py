"""Finding the real Kafka, Elasticsearch and Docker engine that integration and e2e tests use.

Order (ARCHITECTURE.md, testing ground rules): addresses given in the environment, else
testcontainers when a Docker engine answers and already holds the server's image (no image
registry is reachable on every machine, so a pull is never the plan), else the local servers
from deploy/local, else skip with the reason -- except under CI=true, where a missing server
fails the run. The Docker engine itself comes from deploy/local/docker.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "deploy" / "local"
KAFKA_IMAGE = "apache/kafka:4.1.1"
ELASTICSEARCH_IMAGE = "elasticsearch:8.19.7"
OTHER_SEARCH = {"elasticsearch9": "ELASTICSEARCH9_URL", "opensearch": "OPENSEARCH_URL"}
"""The other kinds deploy/local/elasticsearch.sh starts (SEARCH=...), and the variable that
gives the URL of one already running instead."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a missing server must never turn into a green run there."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def image_at_hand(image: str) -> bool:
    """True when the engine of DOCKER_HOST answers and holds `image` without pulling it."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.images.get(image)
    except Exception:
        return False
    return True


def kafka_reachable(bootstrap: str) -> str | None:
    """None when a broker answers a metadata request, else why not."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})
    try:
        admin.list_topics(timeout=15)
    except KafkaException as exc:
        return str(exc.args[0])
    return None


def elasticsearch_reachable(url: str) -> str | None:
    """None when the node (Elasticsearch or OpenSearch) reports a usable cluster health, else
    why not. Plain HTTP: elasticsearch-py's own check refuses OpenSearch."""
    health = f"{url.rstrip('/')}/_cluster/health?wait_for_status=yellow&timeout=30s"
    try:
        with urllib.request.urlopen(health, timeout=45) as reply:
            status = json.loads(reply.read()).get("status")
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if status not in ("yellow", "green"):
        return f"cluster health is {status}"
    return None


@contextmanager
def local_server(
    script: str, variable: str, env: dict[str, str] | None = None
) -> Iterator[str | None]:
    """Start deploy/local/<script> for the session; stop it after, unless it was already up.
    `env` is added to this process's environment for the script."""
    path = LOCAL / script
    if shutil.which("java") is None:
        yield None
        return
    environ = {**os.environ, **(env or {})}
    status = subprocess.run([path, "status"], capture_output=True, text=True, env=environ)
    was_up = status.returncode == 0
    started = subprocess.run([path, "start"], capture_output=True, text=True, env=environ)
    if started.returncode != 0:
        unavailable(f"{script} start failed:\n{started.stdout}\n{started.stderr}")
    address = None
    for line in started.stdout.splitlines():
        if line.startswith(f"{variable}="):
            address = line.split("=", 1)[1].strip()
    try:
        yield address
    finally:
        if not was_up:
            subprocess.run([path, "stop"], capture_output=True, env=environ)


@contextmanager
def other_search(kind: str) -> Iterator[str]:
    """URL of an Elasticsearch 9 or OpenSearch node: the one its variable names, else one
    started by `SEARCH=<kind> deploy/local/elasticsearch.sh start` on its own port for the
    session (heap 512m unless ES_HEAP says: it runs beside the Elasticsearch 8 node)."""
    variable = OTHER_SEARCH[kind]
    given = os.environ.get(variable)
    if given:
        why = elasticsearch_reachable(given)
        if why:
            unavailable(f"{kind} at {variable}={given} does not answer: {why}")
        yield given
        return
    env = {"SEARCH": kind, "ES_HEAP": os.environ.get("ES_HEAP", "512m")}
    for name in ("ES_PORT", "ES_TRANSPORT_PORT"):
        # Those of the Elasticsearch 8 node: each kind has its own default ports.
        env[name] = os.environ.get(f"{kind.upper()}_{name}", "")
    with local_server("elasticsearch.sh", "ELASTICSEARCH_URL", env) as address:
        if address is None:
            unavailable(
                f"no {kind}: {variable} is unset and there is no Java to run "
                f"SEARCH={kind} deploy/local/elasticsearch.sh (run `make install`)"
            )
        why = elasticsearch_reachable(address)
        if why:
            unavailable(f"{kind} started by deploy/local/elasticsearch.sh at {address}: {why}")
        yield address


@contextmanager
def find_server(
    variable: str,
    name: str,
    reachable: Callable[[str], str | None],
    container: Callable[[], Iterator[str]],
    script: str,
    image: str,
) -> Iterator[str]:
    given = os.environ.get(variable)
    if given:
        why = reachable(given)
        if why:
            unavailable(f"{name} at {variable}={given} does not answer: {why}")
        yield given
        return
    if image_at_hand(image):
        with contextmanager(container)() as address:
            yield address
        return
    with local_server(script, variable) as address:
        if address is None:
            unavailable(
                f"no {name}: {variable} is unset, no Docker engine holds {image} and "
                f"there is no Java to run deploy/local/{script} (run `make install`)"
            )
        why = reachable(address)
        if why:
            unavailable(
                f"{name} started by deploy/local/{script} at {address} does not answer: {why}"
            )
        yield address


def kafka_container() -> Iterator[str]:
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


def elasticsearch_container() -> Iterator[str]:
    from testcontainers.elasticsearch import ElasticSearchContainer

    with ElasticSearchContainer(ELASTICSEARCH_IMAGE, mem_limit="1g") as es:
        yield es.get_url()


def local_instance(script: str, variable: str, address: str) -> Path:
    """The deploy/local script that runs the server at `address`, or skip (fail in CI)."""
    path = LOCAL / script
    status = subprocess.run([path, "status"], capture_output=True, text=True)
    if status.returncode != 0 or f"{variable}={address}" not in status.stdout:
        unavailable(
            f"this fault test stops and starts the server, which only deploy/local/{script} "
            f"can do; {address} is not the one it runs (LOGFERRY_SERVICES_DIR and ports select it)"
        )
    return path


@dataclass(frozen=True)
class Engine:
    """The Docker engine of deploy/local/docker.sh: its API and the folder it writes logs to."""

    host: str
    """The DOCKER_HOST value of its socket."""
    data_root: Path
    """--data-root: json-file logs are in containers/<id>/<id>-json.log below it."""

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=120)


def local_script(script: str, command: str) -> dict[str, str]:
    """Run deploy/local/<script> <command>; its NAME=value lines, or skip (fail in CI)."""
    done = subprocess.run([LOCAL / script, command], capture_output=True, text=True)
    if done.returncode != 0:
        unavailable(
            f"deploy/local/{script} {command} failed (exit {done.returncode}):\n{done.stderr}"
        )
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def podman(*args: str, timeout: float = 120) -> str:
    """`podman ARGS` with the storage and settings of deploy/local/podman.sh; its stdout."""
    done = subprocess.run(
        [LOCAL / "podman.sh", "run", *args], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout


@contextmanager
def local_engine() -> Iterator[Engine]:
    """Start the local engine for the session; stop it after, unless it was already up."""
    was_up = subprocess.run([LOCAL / "docker.sh", "status"], capture_output=True).returncode == 0
    host = local_script("docker.sh", "start")["DOCKER_HOST"]
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=30)
        root = Path(client.info()["DockerRootDir"])
        client.close()
        yield Engine(host, root)
    finally:
        if not was_up:
            subprocess.run([LOCAL / "docker.sh", "stop"], capture_output=True)


class Outage:
    """Stops a local server, and starts it again after the pause (also if the test failed)."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.down = False
        self.stopped_at = 0.0
        self.started_at = 0.0

    def stop(self) -> None:
        self.down = True
        subprocess.run([self.script, "stop"], check=True, capture_output=True)
        self.stopped_at = time.monotonic()

    def start(self) -> None:
        started = subprocess.run([self.script, "start"], capture_output=True, text=True)
        self.down = False
        self.started_at = time.monotonic()
        assert started.returncode == 0, f"{self.script.name} start failed: {started.stderr}"

    def __call__(self, seconds: float) -> float:
        """Down for `seconds` (from the moment it is stopped); returns the downtime."""
        self.stop()
        time.sleep(seconds)
        self.start()
        return self.started_at - self.stopped_at
