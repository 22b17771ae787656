"""One log line per distinct trouble, with how often it was seen; /readyz's reason."""

from __future__ import annotations

import logging

import pytest

from pipeline.readiness import Readiness


def test_a_trouble_seen_again_and_again_is_logged_once_then_summed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    health = Readiness()
    health.ready = True
    assert health.reason() is None
    for n in range(5):
        text = f"cannot reach <urllib3.connection.HTTPConnection object at 0x7f{n:04x}>: refused"
        health.problem("elasticsearch", text)
    health.problem("dead-letter topic", "topic logs.dlq refuses letters: missing", "3")
    health.problem("dead-letter topic", "topic logs.dlq refuses letters: still missing", "3")
    assert health.reason() == (
        "cannot reach <urllib3.connection.HTTPConnection>: refused; "
        "topic logs.dlq refuses letters: still missing"
    )
    health.solved("elasticsearch")
    health.solved("dead-letter topic")
    assert health.reason() is None
    assert [r.getMessage() for r in caplog.records] == [
        "cannot reach <urllib3.connection.HTTPConnection>: refused",
        "topic logs.dlq refuses letters: missing",
        "elasticsearch: trouble over, seen 5 times",
        "dead-letter topic: trouble over, seen 2 times",
    ]


def test_a_new_kind_of_trouble_is_logged_with_the_count_of_the_old_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    health = Readiness()
    health.problem("elasticsearch", "Elasticsearch answered 503", "503")
    health.problem("elasticsearch", "Elasticsearch answered 503", "503")
    health.problem("elasticsearch", "Elasticsearch answered 401", "401")
    assert health.reason() == "Elasticsearch answered 401"
    assert [r.getMessage() for r in caplog.records] == [
        "Elasticsearch answered 503",
        "elasticsearch: trouble changed, seen 2 times",
        "Elasticsearch answered 401",
    ]


def test_not_ready_before_the_first_turn_says_so() -> None:
    assert Readiness().reason() == "starting"
