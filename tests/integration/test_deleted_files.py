"""Deleted files held open while the broker is away: bounded, counted, said."""

from __future__ import annotations

import os
from pathlib import Path

from harness.wait import until
from tests.integration.broker_away import collector_with_broker_away
from tests.integration.test_collector_operations import metric
from tests.unit.logfiles import append, cri_line


def deleted_fds(pid: int) -> list[str]:
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)") and "/log/pods/" in target:
            held.append(target)
    return held


def test_deleted_files_past_the_bound_are_let_go_while_the_broker_is_away(
    tmp_path: Path,
) -> None:
    logs = []
    for n in range(4):
        folder = tmp_path / "log" / "pods" / f"shop_cart-{n}_uid-{n}" / "app"
        folder.mkdir(parents=True)
        logs.append(folder / "0.log")
        append(logs[-1], *(cri_line(f"cart {n} line {i} " + "x" * 150) for i in range(2000)))
    with collector_with_broker_away(tmp_path, "--max-deleted-files", "1") as (collector, metrics):

        def let_go() -> float:
            lines = [
                line
                for line in metrics().splitlines()
                if line.startswith('logferry_collector_files_let_go_total{reason="deleted_limit"}')
            ]
            return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

        # Reading stops once the producer's queue is full: the agent waits for room.
        until(lambda: metric(metrics(), "logferry_collector_read_lines_total") > 0, timeout=60)
        read = metric(metrics(), "logferry_collector_read_lines_total")
        for n, log in enumerate(logs):
            os.utime(log, (1_800_000_000 + n, 1_800_000_000 + n))
            log.unlink()
        until(
            lambda: (
                let_go() == 3
                and len(deleted_fds(collector.pid)) == 1
                and metric(metrics(), "logferry_collector_deleted_open_files") == 1
            ),
            timeout=60,
        )
        assert metric(metrics(), "logferry_collector_read_lines_total") == read, "still waiting"
        said = (tmp_path / "collector.log").read_text()
        for log in logs[:3]:
            assert f"let go of {log} with " in said
        assert f"let go of {logs[3]}" not in said
