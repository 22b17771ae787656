"""How much is read a turn (`--read-quantum`) bounds what a read holds in memory: it must not
change the records. A node's mix (access logs, stack traces, JSON application logs, non-ASCII
text, lines over 16 KiB, Docker and CRI), read a whole 1 MiB at a time, by the default quantum
and 16 KiB at a time, one Java container grouping its traces: the same records.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import orjson
import pytest

from harness.nodewriter import NodeWriter, Rotation, Spec
from tests.unit.logfiles import ListSink, agent, drain

KINDS = ("access", "java", "python", "json", "unicode", "big")


def node(root: Path) -> None:
    """About 3 MB: each container's file spans several reads of the largest quantum."""
    specs = [
        Spec(
            "bench",
            f"{kind}-{n}-7d9f5-x2k4q",
            "app",
            runtime,
            kind,
            multiline=kind == "java" and runtime == "docker",
        )
        for n, (kind, runtime) in enumerate(
            (kind, runtime) for runtime in ("docker", "cri") for kind in KINDS
        )
    ]
    unrotated = Rotation(max_bytes=None)
    writer = NodeWriter(
        root,
        specs,
        docker_rotation=unrotated,
        cri_rotation=unrotated,
        emit=lambda _record: None,
        docker_links=False,
    )
    while writer.bytes_written < 3_000_000:
        writer.step(500)
    writer.finish()
    flags = writer.multiline_flags()
    assert flags, "the mix should group a container's traces"
    writer.close()
    (root / "flags").write_text("\n".join(flags))


def records(root: Path, *flags: str) -> Counter[bytes]:
    sink = ListSink()
    grouping = (root / "flags").read_text().splitlines()
    reader = agent(root, sink, "--kubernetes", "off", *grouping, *flags)
    drain(reader)
    reader.flush_held()
    # The event id and the path name the file, which is a copy in each run.
    return Counter(
        orjson.dumps({**record, "event": None, "log": {**record["log"], "file": None}})
        for record in sink.records
    )


@pytest.mark.parametrize("quantum", ["1MiB", "16KiB"])
def test_the_records_do_not_depend_on_how_much_is_read_a_turn(tmp_path: Path, quantum: str) -> None:
    written = tmp_path / "written"
    node(written)
    default = tmp_path / "default"
    other = tmp_path / quantum
    shutil.copytree(written, default)
    shutil.copytree(written, other)
    expected = records(default)
    assert any(len(orjson.loads(r)["message"]) > 16384 for r in expected)
    got = records(other, "--read-quantum", quantum)
    assert not expected - got, f"{sum((expected - got).values())} records missing"
    assert not got - expected, f"{sum((got - expected).values())} records not in the default's"
