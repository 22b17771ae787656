"""A collector whose broker is away: an address nobody listens on, as the collector sees a
broker that is down, so nothing leaves its producer's queue."""

from __future__ import annotations

import signal
import subprocess
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.collector_run import start_collector
from tests.integration.test_collector_operations import free_port, get

QUEUE = 100
"""The producer's queue in messages: small, so that it fills from a few lines."""


@contextmanager
def collector_with_broker_away(
    tmp: Path, *flags: str
) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[], str]]]:
    """The collector over the node under `tmp` with `flags`, its broker away and a queue of
    QUEUE messages; yields the process and a reader of its /metrics ("" until it listens).
    SIGTERM at the end (shutdown grace 1 s), SIGKILL if it has not gone after 60 s."""
    port = free_port()
    collector = start_collector(
        tmp,
        f"127.0.0.1:{free_port()}",
        "logs",
        "--metrics-port",
        str(port),
        "--shutdown-grace",
        "1",
        "--kafka",
        f"queue.buffering.max.messages={QUEUE}",
        *flags,
    )

    def metrics() -> str:
        try:
            status, text = get(port, "/metrics")
        except urllib.error.URLError:
            return ""  # not listening yet
        return text if status == 200 else ""

    try:
        yield collector, metrics
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(60)
        finally:
            if collector.poll() is None:
                collector.kill()
