"""What the pipeline says at start when Elasticsearch is wrong: one line in its log however
often it tries again, and the same reason in /readyz."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import produce, record, start_pipeline, wait_for_count
from tests.integration.es_proxy import proxy
from tests.integration.test_pipeline import stop
from tests.integration.test_pipeline_dead_letters import free_port, readyz, until


def log_lines(tmp: Path) -> list[dict[str, str]]:
    lines: list[dict[str, str]] = []
    for path in tmp.glob("pipeline-*.log"):
        for line in path.read_bytes().splitlines():
            if line.startswith(b"{"):
                lines.append(orjson.loads(line))
    return lines


@contextmanager
def hang_up() -> Iterator[tuple[str, Callable[[], int]]]:
    """A URL where something listens but closes every connection unanswered, as a wrong
    port does, and how many connections it took."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken = [0]

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            taken[0] += 1
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", lambda: taken[0]
    finally:
        listener.close()


def test_a_wrong_elasticsearch_url_is_said_once_and_in_readyz(
    tmp_path: Path, kafka_bootstrap: str, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    port = free_port()
    with hang_up() as (url, taken):
        pipeline = start_pipeline(
            tmp_path, kafka_bootstrap, url, topic, prefix, "--metrics-port", str(port)
        )
        try:
            until(lambda: taken() >= 6, 60, "several attempts")
            status, body = readyz(port)
        finally:
            stop(pipeline)
    assert status == 503
    assert f"Elasticsearch at {url} cannot be reached" in body, body
    lines = log_lines(tmp_path)
    said = [line for line in lines if "cannot be reached" in line["message"]]
    assert len(said) == 1, said
    assert said[0]["level"] == "warning"
    assert [line for line in lines if line["logger"].startswith(("elastic", "urllib3"))] == []


def test_missing_templates_hold_the_start_until_setup_installs_them(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    topic = new_topic(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(100)])
    port = free_port()
    with proxy(elasticsearch_url, lambda _id, _before: False) as (url, state):
        state.hidden = {"logferry", "logferry-ds"}
        pipeline = start_pipeline(
            tmp_path, kafka_bootstrap, url, topic, prefix, "--metrics-port", str(port)
        )
        try:
            until(lambda: state.hidden_asked >= 8, 60, "several checks")
            status, body = readyz(port)
            assert status == 503
            assert "lacks the index templates logferry, logferry-ds" in body, body
            assert "python -m pipeline setup" in body
            assert es.count(index=f"{prefix}-*", allow_no_indices=True)["count"] == 0
            state.hidden = set()
            assert wait_for_count(es, prefix, 100, timeout=60) == 100
            until(lambda: readyz(port)[0] == 200, 60, "ready")
        finally:
            stop(pipeline)
    said = [line for line in log_lines(tmp_path) if "lacks the index templates" in line["message"]]
    assert len(said) == 1, said


def test_kafka_away_is_said_in_readyz_until_a_broker_answers(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, prefix: str
) -> None:
    """With no broker reachable nothing is read: /readyz said ready all the same."""
    port = free_port()
    pipeline = start_pipeline(
        tmp_path, f"127.0.0.1:{free_port()}", elasticsearch_url, "logs-away", prefix,
        "--metrics-port", str(port),
    )  # fmt: skip
    try:
        until(lambda: readyz(port)[0] == 503 and "kafka" in readyz(port)[1], 60, "kafka named")
    finally:
        stop(pipeline)
    topic = new_topic(kafka_bootstrap, partitions=1)
    port = free_port()
    pipeline = start_pipeline(
        tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix, "--metrics-port", str(port)
    )
    try:
        until(lambda: readyz(port)[0] == 200, 60, "ready with the broker there")
    finally:
        stop(pipeline)
