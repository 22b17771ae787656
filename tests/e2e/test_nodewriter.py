"""The node writer against the collector alone (file sink, no servers): ground truth holds.

A quick check of the writer itself and of everything before Kafka: Docker and CRI files
rotating as the runtimes do, 16 KiB pieces, traces, non-ASCII, read by the real collector
process following the files, compared with the writer's ground truth record by record.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from harness.collector_run import collector_process
from harness.nodewriter import NodeWriter, Rotation, default_node, read_truth

pytestmark = pytest.mark.e2e


def collector_to_file(tmp: Path, out: Path, *flags: str) -> subprocess.Popen[bytes]:
    return collector_process(tmp, "--sink", f"file:{out}", "--kubernetes", "off", *flags)


def test_collector_reads_exactly_the_ground_truth_while_files_rotate(tmp_path: Path) -> None:
    specs = default_node(12, seed=3)
    writer = NodeWriter(
        tmp_path,
        specs,
        rate=2000,
        docker_rotation=Rotation(max_bytes=256 * 1024, max_files=5),
        cri_rotation=Rotation(max_bytes=None, every=2.0, max_files=4),
        truth=tmp_path / "truth.jsonl",
        seed=3,
    )
    out = tmp_path / "records.jsonl"
    collector = collector_to_file(tmp_path, out, *writer.multiline_flags(annotated=True))
    writer.run(duration=8)
    writer.close()
    time.sleep(3)  # the last traces wait for the multiline timeout
    collector.send_signal(signal.SIGTERM)
    assert collector.wait(60) == 0
    truth = list(read_truth(tmp_path / "truth.jsonl"))
    assert truth == writer.records
    assert writer.rotations("docker") > 0
    assert writer.rotations("cri") > 0
    want = Counter((r.container, r.stream, r.message) for r in truth)
    got: Counter[tuple[str, str, str]] = Counter()
    for line in out.read_bytes().splitlines():
        record = orjson.loads(line)
        k8s = record["kubernetes"]
        key = f"{k8s['namespace']}/{k8s['pod']['name']}/{k8s['container']['name']}"
        # The text as written: event.original when the message came from a parsed field.
        text = record.get("event", {}).get("original", record["message"])
        got[(key, record["stream"], text)] += 1
    lost, extra = want - got, got - want
    differences = lost + extra
    assert not differences, (
        f"{sum(lost.values())} lost: {dict(Counter(k[0] for k in lost.elements()))}, "
        f"{sum(extra.values())} extra: {dict(Counter(k[0] for k in extra.elements()))}; "
        f"first lost: {[repr(k)[:200] for k in list(lost)[:2]]}; "
        f"first extra: {[repr(k)[:200] for k in list(extra)[:2]]}"
    )
