"""`--once` and stop signals when the brokers do not acknowledge: a bounded end, an honest exit.

Records the brokers never acknowledged make the exit code non-zero, the last line names the
brokers and the count, and no checkpoint moves past them: the next run delivers them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient, NewTopic

from harness.collector_run import collector_process, consume, new_topic
from tests.integration.test_collector_operations import free_port, get, metric
from tests.unit.logfiles import append, docker_container, docker_line

LINES = 50
DEAD = "127.0.0.1:1"


def node(tmp: Path) -> None:
    log = docker_container(tmp / "docker", "a" * 64)
    append(log, *(docker_line(f"line {n}") for n in range(LINES)))


def checkpoints(tmp: Path) -> list[int]:
    saved = tmp / "state" / "checkpoints.json"
    if not saved.exists():
        return []
    return [entry["offset"] for entry in orjson.loads(saved.read_bytes())["files"].values()]


def once(tmp: Path, bootstrap: str, *flags: str) -> subprocess.Popen[bytes]:
    return collector_process(
        tmp, "--once", "--sink", "kafka", "--bootstrap-servers", bootstrap, *flags
    )


def last_line(tmp: Path) -> str:
    return (tmp / "collector.log").read_text().strip().splitlines()[-1]


def test_once_gives_up_after_the_delivery_timeout_and_the_next_run_delivers(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    node(tmp_path)
    collector = once(tmp_path, DEAD, "--delivery-timeout", "3", "--shutdown-grace", "1")
    try:
        code = collector.wait(120)
    finally:
        if collector.poll() is None:
            collector.kill()
    assert code == 1, (tmp_path / "collector.log").read_text()[-3000:]
    line = last_line(tmp_path)
    assert f"{LINES} records undelivered" in line, line
    assert DEAD in line, line
    assert all(offset == 0 for offset in checkpoints(tmp_path)), "checkpoint past unacked records"

    topic = new_topic(kafka_bootstrap)
    collector = once(tmp_path, kafka_bootstrap, "--topic", topic)
    assert collector.wait(120) == 0, (tmp_path / "collector.log").read_text()[-3000:]
    records = list(consume(kafka_bootstrap, topic, LINES, timeout=60))
    assert [r["message"] for r in records] == [f"line {n}" for n in range(LINES)]


def test_sigint_with_records_undelivered_exits_non_zero_naming_them(tmp_path: Path) -> None:
    node(tmp_path)
    port = free_port()
    collector = once(tmp_path, DEAD, "--metrics-port", str(port), "--shutdown-grace", "1")
    try:
        deadline = time.monotonic() + 60
        produced = 0.0
        while produced < LINES and time.monotonic() < deadline:
            try:
                page = get(port, "/metrics")[1]
                produced = metric(page, "logferry_collector_records_produced_total")
            except OSError:
                produced = 0.0
            time.sleep(0.1)
        assert produced == LINES, "the records were not handed to the producer"
        collector.send_signal(signal.SIGINT)
        code = collector.wait(60)
    finally:
        if collector.poll() is None:
            collector.kill()
    assert code != 0
    line = last_line(tmp_path)
    assert f"{LINES} records undelivered" in line, line
    assert DEAD in line, line
    assert all(offset == 0 for offset in checkpoints(tmp_path))


def test_records_kafka_refuses_in_part_of_a_batch_are_not_counted_delivered(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """One read of 1,500 lines is one batch of 1.25 MB: librdkafka sends it as two record
    sets, and a topic taking 100 kB refuses the first for good (MSG_SIZE_TOO_LARGE) while
    the idempotent producer goes on and delivers the second. Only the batch's last record
    had a report: the run said 1,500 delivered, the checkpoint passed the lot, and 1,214
    records were in no topic."""
    lines = 1500
    log = docker_container(tmp_path / "docker", "b" * 64)
    append(log, *(docker_line(f"n{n} " + os.urandom(50).hex()) for n in range(lines)))
    topic = f"logs-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    limited = NewTopic(topic, 1, 1, config={"max.message.bytes": "100000"})
    admin.create_topics([limited])[topic].result(timeout=30)
    collector = once(tmp_path, kafka_bootstrap, "--topic", topic)
    try:
        code = collector.wait(120)
    finally:
        if collector.poll() is None:
            collector.kill()
    said = (tmp_path / "collector.log").read_text()
    stored = len(list(consume(kafka_bootstrap, topic, lines, timeout=20)))
    assert stored < lines, "the topic took every record: nothing was refused"
    assert code == 1, said[-3000:]
    assert " 0 undelivered" not in last_line(tmp_path), last_line(tmp_path)
    assert checkpoints(tmp_path) == [0], "checkpoint past records Kafka refused"
    assert "MSG_SIZE_TOO_LARGE" in said or "too large" in said.lower(), said[-3000:]
