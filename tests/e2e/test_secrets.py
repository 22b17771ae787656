"""Kafka SASL/PLAIN against a real broker listener, and no secret in logs, /metrics or errors.

The shared broker is left alone: a second local Kafka (deploy/local/kafka.sh with its own
LOGFERRY_SERVICES_DIR and ports, the jars of the first) runs with a SASL_PLAINTEXT listener
for this module and is stopped after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from harness.collector_run import REPO, consume, new_topic, start_collector
from harness.nodewriter import NodeWriter, Rotation, default_node
from harness.pipeline_run import pipeline_process
from tests import servers

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class SaslBroker:
    plain: str
    """The PLAINTEXT listener, for setting up and reading back."""
    sasl: str
    password: str

    def client_flags(self, password: str | None = None) -> list[str]:
        return [
            "--kafka",
            "security.protocol=SASL_PLAINTEXT",
            "--kafka",
            "sasl.mechanism=PLAIN",
            "--kafka",
            "sasl.username=logferry",
            "--kafka",
            f"sasl.password={self.password if password is None else password}",
        ]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    state = Path(os.environ.get("LOGFERRY_SERVICES_DIR") or servers.REPO / ".state")
    lib = state / "kafka" / "lib"
    if not (lib / ".pom.sha256").exists():
        servers.unavailable(
            f"the SASL test runs a second local Kafka from the jars in {lib}, which are "
            "missing (make install needs Java 17 and Maven)"
        )
    home = tmp_path_factory.mktemp("sasl-kafka")
    (home / "kafka").mkdir()
    (home / "kafka" / "lib").symlink_to(lib.resolve())
    if (state / "kafka" / "classes").is_dir():
        shutil.copytree(state / "kafka" / "classes", home / "kafka" / "classes")
    plain, controller, sasl = free_ports(3)
    password = f"pw-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "LOGFERRY_SERVICES_DIR": str(home),
        "KAFKA_PORT": str(plain),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_SASL_PORT": str(sasl),
        "KAFKA_SASL_PASSWORD": password,
        "KAFKA_HEAP": "-Xms128m -Xmx384m",
    }
    script = servers.LOCAL / "kafka.sh"
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        subprocess.run([script, "stop"], env=env, capture_output=True)
        servers.unavailable(f"a second local Kafka with SASL did not start:\n{started.stderr}")
    try:
        yield SaslBroker(f"127.0.0.1:{plain}", f"127.0.0.1:{sasl}", password)
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True)


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return reply.read().decode()


def fetch_any(port: int, path: str) -> str:
    try:
        return fetch(port, path)
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def wait_for(path: Path, words: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if any(w in text.lower() for w in words):
            return text
        time.sleep(0.5)
    raise AssertionError(f"none of {words} in {path.name} after {timeout} s:\n{text[-3000:]}")


def plain_specs() -> list:
    """Containers without traces or split lines: records are lines, countable in Kafka."""
    return [s for s in default_node(12) if s.content in ("access", "json", "unicode")][:4]


def test_collector_ships_over_sasl_and_shows_the_password_nowhere(
    tmp_path: Path, sasl_broker: SaslBroker
) -> None:
    topic = new_topic(sasl_broker.plain, partitions=3)
    (metrics_port,) = free_ports(1)
    writer = NodeWriter(tmp_path, plain_specs(), rate=400, docker_rotation=Rotation())
    writer.run(duration=2)
    collector = start_collector(
        tmp_path,
        sasl_broker.sasl,
        topic,
        "--kubernetes",
        "off",
        "--log-level",
        "debug",
        "--metrics-port",
        str(metrics_port),
        *sasl_broker.client_flags(),
    )
    try:
        records = list(consume(sasl_broker.plain, topic, len(writer.records), timeout=60))
        pages = [fetch(metrics_port, p) for p in ("/metrics", "/healthz", "/readyz")]
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(60) == 0
    assert len(records) == len(writer.records)
    # The text as written: event.original when the message was taken from a parsed field.
    texts = sorted(r.get("event", {}).get("original", r["message"]) for r in records)
    assert texts == sorted(r.message for r in writer.records)
    stderr = (tmp_path / "collector.log").read_text()
    for where, text in [
        ("stderr", stderr),
        *zip(("/metrics", "/healthz", "/readyz"), pages, strict=True),
    ]:
        assert sasl_broker.password not in text, f"the password is in the collector's {where}"
    assert "logferry_collector_records_produced" in pages[0]


def test_a_wrong_password_is_reported_without_either_password(
    tmp_path: Path, sasl_broker: SaslBroker
) -> None:
    topic = new_topic(sasl_broker.plain, partitions=3)
    wrong = f"wrong-{uuid.uuid4().hex}"
    (metrics_port,) = free_ports(1)
    writer = NodeWriter(tmp_path, plain_specs()[:1], rate=100, docker_rotation=Rotation())
    writer.run(duration=1)
    collector = start_collector(
        tmp_path,
        sasl_broker.sasl,
        topic,
        "--kubernetes",
        "off",
        "--log-level",
        "debug",
        "--metrics-port",
        str(metrics_port),
        # An authentication failure ends the process after the grace: long enough for
        # /metrics to be read while it lives.
        "--shutdown-grace",
        "15",
        *sasl_broker.client_flags(wrong),
    )
    try:
        stderr = wait_for(tmp_path / "collector.log", ("authentication",), timeout=60)
        metrics = fetch_any(metrics_port, "/metrics")
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(60)
    stderr = (tmp_path / "collector.log").read_text()
    for secret in (wrong, sasl_broker.password):
        assert secret not in stderr
        assert secret not in metrics


def test_a_wrong_password_fails_the_health_probe_and_ends_the_process(
    tmp_path: Path, sasl_broker: SaslBroker
) -> None:
    """Authentication never heals by retrying: the pod must restart (with fixed credentials),
    and the checkpoint stays where the brokers last acknowledged."""
    topic = new_topic(sasl_broker.plain, partitions=3)
    writer = NodeWriter(tmp_path, plain_specs()[:1], rate=100, docker_rotation=Rotation())
    writer.run(duration=1)
    (metrics_port,) = free_ports(1)
    collector = start_collector(
        tmp_path,
        sasl_broker.sasl,
        topic,
        "--kubernetes",
        "off",
        "--metrics-port",
        str(metrics_port),
        # The probe is read during the grace, before the process exits on its own.
        "--shutdown-grace",
        "10",
        *sasl_broker.client_flags(f"wrong-{uuid.uuid4().hex}"),
    )
    try:
        deadline = time.monotonic() + 60
        status, body = 200, ""
        while status == 200 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{metrics_port}/healthz", timeout=10
                ) as reply:
                    status, body = reply.status, reply.read().decode()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read().decode()
            except OSError:
                pass
            time.sleep(0.2)
        assert status == 503, f"/healthz still answers {status} {body!r}"
        assert "authentication" in body.lower(), body
        code = collector.wait(60)
    finally:
        if collector.poll() is None:
            collector.kill()
    assert code != 0
    last = (tmp_path / "collector.log").read_text().strip().splitlines()[-1]
    assert "authentication" in last.lower(), last
    assert sasl_broker.sasl in last, last
    state = tmp_path / "state" / "checkpoints.json"
    saved = orjson.loads(state.read_bytes())["files"] if state.exists() else {}
    assert all(entry["offset"] == 0 for entry in saved.values()), saved


def run_program(tmp: Path, program: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """`python -m collector|pipeline run` that is expected to stop at a setting."""
    command = [sys.executable, "-m", program]
    if program == "collector":
        command += ["--state-dir", str(tmp / "state"), "--kubernetes", "off"]
    else:
        command += ["run", "--elasticsearch-url", "http://127.0.0.1:1"]
    return subprocess.run(
        [*command, "--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "0", *flags],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("program", ["collector", "pipeline"])
def test_kafka_setting_errors_do_not_echo_the_password(tmp_path: Path, program: str) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    for flags in (
        ["--kafka", "security.protocol=SASL_PLAINTEXT", "--kafka", "sasl.mechanism=NOPE"],
        ["--kafka", "no.such.setting=1"],
        ["--kafka", "security.protocol=NOPE"],
    ):
        done = run_program(tmp_path, program, "--kafka", f"sasl.password={secret}", *flags)
        assert done.returncode == 2, done.stderr
        assert "setting kafka" in done.stderr
        assert secret not in done.stderr + done.stdout, f"{flags}: {done.stderr}"


@pytest.mark.parametrize("program", ["collector", "pipeline"])
def test_a_mistyped_kafka_flag_does_not_echo_its_value(tmp_path: Path, program: str) -> None:
    """`--kafka sasl.password:SECRET` (`:` for `=`) is refused, naming the setting only."""
    secret = f"pw-{uuid.uuid4().hex}"
    done = run_program(tmp_path, program, "--kafka", f"sasl.password:{secret}")
    assert done.returncode == 2, done.stderr
    assert "setting kafka" in done.stderr
    assert secret not in done.stderr + done.stdout, done.stderr


def start_pipeline_process(
    tmp: Path, name: str, bootstrap: str, topic: str, es_url: str, *flags: str
) -> subprocess.Popen[bytes]:
    return pipeline_process(
        tmp / f"pipeline-{name}.log",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--group",
        f"g-{name}-{topic}",
        "--elasticsearch-url",
        es_url,
        "--max-backoff",
        "1",
        "--log-level",
        "debug",
        *flags,
    )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def one_record(bootstrap: str, partitions: int = 1) -> str:
    topic = new_topic(bootstrap, partitions=partitions)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, orjson.dumps({"message": "x", "event": {"id": "e-1"}}))
    assert producer.flush(30) == 0
    return topic


def test_pipeline_shows_neither_kafka_password_nor_elasticsearch_key(
    tmp_path: Path, sasl_broker: SaslBroker
) -> None:
    topic = one_record(sasl_broker.plain)
    api_key = f"key-{uuid.uuid4().hex}"
    es_password = f"espw-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    dead_port, right_metrics, wrong_metrics = free_ports(3)
    dead = f"http://127.0.0.1:{dead_port}"
    processes = [
        # The right Kafka password, Elasticsearch unreachable: the bulk fails and is retried.
        start_pipeline_process(
            tmp_path,
            "right",
            sasl_broker.sasl,
            topic,
            dead,
            "--elasticsearch-api-key",
            api_key,
            "--metrics-port",
            str(right_metrics),
            *sasl_broker.client_flags(),
        ),
        # A wrong Kafka password: authentication fails.
        start_pipeline_process(
            tmp_path,
            "wrong",
            sasl_broker.sasl,
            topic,
            dead,
            "--elasticsearch-username",
            "elastic",
            "--elasticsearch-password",
            es_password,
            "--metrics-port",
            str(wrong_metrics),
            *sasl_broker.client_flags(wrong),
        ),
    ]
    try:
        wait_for(tmp_path / "pipeline-right.log", ("retrying",), timeout=60)
        wait_for(tmp_path / "pipeline-wrong.log", ("authentication",), timeout=60)
        metrics = [fetch_any(port, "/metrics") for port in (right_metrics, wrong_metrics)]
    finally:
        stop_all(processes)
    logs = [(tmp_path / f"pipeline-{n}.log").read_text() for n in ("right", "wrong")]
    for secret in (sasl_broker.password, wrong, api_key, es_password):
        for text in logs + metrics:
            assert secret not in text


def test_pipeline_keeps_credentials_in_the_elasticsearch_url_out_of_its_log(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """`http://user:password@host:9200` is a common way to give Elasticsearch credentials."""
    topic = one_record(kafka_bootstrap)
    secret = f"espw-{uuid.uuid4().hex}"
    (dead_port,) = free_ports(1)
    process = start_pipeline_process(
        tmp_path,
        "url",
        kafka_bootstrap,
        topic,
        f"http://elastic:{secret}@127.0.0.1:{dead_port}",
        "--metrics-port",
        "0",
    )
    try:
        wait_for(tmp_path / "pipeline-url.log", ("retrying",), timeout=60)
    finally:
        stop_all([process])
    assert secret not in (tmp_path / "pipeline-url.log").read_text()
