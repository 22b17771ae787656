"""The end-to-end check "rotation every second at 5 MB/s" (seed 977288) once found one
record as two pieces on a loaded machine. Replayed here without servers and without
timing: the node writer's containers with that seed, size-based rotation, and the agent
reading at the worst moment, right after each rotation, before the runtime wrote the rest
of a line it split in pieces, with a join timeout of 0 (every turn is late).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from harness.nodewriter import Container, NodeWriter, Rotation, Spec
from tests.unit.logfiles import ListSink, agent, drain

SEED = 977288


def bulk_containers(count: int) -> list[Spec]:
    """As the end-to-end test's bulk node: 0.5-6 KiB lines, 2% of them over 16 KiB."""
    return [
        Spec("shop", f"bulk-{n}-5d8c7b-{n:05d}", "app", "docker" if n % 2 else "cri", "bulk")
        for n in range(count)
    ]


def test_seed_977288_rotating_between_pieces_gives_every_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rotation = Rotation(max_bytes=64 * 1024, max_files=5)
    writer = NodeWriter(
        tmp_path, bulk_containers(4), docker_rotation=rotation, cri_rotation=rotation, seed=SEED
    )
    sink = ListSink()
    reader = agent(tmp_path, sink, "--kubernetes", "off", "--multiline-timeout", "0")
    rotate = Container.rotate

    def rotate_then_read(self: Container) -> None:
        rotate(self)
        drain(reader, turns=2)

    monkeypatch.setattr(Container, "rotate", rotate_then_read)
    for _ in range(150):
        writer.step(20)
        drain(reader, turns=2)
    writer.finish()
    drain(reader)
    reader.flush_held()
    rotations = sum(c.rotations for c in writer.containers)
    assert rotations > 100
    assert any(len(t.message.encode()) > 16384 for t in writer.records)
    written = Counter((t.container, t.stream, t.message) for t in writer.records)
    shipped = Counter(
        (
            "/".join((k["namespace"], k["pod"]["name"], k["container"]["name"])),
            r["stream"],
            r["message"],
        )
        for r in sink.records
        for k in [r["kubernetes"]]
    )
    assert not written - shipped, f"{sum((written - shipped).values())} records lost"
    assert not shipped - written, f"{sum((shipped - written).values())} records not written"
