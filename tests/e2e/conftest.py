"""Fixtures of the end-to-end tests: Elasticsearch with templates, flows, server outages.

Bigger variants carry the `long` marker and run only with LOGFERRY_LONG=1 (`make test-long`).
The outage fixtures stop and start the local servers of deploy/local through their scripts,
with this process's environment: LOGFERRY_SERVICES_DIR, KAFKA_PORT, ES_PORT... select which
instance, so a run against a private pair of servers leaves the shared ones alone.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from pipeline.setup import install_templates
from tests import servers
from tests.e2e.flow import RESULTS, Flow


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "long: bigger end-to-end variants; run with LOGFERRY_LONG=1 (make test-long)"
    )


def long_runs() -> bool:
    return os.environ.get("LOGFERRY_LONG", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if long_runs():
        return
    skip = pytest.mark.skip(reason="a long variant: set LOGFERRY_LONG=1 (make test-long)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("end to end: records written, found, lost, doubled")
    for outcome in RESULTS:
        terminalreporter.write_line(outcome.line())


@pytest.fixture(scope="session")
def es(elasticsearch_url: str) -> Iterator[Elasticsearch]:
    client = Elasticsearch(elasticsearch_url, request_timeout=60)
    install_templates(client, say=lambda _: None)
    yield client
    client.close()


@pytest.fixture
def prefix(es: Elasticsearch) -> Iterator[str]:
    name = f"logferry-e{uuid.uuid4().hex[:8]}"
    yield name
    es.indices.delete(index=f"{name}-*", allow_no_indices=True, ignore_unavailable=True)


@pytest.fixture
def flows(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> Iterator[Callable[..., Flow]]:
    """make(name, specs, rate=..., ...) -> Flow in tmp_path; stopped after the test."""
    made: list[Flow] = []

    def make(name: str, specs: list[Any], **kwargs: Any) -> Flow:
        flow = Flow(name, tmp_path, kafka_bootstrap, elasticsearch_url, es, prefix, specs, **kwargs)
        made.append(flow)
        return flow

    yield make
    for flow in made:
        flow.stop()


def local_instance(script: str, variable: str, address: str) -> Path:
    """The deploy/local script that runs the server at `address`, or skip (fail in CI)."""
    path = servers.LOCAL / script
    status = subprocess.run([path, "status"], capture_output=True, text=True)
    if status.returncode != 0 or f"{variable}={address}" not in status.stdout:
        servers.unavailable(
            f"this fault test stops and starts the server, which only deploy/local/{script} "
            f"can do; {address} is not the one it runs (LOGFERRY_SERVICES_DIR and ports select it)"
        )
    return path


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


@pytest.fixture
def kafka_outage(kafka_bootstrap: str) -> Iterator[Outage]:
    outage = Outage(local_instance("kafka.sh", "KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap))
    yield outage
    if outage.down:
        outage.start()


@pytest.fixture
def elasticsearch_outage(elasticsearch_url: str) -> Iterator[Outage]:
    outage = Outage(local_instance("elasticsearch.sh", "ELASTICSEARCH_URL", elasticsearch_url))
    yield outage
    if outage.down:
        outage.start()
