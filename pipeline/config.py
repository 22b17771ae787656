"""The pipeline's settings: one table behind YAML, environment and flags."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from logferry.settings import (
    Option,
    SettingError,
    boolean,
    load,
    port,
    positive_int,
    seconds,
    size,
    whole_number,
)
from logferry.topics import topic_name
from pipeline.backend import AUTO, backend_name
from pipeline.documents import IndexName


def some_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise ValueError("must be more than zero seconds")
    return value


def refresh_seconds(text: str) -> float:
    """librdkafka's topic.metadata.refresh.interval.ms: up to an hour."""
    value = some_seconds(text)
    if value > 3600:
        raise ValueError(f"must be at most 1h, got {text!r}")
    return value


def url(text: str) -> str:
    """One URL, or a cluster's nodes as comma-separated URLs (requests go round them, and
    past one that does not answer)."""
    nodes = [node.strip().rstrip("/") for node in text.split(",")]
    for node in nodes:
        if not node.startswith(("http://", "https://")):
            raise ValueError(f"must be http:// or https:// URLs, got {masked(node)!r}")
        try:
            parts = urlsplit(node)
            parts.port  # noqa: B018 -- read to have a port outside 1-65535 refused here
        except ValueError:
            parts = None
        if parts is None or not parts.hostname:
            # A comma in a password splits the URL in two: a piece of it may be all secret.
            seen = masked(node) if "@" in node or "@" not in text else "(not shown)"
            raise ValueError(f"must be URLs with a host and a port 1-65535, got {seen!r}")
    return ",".join(nodes)


def masked(address: str) -> str:
    """An address, perhaps not even a URL, with what stands before an @ hidden."""
    return re.sub(r"//[^/]*@", "//***@", address)


def shown(address: str) -> str:
    """The URL (or URLs, comma-separated) without user and password, for logs and messages."""
    if "," in address:
        return ",".join(shown(node) for node in address.split(","))
    parts = urlsplit(address)
    if parts.username is None and parts.password is None:
        return address
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=f"***@{netloc}"))


