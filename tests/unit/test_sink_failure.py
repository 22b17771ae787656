"""What the Kafka sink makes of librdkafka's error reports: which ones end the process.

librdkafka raises a fatal error (e.g. the idempotent producer's lost sequence) only in
states a test broker cannot be brought into on demand, so the report is handed to the
sink's error callback as librdkafka would hand it; the authentication failure is tested
against a real broker in tests/e2e/test_secrets.py.
"""

from __future__ import annotations

from confluent_kafka import KafkaError

from collector.sink import KafkaSink


def sink_told() -> tuple[KafkaSink, list[str]]:
    sink = KafkaSink("logs", {"bootstrap.servers": "127.0.0.1:1"})
    told: list[str] = []
    sink.on_failure = told.append
    return sink, told


def test_a_fatal_error_fails_the_sink_once_with_the_reason() -> None:
    sink, told = sink_told()
    sink.on_error(KafkaError(KafkaError._FATAL, "producer fenced", fatal=True))
    sink.on_error(KafkaError(KafkaError._FATAL, "again", fatal=True))
    assert told == ["kafka fatal error: producer fenced"]
    assert sink.failure == told[0]


def test_an_authentication_failure_fails_the_sink() -> None:
    sink, told = sink_told()
    sink.on_error(KafkaError(KafkaError._AUTHENTICATION, "Invalid username or password"))
    assert told == ["kafka authentication failed: Invalid username or password"]


def test_a_broker_away_is_not_a_failure() -> None:
    sink, told = sink_told()
    sink.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    sink.on_error(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    assert told == []
    assert sink.failure is None
