"""The producer's queue is a bound of its own: when it is full, reading waits, and the
metrics say how often that happened.

The broker is an address nobody listens on, so nothing leaves the queue.
"""

from __future__ import annotations

import signal
import urllib.error
from pathlib import Path

from harness.collector_run import start_collector
from harness.wait import until
from tests.integration.test_collector_operations import free_port, get, metric
from tests.unit.logfiles import append, cri_line


def test_a_full_producer_queue_pauses_reading_and_is_counted(tmp_path: Path) -> None:
    folder = tmp_path / "log" / "pods" / "shop_cart_uid-1" / "app"
    folder.mkdir(parents=True)
    append(folder / "0.log", *(cri_line(f"cart line {i} " + "x" * 150) for i in range(3000)))
    port = free_port()
    collector = start_collector(
        tmp_path,
        f"127.0.0.1:{free_port()}",
        "logs",
        "--metrics-port",
        str(port),
        "--shutdown-grace",
        "1",
        "--kafka",
        "queue.buffering.max.messages=100",
    )

    def metrics() -> str:
        try:
            status, text = get(port, "/metrics")
        except urllib.error.URLError:
            return ""  # not listening yet
        return text if status == 200 else ""

    try:
        full = until(
            lambda: metric(metrics(), "logferry_collector_producer_queue_full_total"), timeout=60
        )
        assert full >= 1
        assert metric(metrics(), "logferry_collector_records_produced_total") < 3000
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(60)
        finally:
            if collector.poll() is None:
                collector.kill()
