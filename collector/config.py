"""The collector's settings: the table behind YAML, environment and flags, and their checks."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from collector import structured
from collector.budget import default_limit
from collector.multiline import MultilineRule, rule_for
from collector.ratelimit import Rate, rate
from collector.redact import Rule, user_rule
from collector.route import topic_template
from collector.schedule import READ_QUANTUM
from collector.sink import KAFKA_DEFAULTS, MESSAGE_MAX_BYTES
from logferry.settings import (
    Option,
    SettingError,
    boolean,
    key_value,
    load,
    port,
    positive_int,
    seconds,
    size,
)
from logferry.topics import topic_name


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise ValueError("must be more than zero seconds")
    return value


SHORTEST_MEMORY_LIMIT = 64 * 1024
"""With `--memory-limit 1` the readers' threshold was 0 bytes: reading never began, and
--once hung without a word."""

LONGEST_WAIT = 10.0
"""Seconds the loop may sleep between turns: the liveness probe calls it stalled at 30."""


def size_or_auto(text: str) -> int:
    """A size, at least SHORTEST_MEMORY_LIMIT, or 0 for the default: `auto` or 0."""
    if text.strip().lower() in ("auto", "0"):
        return 0
    value = size(text)
    if value < SHORTEST_MEMORY_LIMIT:
        raise ValueError(f"must be at least 64KiB, got {text!r}")
    return value


def wait_seconds(text: str) -> float:
    """A pause of the loop: at most LONGEST_WAIT (it neither beats nor sees a stop then)."""
    value = seconds(text)
    if value > LONGEST_WAIT:
        raise ValueError(f"must be at most {LONGEST_WAIT:.0f}s (liveness), got {text!r}")
    return value


def positive_wait_seconds(text: str) -> float:
    value = wait_seconds(text)
    if value == 0:
        raise ValueError("must be more than zero seconds")
    return value


def sink_spec(text: str) -> str:
    if text in ("kafka", "stdout") or (text.startswith("file:") and len(text) > 5):
        return text
    raise ValueError(f"must be kafka, stdout or file:PATH, got {text!r}")


def kubernetes_mode(text: str) -> str:
    if text in ("auto", "on", "off"):
        return text
    raise ValueError(f"must be on, off or auto, got {text!r}")


def multiline_spec(text: str) -> tuple[str, MultilineRule]:
    glob, rule = key_value(text)
    return glob, rule_for(rule)


RESERVED_TOP = (
    *("@timestamp", "message", "stream", "event", "log", "tags"),
    *("container", "kubernetes", "host", "input"),
)


def object_path(text: str) -> str:
    """Where the rest of a forwarded map goes: a dotted path clear of the contract's fields."""
    parts = text.split(".")
    if not all(parts) or parts[0] in RESERVED_TOP or parts[:2] in (["fluent"], ["fluent", "tag"]):
        raise ValueError(f"must be a dotted name outside the contract's fields, got {text!r}")
    return text


