"""A fatal Kafka error, against the real Kafka: both programs say it in one line and exit 1.

The listener that is no broker's is the local Kafka's KRaft controller listener (the
mistake of a port off by one): every broker there refuses the idempotent producer, which
confluent-kafka raises from poll and flush rather than handing to the error callback. It
gave a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.logfiles import append, cri_line

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def controller(kafka_bootstrap: str) -> str:
    host, _, port = kafka_bootstrap.rpartition(":")
    if port != os.environ.get("KAFKA_PORT", "19092"):
        pytest.skip("the controller listener is known only for the local Kafka of kafka.sh")
    return f"{host}:{os.environ.get('KAFKA_CONTROLLER_PORT', '19093')}"


def program(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        timeout=120,
        text=True,
    )


def test_the_collector_says_a_fatal_kafka_error_in_one_line(
    tmp_path: Path, controller: str
) -> None:
    pod = tmp_path / "log" / "pods" / "ns_pod_uid" / "app"
    pod.mkdir(parents=True)
    append(pod / "0.log", cri_line("one"), cri_line("two"))
    done = program(
        "collector", "--once", "--bootstrap-servers", controller, "--docker-root",
        str(tmp_path / "docker"), "--log-root", str(tmp_path / "log"), "--state-dir",
        str(tmp_path / "state"), "--metrics-port", "0", "--delivery-timeout", "30",
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("collector: 2 records undelivered"), last
    assert "kafka fatal error" in last


def test_the_pipeline_says_a_fatal_kafka_error_in_one_line(
    controller: str, elasticsearch_url: str
) -> None:
    done = program(
        "pipeline", "run", "--bootstrap-servers", controller, "--elasticsearch-url",
        elasticsearch_url, "--metrics-port", "0", "--topic", "fatal-test",
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("pipeline: kafka fatal error: "), done.stderr
