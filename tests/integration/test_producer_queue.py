"""The producer's queue is a bound of its own: when it is full, reading waits, and the
metrics say how often that happened."""

from __future__ import annotations

from pathlib import Path

from harness.wait import until
from tests.integration.broker_away import collector_with_broker_away
from tests.integration.test_collector_operations import metric
from tests.unit.logfiles import append, cri_line


def test_a_full_producer_queue_pauses_reading_and_is_counted(tmp_path: Path) -> None:
    folder = tmp_path / "log" / "pods" / "shop_cart_uid-1" / "app"
    folder.mkdir(parents=True)
    append(folder / "0.log", *(cri_line(f"cart line {i} " + "x" * 150) for i in range(3000)))
    with collector_with_broker_away(tmp_path) as (_, metrics):
        full = until(
            lambda: metric(metrics(), "logferry_collector_producer_queue_full_total"), timeout=60
        )
        assert full >= 1
        assert metric(metrics(), "logferry_collector_records_produced_total") < 3000
