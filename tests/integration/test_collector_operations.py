"""The collector as an operator sees it: backpressure, probes, metrics, SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from pathlib import Path

from harness.collector_run import consume, new_topic, start_collector
from tests.unit.logfiles import append, docker_container, docker_line

LINES = 150_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_broker_away_pauses_reading_in_bounded_memory_and_loses_nothing(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    log = docker_container(tmp_path / "docker", "e" * 64)
    append(log, *(docker_line(f"line {n} " + "x" * 150) for n in range(LINES)))
    port = free_port()
    dead = f"127.0.0.1:{free_port()}"
    collector = start_collector(
        tmp_path, dead, "logs", "--metrics-port", str(port), "--shutdown-grace", "2"
    )
    try:
        # Reading pauses once the producer's queue is full: wait for the count to stand still.
        deadline = time.monotonic() + 120
        read, before = -1.0, -2.0
        while read != before and time.monotonic() < deadline:
            before = read
            time.sleep(2)
            _, metrics = get(port, "/metrics")
            read = metric(metrics, "logferry_collector_read_lines_total")
        status, _ = get(port, "/healthz")
        assert status == 200, "alive while waiting for the broker"
        assert 0 < read < LINES, "reading pauses when the producer queue is full"
        assert rss_mib(collector.pid) < 150
        collector.send_signal(signal.SIGTERM)
        # Within --shutdown-grace (2 s) and the start of the interpreter's exit.
        assert collector.wait(30) == 1, "records undelivered at stop make the exit code 1"
    finally:
        if collector.poll() is None:
            collector.kill()
    topic = new_topic(kafka_bootstrap)
    collector = start_collector(tmp_path, kafka_bootstrap, topic)
    try:
        records = list(consume(kafka_bootstrap, topic, LINES, timeout=120))
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(60) == 0
    assert [r["message"].split(" ")[1] for r in records] == [str(n) for n in range(LINES)]


def test_metrics_and_probes(tmp_path: Path, kafka_bootstrap: str) -> None:
    log = docker_container(tmp_path / "docker", "f" * 64)
    append(log, docker_line("one"), b'{"broken\n', docker_line("two"))
    port = free_port()
    topic = new_topic(kafka_bootstrap)
    collector = start_collector(tmp_path, kafka_bootstrap, topic, "--metrics-port", str(port))
    try:
        assert len(list(consume(kafka_bootstrap, topic, 3, timeout=60))) == 3
        deadline = time.monotonic() + 10
        while get(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert get(port, "/readyz")[0] == 200
        assert get(port, "/healthz")[0] == 200
        _, text = get(port, "/metrics")
        assert metric(text, "logferry_collector_read_lines_total") == 3
        assert metric(text, "logferry_collector_parse_errors_total") == 1
        assert metric(text, "logferry_collector_records_produced_total") == 3
        assert metric(text, "logferry_collector_files_open") == 1
        assert metric(text, "logferry_ready") == 1
        assert "_created" not in text
        # The acknowledgement and the next scan's figure may come just after the records.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            metric(text, "logferry_collector_records_acknowledged_total") != 3
            or metric(text, "logferry_collector_behind_bytes") != 0
        ):
            time.sleep(0.2)
            _, text = get(port, "/metrics")
        assert metric(text, "logferry_collector_records_acknowledged_total") == 3
        assert metric(text, "logferry_collector_behind_bytes") == 0
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(60) == 0
