"""Fixtures of the end-to-end tests: flows, the `long` variants, the summary of outcomes.

Bigger variants carry the `long` marker and run only with LOGFERRY_LONG=1 (`make test-long`).
Elasticsearch with templates, index prefixes and server outages come from tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from harness.flow import RESULTS, Flow


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "long: bigger end-to-end variants; run with LOGFERRY_LONG=1 (make test-long)"
    )


def long_runs() -> bool:
    return os.environ.get("LOGFERRY_LONG", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if long_runs():
        return
    # Deselected rather than skipped: `make test` reports no skip for what it never meant to run.
    long = [item for item in items if "long" in item.keywords]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if "long" not in item.keywords]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("end to end: records written, found, lost, doubled")
    for outcome in RESULTS:
        terminalreporter.write_line(outcome.line())


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
