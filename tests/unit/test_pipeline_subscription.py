"""The pipeline's subscription: a topic or a ^pattern, never one that reads its dead letters."""

from __future__ import annotations

import pytest

from logferry.settings import SettingError
from pipeline.config import parse, subscribes

BASE = ["run", "--bootstrap-servers", "127.0.0.1:9", "--elasticsearch-url", "http://127.0.0.1:9"]


@pytest.mark.parametrize(
    ("topic", "dead_letters"),
    [
        ("^logs\\..*", "logs.dlq"),
        ("^logs\\..*", "logs.anything"),
        ("^.*", "dead"),
        ("logs", "logs"),
    ],
)
def test_a_dead_letter_topic_the_subscription_reads_is_refused_at_start(
    topic: str, dead_letters: str
) -> None:
    with pytest.raises(SettingError, match=r"setting dead_letter_topic: .* is read by --topic"):
        parse([*BASE, "--topic", topic, "--dead-letter-topic", dead_letters])


def test_the_documented_pattern_with_a_dead_letter_topic_beside_it_starts() -> None:
    config = parse([*BASE, "--topic", "^logs\\..*", "--dead-letter-topic", "logs-dlq"])
    assert (config.topic, config.dead_letter_topic) == ("^logs\\..*", "logs-dlq")
    assert config.metadata_refresh == 5.0


def test_a_pattern_that_is_no_regular_expression_is_refused() -> None:
    with pytest.raises(SettingError, match=r"setting topic \(flag\): is not a regular expression"):
        parse([*BASE, "--topic", "^logs(", "--dead-letter-topic", "dlq"])


@pytest.mark.parametrize(
    ("topic", "name", "read"),
    [
        ("^logs\\..*", "logs.shop", True),
        ("^logs\\..*", "logs", False),
        ("^logs\\..*", "logs-dlq", False),
        ("^logs\\..*", "xlogs.shop", False),
        ("logs", "logs", True),
        ("logs", "logs.shop", False),
    ],
)
def test_which_topics_a_subscription_reads(topic: str, name: str, read: bool) -> None:
    assert subscribes(topic, name) is read