OPTIONS = (
    Option("docker_root", "/var/lib/docker/containers", "Docker json-file log folder"),
    Option("log_root", "/var/log", "folder holding pods/ and containers/"),
    Option("state_dir", "/var/lib/logferry", "folder for checkpoints", env="LOGFERRY_STATE_DIR"),
    Option("sink", "kafka", "where records go: kafka, stdout or file:PATH", sink_spec),
    Option("once", False, "read every file to its current end, flush, exit", boolean, switch=True),
    Option("bootstrap_servers", "", "Kafka bootstrap servers", env="KAFKA_BOOTSTRAP_SERVERS"),
    Option(
        "topic",
        "logs",
        "Kafka topic, or a template of record fields such as logs.{kubernetes.namespace}",
        topic_template,
        env="LOGFERRY_TOPIC",
    ),
    Option(
        "topic_fallback",
        "logs",
        "topic of records whose --topic template misses a field or makes no legal topic name",
        topic_name,
    ),
    Option(
        "kafka",
        {},
        "librdkafka setting KEY=VALUE, repeatable (TLS, SASL, compression...)",
    ),
    Option("include", [], "only files whose path matches one of these globs", many=True),
    Option("exclude", [], "skip files whose path matches one of these globs", many=True),
    Option(
        "multiline",
        [],
        "GLOB=RULE: join stack traces for containers whose namespace/pod/container matches "
        "GLOB; RULE is java, python, go or a first-line regex; repeatable",
        multiline_spec,
        many=True,
    ),
    Option("multiline_timeout", 1.0, "seconds a multi-line record waits for more", seconds),
    Option(
        "partial_timeout",
        60.0,
        "seconds a line the runtime split waits for its last piece before it is shipped "
        "without it (counted only while the collector is not behind on the container)",
        seconds,
    ),
    Option("max_record_bytes", 1024 * 1024, "records are cut (tag truncated) past this", size),
    Option("max_open_files", 1024, "most log files held open at once", positive_int),
    Option(
        "memory_limit",
        0,
        "bytes held between reading and delivery, past which reading pauses (256MiB...; "
        "default, or auto: half the cgroup memory limit, else 256MiB)",
        size_or_auto,
        env="LOGFERRY_MEMORY_LIMIT",
    ),
    Option(
        "max_deleted_files",
        64,
        "most deleted log files held open to be read to their end; past it the oldest is let go",
        positive_int,
    ),
    Option(
        "max_deleted_bytes",
        1024 * 1024 * 1024,
        "most bytes of deleted log files held open (disk space); past it the oldest is let go",
        size,
    ),
    Option(
        "metrics_port",
        2020,
        "port of /metrics, /healthz, /readyz (0: off)",
        port,
        env="LOGFERRY_METRICS_PORT",
    ),
    Option("node_name", "", "this node's name (host.name)", env="NODE_NAME"),
    Option("checkpoint_interval", 1.0, "seconds between checkpoint saves", seconds),
    Option(
        "scan_interval",
        0.5,
        "seconds between scans for new files when polling; with inotify, the shortest time "
        "between two scans that folder events ask for",
        seconds,
    ),
    Option(
        "inotify",
        True,
        "wake on inotify events (file written, folder changed) instead of polling every file "
        "every poll_interval; falls back to polling where inotify cannot be had or a file or "
        "folder cannot be watched (false: poll every file)",
        boolean,
    ),
    Option(
        "poll_interval",
        0.05,
        "seconds between looks at files followed by polling (no inotify, or past "
        "fs.inotify.max_user_watches), and at containers waiting on a timer",
        positive_wait_seconds,
    ),
    Option(
        "rescan_interval",
        10.0,
        "with inotify: seconds between safety rescans of the folders and every open file, "
        "for what no event reports (e.g. network filesystems)",
        positive_seconds,
    ),
    Option(
        "wake_delay",
        0.25,
        "seconds a wake-up on a write, or a turn that read its files to their ends, waits "
        "before reading again, so lines written meanwhile are read together: a turn costs "
        "about the same whatever its lines (0: at once)",
        wait_seconds,
    ),
    Option(
        "read_quantum",
        READ_QUANTUM,
        "most bytes read from one container per turn: every container with lines to read "
        "gets its turn before any gets a second",
        size,
    ),
    Option(
        "rate_limit",
        None,
        "per-pod read limit, 500/s (lines) or 1MiB/s (bytes); a throttled pod's lines wait in "
        "its files, none are dropped; per pod the annotation logferry.io/rate-limit "
        "(none: no limit)",
        rate,
        null="none",
    ),
    Option("shutdown_grace", 20.0, "seconds to deliver what is in flight at stop", seconds),
    Option(
        "delivery_timeout",
        30.0,
        "--once: seconds without any acknowledgement from the brokers after which the "
        "records still undelivered are given up (exit 1; read again by the next run)",
        positive_seconds,
    ),
    Option("log_level", "info", "debug, info, warning or error", env="LOGFERRY_LOG_LEVEL"),
    Option(
        "kubernetes",
        "auto",
        "pod metadata from the API: on, off, or auto (on in a cluster or with KUBECONFIG)",
        kubernetes_mode,
        env="LOGFERRY_KUBERNETES",
    ),
    Option(
        "kubeconfig",
        "",
        "kubeconfig file (default: KUBECONFIG, then in-cluster, then ~/.kube/config)",
    ),
    Option(
        "metadata_wait",
        2.0,
        "seconds a new container's records wait for its pod, counted from when its files were "
        "found or the API first answered, whichever is later",
        seconds,
    ),
    Option(
        "metadata_sync_wait",
        30.0,
        "seconds a container's records wait for the API's first answer (its first lists of "
        "pods and namespaces) before they go without pod metadata; an API that fails or "
        "refuses answers at once",
        seconds,
    ),
    Option(
        "metadata_grace", 60.0, "seconds a deleted pod's metadata is kept for late lines", seconds
    ),
    Option(
        "annotations",
        [],
        "only pod annotations matching these globs go into records (default: all)",
        many=True,
    ),
    Option(
        "parser",
        "auto",
        "structured logs: auto (JSON objects), json, logfmt or none; per pod the annotation "
        "logferry.io/parser[.<container>]",
        structured.mode,
        null="none",
    ),
    Option("parse_max_chars", 64 * 1024, "longest text parsed, in characters", positive_int),
    Option("parse_max_depth", 10, "deepest nesting parsed (at most 20)", positive_int),
    Option("parse_max_fields", 500, "most keys in one parsed record", positive_int),
    Option(
        "redact",
        [],
        "NAME=REGEX: hide matches as [REDACTED:NAME] before records leave the node; "
        "repeatable (a flag or YAML list: the environment splits on commas)",
        user_rule,
        many=True,
    ),
    Option(
        "redact_builtin",
        True,
        "the built-in redaction rules: bearer tokens, passwords, AWS keys, private keys",
        boolean,
    ),
    Option("forward_port", 0, "Fluentd forward protocol port, TCP + UDP (0: off)", port),
    Option("forward_host", "0.0.0.0", "address the forward listener binds"),
    Option(
        "forward_shared_key",
        "",
        "shared key clients must prove in the forward handshake (empty: no handshake)",
        env="LOGFERRY_FORWARD_SHARED_KEY",
    ),
    Option("forward_max_frame_bytes", 16 * 1024 * 1024, "largest forward message", size),
    Option("forward_max_connections", 1024, "most forward connections at once", positive_int),
    Option("forward_idle_timeout", 3600.0, "seconds a silent forward client is kept", seconds),
    Option(
        "forward_object",
        "fluent.record",
        "object holding a forwarded map's fields other than message/log",
        object_path,
    ),
)


