"""The pipeline's settings: one table behind YAML, environment and flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from collector.settings import Option, SettingError, load, port, positive_int, seconds
from pipeline.documents import IndexName


def some_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise ValueError("must be more than zero seconds")
    return value


def url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, got {shown(text)!r}")
    return text.rstrip("/")


def shown(address: str) -> str:
    """The URL without user and password, for logs and error messages."""
    parts = urlsplit(address)
    if parts.username is None and parts.password is None:
        return address
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=f"***@{netloc}"))


def index_name(text: str) -> str:
    IndexName(text)
    return text


OPTIONS = (
    Option("bootstrap_servers", "", "Kafka bootstrap servers", env="KAFKA_BOOTSTRAP_SERVERS"),
    Option("topic", "logs", "Kafka topic to read", env="LOGFERRY_TOPIC"),
    Option("group", "logferry-pipeline", "Kafka consumer group"),
    Option("dead_letter_topic", "logs.dlq", "topic for documents Elasticsearch refuses"),
    Option("kafka", {}, "librdkafka setting KEY=VALUE for consumer and producer, repeatable"),
    Option("elasticsearch_url", "", "Elasticsearch URL", url, env="ELASTICSEARCH_URL"),
    Option("elasticsearch_api_key", "", "API key", env="ELASTICSEARCH_API_KEY"),
    Option("elasticsearch_username", "", "basic auth user", env="ELASTICSEARCH_USERNAME"),
    Option("elasticsearch_password", "", "basic auth password", env="ELASTICSEARCH_PASSWORD"),
    Option(
        "index",
        "logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}",
        "index name from record fields; {@timestamp:...} takes %Y %m %d",
        index_name,
    ),
    Option("bulk_bytes", 5_000_000, "bulk request size in bytes", positive_int),
    Option("flush_interval", 1.0, "seconds a document waits at most before its bulk", some_seconds),
    Option("bulks_in_flight", 2, "bulk requests sent before the oldest is answered", positive_int),
    Option("max_backoff", 30.0, "longest wait between retries, seconds", some_seconds),
    Option(
        "stop_grace",
        10.0,
        "seconds a shutdown waits for dead letters still unacknowledged (then uncommitted)",
        some_seconds,
    ),
    Option("metrics_port", 2021, "port of /metrics, /healthz, /readyz (0: off)", port),
    Option("kibana", "", "setup: also import the dashboards into this Kibana URL", url),
    Option("log_level", "info", "debug, info, warning or error", env="LOGFERRY_LOG_LEVEL"),
)


@dataclass(frozen=True)
class Config:
    command: str
    bootstrap_servers: str
    topic: str
    group: str
    dead_letter_topic: str
    kafka: dict[str, Any]
    elasticsearch_url: str
    elasticsearch_api_key: str
    elasticsearch_username: str
    elasticsearch_password: str
    index: str
    bulk_bytes: int
    flush_interval: float
    bulks_in_flight: int
    max_backoff: float
    stop_grace: float
    metrics_port: int
    kibana: str
    log_level: str


def parse(argv: Sequence[str]) -> Config:
    if not argv or argv[0] not in ("run", "setup"):
        raise SettingError("command: give `run` (index from Kafka) or `setup` (install templates)")
    command = argv[0]
    values = load(f"python -m pipeline {command}", "logferry indexer", OPTIONS, argv[1:])
    if not values["elasticsearch_url"]:
        raise SettingError(
            "setting elasticsearch_url: needed (--elasticsearch-url or ELASTICSEARCH_URL)"
        )
    if command == "run" and not values["bootstrap_servers"]:
        raise SettingError(
            "setting bootstrap_servers: needed (--bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS)"
        )
    if values["log_level"].lower() not in ("debug", "info", "warning", "error"):
        raise SettingError(f"setting log_level: unknown level {values['log_level']!r}")
    return Config(command=command, **values)