def pem_bundle(text: str) -> str:
    """A readable file holding PEM certificates: any other (a DER file, a key) was taken,
    and every request then failed as if Elasticsearch could not be reached."""
    try:
        with open(text, "rb") as f:
            head = f.read(1024 * 1024)
    except OSError as exc:
        raise ValueError(f"cannot read {text}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise ValueError(f"{text} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return text


def replicas(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {text}")
    return value


REFRESH = re.compile(r"-1|[1-9]\d*(ms|s|m|h)")


def refresh_interval(text: str) -> str:
    """Kept as written, for the server: a duration with its unit, or -1 (no refresh)."""
    text = text.strip()
    if not REFRESH.fullmatch(text):
        raise ValueError(
            f"must be a whole duration with its unit (1s, 500ms, 1m) or -1, got {text!r}"
        )
    return text


def subscription(text: str) -> str:
    """A topic name, or (starting with ^) a regular expression of topic names."""
    if text.startswith("^"):
        try:
            re.compile(text)
        except re.error as exc:
            raise ValueError(f"is not a regular expression ({exc}), got {text!r}") from None
        return text
    return topic_name(text)


def group_name(text: str) -> str:
    """A consumer group: librdkafka aborts the process on an empty one."""
    if not text.strip() or text != text.strip():
        raise ValueError(f"must be a name without spaces around it, got {text!r}")
    return text


OWNED_KAFKA = {
    "bootstrap.servers": "bootstrap_servers",
    "metadata.broker.list": "bootstrap_servers",
    "group.id": "group",
    "enable.auto.commit": "offsets are committed once indexed",
    "enable.auto.offset.store": "offsets are committed once indexed",
    "enable.idempotence": "dead letters are written once, in order",
    "acks": "dead letters are acknowledged by every in-sync replica",
    "request.required.acks": "dead letters are acknowledged by every in-sync replica",
}
"""Kafka settings the pipeline sets itself, and the setting or reason for it. librdkafka's
other names for them too (metadata.broker.list is bootstrap.servers, request.required.acks
is acks): under one, the pipeline's value replaced the user's, or the user's the pipeline's."""


def kafka_settings(kafka: dict[str, Any]) -> dict[str, Any]:
    """The kafka map, without a key the pipeline owns: given there, it was silently
    replaced (a group.id, a bootstrap.servers beside the settings named for them)."""
    for key in kafka:
        owner = OWNED_KAFKA.get(key.strip())
        if owner is not None:
            raise SettingError(f"setting kafka: {key} is the pipeline's own ({owner})")
    return kafka


def subscribes(topic: str, name: str) -> bool:
    """Whether the subscription `topic` (a name, or a ^pattern) takes the topic `name`."""
    if topic.startswith("^"):
        return re.search(topic, name) is not None
    return topic == name


def index_name(text: str) -> str:
    IndexName(text)
    return text


RUN = ("run",)
SETUP = ("setup",)
RETENTION = ("retention",)

OPTIONS = (
    Option(
        "bootstrap_servers", "", "Kafka bootstrap servers", env="KAFKA_BOOTSTRAP_SERVERS",
        commands=RUN,
    ),
    Option(
        "topic", "logs",
        "Kafka topic to read, or with a leading ^ a regular expression of topics to read "
        "(^logs\\..* reads every logs.<namespace> topic, new ones included)",
        subscription, env="LOGFERRY_TOPIC", commands=RUN,
    ),
    Option(
        "metadata_refresh", 5.0,
        "how often the topics are listed again: a new topic a ^pattern takes is read within "
        "this (5s, 1m...)",
        refresh_seconds, commands=RUN,
    ),
    Option("group", "logferry-pipeline", "Kafka consumer group", group_name, commands=RUN),
    Option(
        "dead_letter_topic",
        "logs.dlq",
        "topic for documents Elasticsearch refuses",
        topic_name,
        commands=RUN,
    ),
    Option(
        "kafka", {}, "librdkafka setting KEY=VALUE for consumer and producer, repeatable",
        commands=RUN,
    ),
    Option(
        "elasticsearch_url", "", "Elasticsearch URL, or a cluster's node URLs comma-separated",
        url, env="ELASTICSEARCH_URL",
    ),
    Option(
        "backend", AUTO,
        "auto (the server's answer to GET /), elasticsearch (8 or 9) or opensearch",
        backend_name, env="LOGFERRY_BACKEND",
    ),
    Option("elasticsearch_api_key", "", "API key", env="ELASTICSEARCH_API_KEY"),
    Option("elasticsearch_username", "", "basic auth user", env="ELASTICSEARCH_USERNAME"),
    Option("elasticsearch_password", "", "basic auth password", env="ELASTICSEARCH_PASSWORD"),
    Option(
        "elasticsearch_ca_certs", "", "CA bundle (PEM) for an https:// Elasticsearch",
        pem_bundle, env="ELASTICSEARCH_CA_CERTS",
    ),
    Option(
        "index",
        "logferry-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}",
        "index name from record fields; {@timestamp:...} takes %Y %m %d",
        index_name,
        commands=(*RUN, *RETENTION),
    ),
    Option("bulk_bytes", 5_000_000, "bulk request size (5MB, 512KiB...)", size, commands=RUN),
    Option(
        "flush_interval", 1.0, "longest wait of a document before its bulk (1s, 500ms...)",
        some_seconds, commands=RUN,
    ),
    Option(
        "bulks_in_flight", 2, "bulk requests sent before the oldest is answered", positive_int,
        commands=RUN,
    ),
    Option(
        "max_backoff", 30.0, "longest wait between retries (30s, 2m...)", some_seconds,
        commands=RUN,
    ),
    Option(
        "metrics_port", 2021, "port of /metrics, /healthz, /readyz (0: off)", port,
        env="LOGFERRY_METRICS_PORT", commands=RUN,
    ),
    Option("shards", 1, "primary shards of each new index", positive_int, commands=SETUP),
    Option(
        "replicas", 1, "replicas of each shard of each new index (0 on a one-node cluster)",
        replicas, commands=SETUP,
    ),
    Option(
        "refresh_interval", "1s", "how soon new documents are searchable (1s, 30s; -1: off)",
        refresh_interval, commands=SETUP,
    ),
    Option("kibana", "", "also import the dashboards into this Kibana URL", url, commands=SETUP),
    Option(
        "keep_days", 0, "retention: keep indices whose day is within this many days", positive_int,
        env="LOGFERRY_KEEP_DAYS", commands=RETENTION,
    ),
    Option(
        "apply", False, "retention: delete (without it, only say what would go)", boolean,
        switch=True, commands=RETENTION,
    ),
    Option(
        "stop_grace", 10.0,
        "how long a shutdown waits for dead letters still unacknowledged (then uncommitted)",
        some_seconds, commands=RUN,
    ),
    Option("log_level", "info", "debug, info, warning or error", env="LOGFERRY_LOG_LEVEL"),
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    command: str
    bootstrap_servers: str
    topic: str
    metadata_refresh: float
    group: str
    dead_letter_topic: str
    kafka: dict[str, Any]
    elasticsearch_url: str
    backend: str
    elasticsearch_api_key: str
    elasticsearch_username: str
    elasticsearch_password: str
    elasticsearch_ca_certs: str
    index: str
    bulk_bytes: int
    flush_interval: float
    bulks_in_flight: int
    max_backoff: float
    stop_grace: float
    metrics_port: int
    shards: int
    replicas: int
    refresh_interval: str
    kibana: str
    keep_days: int
    apply: bool
    log_level: str


COMMANDS = {
    "run": "index records from Kafka",
    "setup": "install templates, dashboards",
    "retention": "delete indices older than the days kept",
}


def parse(argv: Sequence[str]) -> Config:
    if not argv or argv[0] not in COMMANDS:
        raise SettingError(
            "command: give `run` (index from Kafka), `setup` (install templates) or "
            "`retention` (delete old indices) (`python -m pipeline --help` lists them)"
        )
    command = argv[0]
    description = COMMANDS
    values = load(f"python -m pipeline {command}", description[command], OPTIONS, argv[1:], command)
    if not values["elasticsearch_url"]:
        raise SettingError(
            "setting elasticsearch_url: needed (--elasticsearch-url or ELASTICSEARCH_URL)"
        )
    if command == "retention" and not values["keep_days"]:
        raise SettingError(
            "setting keep_days: needed (--keep-days N or LOGFERRY_KEEP_DAYS), the days kept"
        )
    if command == "run" and not values["bootstrap_servers"]:
        raise SettingError(
            "setting bootstrap_servers: needed (--bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS)"
        )
    if values["log_level"].lower() not in ("debug", "info", "warning", "error"):
        raise SettingError(f"setting log_level: unknown level {values['log_level']!r}")
    if command == "run" and subscribes(values["topic"], values["dead_letter_topic"]):
        raise SettingError(
            f"setting dead_letter_topic: {values['dead_letter_topic']} is read by --topic "
            f"{values['topic']}, so every dead letter would be read back and refused again; "
            "name one outside it (--dead-letter-topic logs-dlq beside --topic '^logs\\..*')"
        )
    values["kafka"] = kafka_settings(values["kafka"])
    if values["elasticsearch_ca_certs"] and "http://" in values["elasticsearch_url"]:
        raise SettingError(
            "setting elasticsearch_ca_certs: given for an http:// Elasticsearch; TLS needs "
            f"https:// URLs, got {shown(values['elasticsearch_url'])}"
        )
    return Config(command=command, **values)
