"""Running the collector as a real process against the real broker, and reading back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]


def new_topic(
    bootstrap: str, partitions: int = 6, replication: int = 1, *, name: str | None = None
) -> str:
    """A fresh topic (or `name`); `replication` -1 takes the brokers' default (a cluster's:
    3 replicas, min.insync.replicas 2)."""
    topic = name or f"logs-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication)]
    )[topic].result(timeout=30)
    return topic


def collector_process(tmp: Path, *flags: str) -> subprocess.Popen[bytes]:
    """`python -m collector` over the node under `tmp`, its log in tmp/collector.log."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector",
            "--docker-root",
            str(tmp / "docker"),
            "--log-root",
            str(tmp / "log"),
            "--state-dir",
            str(tmp / "state"),
            "--metrics-port",
            "0",
            "--scan-interval",
            "0.2",
            *flags,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=open(tmp / "collector.log", "ab"),
    )


def start_collector(tmp: Path, bootstrap: str, topic: str, *flags: str) -> subprocess.Popen[bytes]:
    return collector_process(
        tmp,
        "--sink",
        "kafka",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--checkpoint-interval",
        "0.2",
        *flags,
    )


def consume(bootstrap: str, topic: str, expected: int, timeout: float) -> Iterator[dict[str, Any]]:
    """Every record in the topic, until `expected` distinct records came and nothing more
    arrives for 3 s. Distinct by `event.id`: a restarted collector resends what it had not
    seen acknowledged, and counting those copies would stop before the last lines arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    seen: set[Any] = set()
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=5000, timeout=0.5)
            if batch:
                quiet_since = time.monotonic()
            for message in batch:
                assert message.error() is None, message.error()
                record = orjson.loads(message.value())
                event = record.get("event")
                event_id = event.get("id") if isinstance(event, dict) else None
                seen.add(event_id or (message.partition(), message.offset()))
                yield record
            if len(seen) >= expected and time.monotonic() - quiet_since > 3:
                return
    finally:
        consumer.close()