@dataclass(frozen=True)
class Config:
    docker_root: str
    log_root: str
    state_dir: str
    sink: str
    once: bool
    bootstrap_servers: str
    topic: str
    topic_fallback: str
    kafka: dict[str, Any]
    include: list[str]
    exclude: list[str]
    multiline: list[tuple[str, MultilineRule]]
    multiline_timeout: float
    partial_timeout: float
    max_record_bytes: int
    max_open_files: int
    memory_limit: int
    max_deleted_files: int
    max_deleted_bytes: int
    metrics_port: int
    node_name: str
    checkpoint_interval: float
    scan_interval: float
    inotify: bool
    poll_interval: float
    rescan_interval: float
    wake_delay: float
    read_quantum: int
    rate_limit: Rate | None
    shutdown_grace: float
    delivery_timeout: float
    log_level: str
    kubernetes: str
    kubeconfig: str
    metadata_wait: float
    metadata_sync_wait: float
    metadata_grace: float
    annotations: list[str]
    parser: str
    parse_max_chars: int
    parse_max_depth: int
    parse_max_fields: int
    redact: list[Rule]
    redact_builtin: bool
    forward_port: int
    forward_host: str
    forward_shared_key: str
    forward_max_frame_bytes: int
    forward_max_connections: int
    forward_idle_timeout: float
    forward_object: str

    def wants_kubernetes(self) -> bool:
        if self.kubernetes != "auto":
            return self.kubernetes == "on"
        return bool(
            self.kubeconfig
            or os.environ.get("KUBERNETES_SERVICE_HOST")
            or os.environ.get("KUBECONFIG")
        )


