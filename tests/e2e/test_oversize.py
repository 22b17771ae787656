"""A line longer than max_record_bytes reaches Kafka cut and tagged, never silently dropped.

Kafka brokers refuse messages over `message.max.bytes` (1 MB by default, after compression).
The collector cuts records at `max_record_bytes` (1 MiB by default) so that they fit; a line
of text that does not compress -- random ids, base64 -- must still arrive, cut, tagged
`truncated`, and the lines after it too.
"""

from __future__ import annotations

import random
import signal
import string
from pathlib import Path

import pytest

from harness.collector_run import consume, new_topic, start_collector
from harness.nodewriter import docker_json, docker_pieces, stamp_ns
from tests.unit.logfiles import docker_container

pytestmark = pytest.mark.e2e


def test_a_line_over_max_record_bytes_arrives_cut_not_lost(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    rng = random.Random(5)
    alphabet = string.ascii_letters + string.digits + "+/"
    big = "".join(rng.choice(alphabet) for _ in range(3 * 1024 * 1024))
    log = docker_container(tmp_path / "docker", "b" * 64, pod="export-1", ns="batch")
    lines = [docker_json("before\n", "stdout", stamp_ns(1_795_000_000_000_000_000))]
    pieces, _ = docker_pieces(big)
    lines += [docker_json(p, "stdout", stamp_ns(1_795_000_001_000_000_000)) for p in pieces]
    lines.append(docker_json("after\n", "stdout", stamp_ns(1_795_000_002_000_000_000)))
    log.write_bytes(b"".join(lines))
    topic = new_topic(kafka_bootstrap, partitions=1)
    collector = start_collector(tmp_path, kafka_bootstrap, topic, "--kubernetes", "off")
    try:
        records = list(consume(kafka_bootstrap, topic, 3, timeout=25))
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(60) == 0
    messages = [r["message"] for r in records]
    assert len(records) == 3, (
        f"{len(records)} records arrived: {[m[:20] for m in messages]}; "
        + (tmp_path / "collector.log").read_text()[-2000:]
    )
    before, cut, after = records
    assert (before["message"], after["message"]) == ("before", "after")
    assert cut["tags"] == ["truncated"]
    assert big.startswith(cut["message"])


@pytest.mark.parametrize("kind", ["docker", "cri"])
def test_one_physical_3_mb_line_arrives_as_one_record_with_its_time_and_stream(
    tmp_path: Path, kafka_bootstrap: str, kind: str
) -> None:
    """Not split by the runtime (a writer that does not cut at 16 KiB): seen on main as a
    cut record, ~1 MiB in no record, and a parse_error piece with the ingest time."""
    rng = random.Random(6)
    alphabet = string.ascii_letters + string.digits + "+/"
    big = "".join(rng.choice(alphabet) for _ in range(3 * 1024 * 1024))
    first, second, third = (stamp_ns(1_795_000_000_000_000_000 + n) for n in range(3))
    if kind == "docker":
        log = docker_container(tmp_path / "docker", "c" * 64, pod="export-2", ns="batch")
        lines = [
            docker_json("before\n", "stdout", first),
            docker_json(big + "\n", "stderr", second),
            docker_json("after\n", "stdout", third),
        ]
    else:
        log = tmp_path / "log" / "pods" / "batch_export-3_0f1e2d3c" / "app" / "0.log"
        log.parent.mkdir(parents=True)
        lines = [
            f"{first} stdout F before\n".encode(),
            f"{second} stderr F {big}\n".encode(),
            f"{third} stdout F after\n".encode(),
        ]
    log.write_bytes(b"".join(lines))
    topic = new_topic(kafka_bootstrap, partitions=1)
    collector = start_collector(tmp_path, kafka_bootstrap, topic, "--kubernetes", "off")
    try:
        records = list(consume(kafka_bootstrap, topic, 3, timeout=25))
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(60) == 0
    summary = [(r["@timestamp"], r["stream"], r["message"][:6], r.get("tags")) for r in records]
    assert summary == [
        (first, "stdout", "before", None),
        (second, "stderr", big[:6], ["truncated"]),
        (third, "stdout", "after", None),
    ], (tmp_path / "collector.log").read_text()[-2000:]
    assert big.startswith(records[1]["message"])
    assert len(records[1]["message"]) > 900_000
