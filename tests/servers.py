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
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kubernetes import client

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "deploy" / "local"
KAFKA_IMAGE = "apache/kafka:4.1.1"
ELASTICSEARCH_IMAGE = "elasticsearch:8.19.7"
CONTAINER_START_TIMEOUT = 300
"""Seconds a server container may take to answer: JVMs start slowly on a busy machine."""
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


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def container_network() -> Iterator[Any]:
    """A network of its own for server containers, with the reaper off where its image is missing.

    An engine need not have the default bridge (deploy/local/docker.sh runs with --bridge=none),
    and the reaper (Ryuk) would be pulled from a registry that may not answer.
    """
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.network import Network

    if not image_at_hand(testcontainers_config.ryuk_image):
        testcontainers_config.ryuk_disabled = True
    with Network() as network:
        yield network


def kafka_container(image: str = KAFKA_IMAGE) -> Iterator[str]:
    """One KRaft node of `image` (apache/kafka, or deploy/local/server-images.sh's): its bootstrap.

    A plain container, not testcontainers' KafkaContainer, which reads the tag as a Confluent
    Platform version. Both images take their settings as KAFKA_* variables; clients reach the
    HOST listener through a host port chosen before the start, since it must be advertised.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = free_port()
    with container_network() as network:
        kafka = (
            DockerContainer(image)
            .with_network(network)
            .with_bind_ports(9092, port)
            .with_envs(
                KAFKA_NODE_ID="1",
                KAFKA_PROCESS_ROLES="broker,controller",
                KAFKA_LISTENERS="HOST://:9092,BROKER://:19092,CONTROLLER://:9093",
                KAFKA_ADVERTISED_LISTENERS=f"HOST://127.0.0.1:{port},BROKER://localhost:19092",
                KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=(
                    "HOST:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
                ),
                KAFKA_INTER_BROKER_LISTENER_NAME="BROKER",
                KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
                KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
                KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
                KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
                KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
                KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
                KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
                KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            )
            .waiting_for(
                LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(
                    CONTAINER_START_TIMEOUT
                )
            )
        )
        with kafka:
            yield f"127.0.0.1:{port}"


def elasticsearch_container(image: str = ELASTICSEARCH_IMAGE) -> Iterator[str]:
    """One node of `image` (elasticsearch or server-images.sh's), security off: its URL."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import HttpWaitStrategy

    with container_network() as network:
        es = (
            DockerContainer(image)
            .with_network(network)
            .with_exposed_ports(9200)
            .with_envs(
                **{
                    "discovery.type": "single-node",
                    "xpack.security.enabled": "false",
                    "ES_JAVA_OPTS": "-Xms512m -Xmx1g",
                }
            )
            .waiting_for(
                HttpWaitStrategy(9200, "/_cluster/health?wait_for_status=yellow&timeout=1s")
                .for_status_code(200)
                .with_startup_timeout(CONTAINER_START_TIMEOUT)
            )
        )
        with es:
            yield f"http://{es.get_container_host_ip()}:{es.get_exposed_port(9200)}"


def container_images() -> tuple[str, str]:
    """Kafka and Elasticsearch images for testcontainers in the engine of DOCKER_HOST.

    The official ones where the engine holds them, else the ones deploy/local/server-images.sh
    builds from the local servers' Maven jars (no registry needed), or skip (fail in CI).
    """
    if image_at_hand(KAFKA_IMAGE) and image_at_hand(ELASTICSEARCH_IMAGE):
        return KAFKA_IMAGE, ELASTICSEARCH_IMAGE
    built = local_script("server-images.sh", "build")
    return built["LOGFERRY_KAFKA_IMAGE"], built["LOGFERRY_ELASTICSEARCH_IMAGE"]


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


@dataclass(frozen=True)
class Kube:
    """The real etcd and kube-apiserver of deploy/local/kube.sh, as the tests reach them."""

    kubeconfig: Path
    """An admin (system:masters) kubeconfig."""
    api_url: str
    etcd_url: str
    """etcd's client URL: the tests compact its history to expire watches."""
    audit_log: Path
    """Every request's metadata, one JSON event per line: what the tests count."""
    kubectl: Path
    script: Path


@contextmanager
def kube_server() -> Iterator[Kube]:
    """deploy/local/kube.sh for the session (KUBE_API_PORT, KUBE_ETCD_PORT and
    LOGFERRY_SERVICES_DIR select the instance); stopped after unless it was already up. The
    script waits for a build that `make install` started in the background."""
    script = LOCAL / "kube.sh"
    was_up = subprocess.run([script, "status"], capture_output=True).returncode == 0
    started = subprocess.run([script, "start"], capture_output=True, text=True)
    if started.returncode != 0:
        if not was_up:  # etcd may be up when kube-apiserver could not start
            subprocess.run([script, "stop"], capture_output=True)
        unavailable(
            f"deploy/local/kube.sh start failed (exit {started.returncode}; run `make install`):\n"
            f"{started.stderr[-4000:]}"
        )
    lines = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    try:
        yield Kube(
            kubeconfig=Path(lines["KUBECONFIG"]),
            api_url=lines["KUBE_API_URL"],
            etcd_url=lines["KUBE_ETCD_URL"],
            audit_log=Path(lines["KUBE_AUDIT_LOG"]),
            kubectl=Path(lines["KUBECTL"]),
            script=script,
        )
    finally:
        if not was_up:
            subprocess.run([script, "stop"], capture_output=True)


@dataclass(frozen=True)
class Cluster:
    """The real API server with deploy/kubernetes/base/rbac.yaml applied in `logging`."""

    kube: Kube
    core: client.CoreV1Api
    """As the admin (system:masters): what the tests do in the controllers' place."""
    apps: client.AppsV1Api
    collector_kubeconfig: Path
    """The logferry-collector ServiceAccount's token (TokenRequest API), nothing else."""
