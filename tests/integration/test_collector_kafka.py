"""The collector process ships every line of rotating files to the real Kafka."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

from harness.collector_run import consume, new_topic, start_collector
from tests.unit.logfiles import append, cri_line, docker_container, docker_line

FILES = 20
LINES = 10_000
ROTATE_EVERY = 2_500


class Writer(threading.Thread):
    """Half Docker, half CRI containers, each rotated by rename every ROTATE_EVERY lines."""

    def __init__(self, root: Path, pace: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.pace = pace
        self.logs: list[tuple[Path, bool]] = []
        for n in range(FILES):
            if n % 2 == 0:
                self.logs.append((docker_container(root / "docker", f"{n:064x}"), True))
            else:
                folder = root / "log" / "pods" / f"ns_pod-{n}_uid-{n}" / "app"
                folder.mkdir(parents=True)
                self.logs.append((folder / "0.log", False))

    def run(self) -> None:
        step = 500
        for start in range(0, LINES, step):
            for n, (log, is_docker) in enumerate(self.logs):
                make = docker_line if is_docker else cri_line
                append(log, *(make(f"c{n} line {i}") for i in range(start, start + step)))
                if (start + step) % ROTATE_EVERY == 0:
                    os.rename(log, f"{log}.{start}" if is_docker else f"{log}.20261127-{start:06d}")
            time.sleep(self.pace)


def per_container(records: list[dict]) -> dict[str, list[int]]:
    lines: dict[str, list[int]] = defaultdict(list)
    for record in records:
        container, _, n = record["message"].partition(" line ")
        lines[container].append(int(n))
    return lines


def test_200k_lines_over_rotating_files_arrive_in_order(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = new_topic(kafka_bootstrap)
    writer = Writer(tmp_path, pace=0.05)
    collector = start_collector(tmp_path, kafka_bootstrap, topic)
    try:
        writer.start()
        writer.join()
        records = list(consume(kafka_bootstrap, topic, FILES * LINES, timeout=180))
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(60) == 0
    lines = per_container(records)
    assert len(records) == FILES * LINES
    assert sorted(lines) == sorted(f"c{n}" for n in range(FILES))
    for container, numbers in lines.items():
        assert numbers == list(range(LINES)), f"{container} out of order or incomplete"


def test_kill_9_five_times_loses_nothing_and_duplicates_keep_their_id(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = new_topic(kafka_bootstrap)
    writer = Writer(tmp_path, pace=0.1)
    writer.start()
    rng = random.Random(7)
    collector = start_collector(tmp_path, kafka_bootstrap, topic)
    for _ in range(5):
        time.sleep(rng.uniform(0.3, 1.5))
        collector.kill()
        collector.wait()
        collector = start_collector(tmp_path, kafka_bootstrap, topic)
    writer.join()
    try:
        records = list(consume(kafka_bootstrap, topic, FILES * LINES, timeout=180))
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(60) == 0
    ids: dict[str, set[str]] = defaultdict(set)
    for record in records:
        ids[record["message"]].add(record["event"]["id"])
    assert len(ids) == FILES * LINES, "lines missing from Kafka"
    assert all(len(v) == 1 for v in ids.values()), "a duplicate carries another event.id"