def parse(argv: Sequence[str] | None = None) -> Config:
    values = load("python -m collector", "logferry node agent", OPTIONS, argv)
    if values["sink"] == "kafka" and not values["bootstrap_servers"]:
        raise SettingError(
            "setting bootstrap_servers: needed for the kafka sink "
            "(--bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS)"
        )
    if values["log_level"].lower() not in ("debug", "info", "warning", "error"):
        raise SettingError(f"setting log_level: unknown level {values['log_level']!r}")
    if not values["memory_limit"]:
        values["memory_limit"] = default_limit()
    try:
        structured.Limits(
            values["parse_max_chars"], values["parse_max_depth"], values["parse_max_fields"]
        )
    except ValueError as exc:
        raise SettingError(f"setting parse_max_depth: {exc}") from exc
    if not values["node_name"]:
        values["node_name"] = socket.gethostname()
    if values["bootstrap_servers"]:
        # The setting named for it wins over the same key in the kafka map: the file's map
        # must not beat KAFKA_BOOTSTRAP_SERVERS or the flag (file, environment, flags).
        values["kafka"] = {**values["kafka"], "bootstrap.servers": values["bootstrap_servers"]}
    checkpoint_safe(values["kafka"])
    queue_fits_a_record(values["kafka"])
    return Config(**values)


def queue_fits_a_record(kafka: dict[str, Any]) -> None:
    """librdkafka refuses a record larger than its whole queue as if the queue were full:
    it would wait for room that never comes."""
    try:
        settings = {**KAFKA_DEFAULTS, **kafka}
        queue = int(settings["queue.buffering.max.kbytes"]) * 1024
        record = int(settings.get("message.max.bytes", MESSAGE_MAX_BYTES))
    except ValueError as exc:
        raise SettingError(f"setting kafka: {exc}") from exc
    if queue <= record:
        raise SettingError(
            f"setting kafka: queue.buffering.max.kbytes={queue // 1024} holds no record of "
            f"message.max.bytes={record}: a record that size would wait for room for ever"
        )


def checkpoint_safe(kafka: dict[str, Any]) -> None:
    """Refuses producer settings under which an acknowledged batch could still lose records.

    A file's checkpoint advances once every record of a batch is reported delivered. That
    means the records are kept only when each report means every in-sync replica holds the
    record, in order and once (acks=all, idempotence, a key-based partitioner keeping a
    batch on one partition), and no record is given up on while the brokers are away (no
    message timeout: --once gives up after --delivery-timeout instead).
    """
    given = {str(k).strip(): str(v).strip().lower() for k, v in kafka.items()}
    why = "checkpoints advance on the records' delivery reports"
    # no and off too (YAML 1.1's words, quoted or in a flag): librdkafka would refuse
    # their spelling, hiding that idempotence cannot be turned off at all.
    if given.get("enable.idempotence", "true") in ("false", "f", "0", "no", "off"):
        raise SettingError(
            f"setting kafka: enable.idempotence=false is refused: {why}, which speaks for "
            "the records before it only when idempotence keeps them in order without gaps"
        )
    for key in ("acks", "request.required.acks"):
        if given.get(key, "all") not in ("all", "-1"):
            raise SettingError(
                f"setting kafka: {key}={given[key]} is refused: {why}, which must mean "
                "that every in-sync replica holds the batch (acks=all)"
            )
    for key in ("message.timeout.ms", "delivery.timeout.ms"):
        if given.get(key, "0") != "0":
            raise SettingError(
                f"setting kafka: {key}={given[key]} is refused: {why}, and a record before it "
                "that times out is lost without a report (records wait for the brokers as "
                "long as they are away; --once gives up after --delivery-timeout instead)"
            )
    if given.get("partitioner") == "random":
        raise SettingError(
            f"setting kafka: partitioner=random is refused: {why}, which speaks for the "
            "records before it only when the batch's key keeps them on one partition"
        )
